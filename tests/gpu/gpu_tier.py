"""The GPU tier (tests/gpu): its modes and sizes, and the helpers its tests share.

The mode is chosen by ``PIT_DET_GPU_TESTS`` before pytest starts, because Triton chooses between
its compiler and its interpreter when it is first imported (``tests/conftest.py``):

* unset: the CPU suite's run, Triton interpreted; the tier is skipped, its reason says how to run it.
* ``1``: the tier on a CUDA GPU with the Triton kernel compiled (``make test-gpu``; ``tools/setup/gpu_check.py``
  runs it on offline GPU machines and clusters).
* ``dry-run``: the same tests and helpers on CPU at toy sizes, the Triton kernel in its interpreter and
  every GPU hidden (``tools/setup/gpu_check.py --dry-run``, ``tests/test_gpu_check.py``). It exercises the
  commands, the files they write and the judgements; what only a GPU's scale can show (a loss that falls
  over 100 iterations, AP above the untrained model's, bf16 training) each test names and leaves to the GPU.
"""

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from pit_det.benchmark.kernels import LEVELS_400x667, QUERIES_400x667, make_inputs
from pit_det_deploy.hardware import native_dtypes

ROOT = Path(__file__).resolve().parents[2]
MODE = 'PIT_DET_GPU_TESTS'
HOW = f'`make test-gpu` ({MODE}=1 python -m pytest tests/gpu) on a machine with a CUDA GPU'
TOY_CONFIG = 'configs/toy/deformable_detr_pit_s_toy.py'
CPU_ONLY = {'CUDA_VISIBLE_DEVICES': ''}


@dataclass(frozen=True)
class Tier:
    """The sizes of one mode.

    Args:
        dry_run: the CPU rehearsal.
        device: where the Triton kernel and the detector run ('cuda', or 'cpu' in the dry run).
        levels: (H, W) of the deformable-attention levels in the kernel tests.
        batch: images in the kernel tests.
        queries: queries of the kernel tests: the decoder's, and the encoder's (one per value token).
        heads, points, channels: of each deformable attention (every shipped config: 8, 4, 32).
        num_train, num_val: toy images; training runs ``epochs`` epochs of batch 4 (the toy config's).
        epochs: training epochs.
        precisions: training precisions; 'bf16' is mmengine's AmpOptimWrapper, which trains on GPUs only.
        bf16_inference: whether bf16 inference is tested (a CPU without bf16 instructions emulates it:
            minutes for the dry run's 4 images).
    """

    dry_run: bool
    device: str
    levels: Tuple[Tuple[int, int], ...]
    batch: int
    queries: Dict[str, int]
    num_train: int
    num_val: int
    epochs: int
    precisions: Tuple[str, ...]
    bf16_inference: bool = True
    heads: int = 8
    points: int = 4
    channels: int = 32

    @property
    def iterations(self) -> int:
        return self.epochs * math.ceil(self.num_train / 4)


# 100 iterations (loss 16.7 -> 11.6 on an NVIDIA H200), evaluated on 100 images.
GPU = Tier(
    dry_run=False,
    device='cuda',
    levels=LEVELS_400x667,
    batch=2,
    queries=QUERIES_400x667,
    num_train=400,
    num_val=100,
    epochs=1,
    precisions=('fp32', 'bf16'),
)
# The dry run: Triton's interpreter runs each program in Python, so one block of queries a head
# (32), 2 heads, 2 levels of 2 points.
DRY_LEVELS = ((4, 6), (2, 3))
DRY_RUN = Tier(
    dry_run=True,
    device='cpu',
    levels=DRY_LEVELS,
    batch=1,
    queries=dict(decoder=8, encoder=sum(h * w for h, w in DRY_LEVELS)),
    num_train=8,
    num_val=4,
    epochs=1,
    precisions=('fp32',),
    bf16_inference='bf16' in native_dtypes('cpu'),
    heads=2,
    points=2,
    channels=8,
)


def mode() -> str:
    return os.environ.get(MODE, '')


def current() -> Tier:
    return DRY_RUN if mode() == 'dry-run' else GPU


def skip_reason() -> Optional[str]:
    """Why the tier cannot run in this pytest process, or None."""
    interpreted = os.environ.get('TRITON_INTERPRET') == '1'
    if mode() == '':
        return f'the GPU tier runs on its own, with Triton compiled: {HOW}'
    if mode() == 'dry-run':
        return None if interpreted else f'{MODE}=dry-run runs Triton on CPU tensors: set TRITON_INTERPRET=1 too'
    if mode() != '1':
        return f'{MODE}={mode()!r}: 1 runs the GPU tier, dry-run its CPU rehearsal'
    if interpreted:
        return f'TRITON_INTERPRET=1 would run Triton in its interpreter: unset it for {MODE}=1'
    if not torch.cuda.is_available():
        return 'no CUDA GPU visible (torch.cuda.is_available() is False)'
    return None


def run_tool(args: Sequence, env: Optional[Dict[str, str]] = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python ARGS`` in the repository, in a fresh interpreter (a tool as a user runs it); with
    ``env`` added to this process's environment. Fails the test with the tool's output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]), **(env or {}))
    if current().dry_run:
        env.update(CPU_ONLY)  # the rehearsal is a CPU run wherever it runs
    proc = subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f'{args[0]} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}'
    return proc


# ---------------------------------------------------------------------------------------------
# The kernel


def msda_inputs(tier: Tier, queries: int, seed: int = 0) -> List[torch.Tensor]:
    """fp32 values, level shapes and starts, locations and weights of the tier's sizes, on CPU, every
    sample off bilinear sampling's kinks (:func:`pit_det.benchmark.kernels.make_inputs`)."""
    return make_inputs(tier.levels, tier.batch, queries, tier.heads, tier.points, tier.channels, seed=seed)


# ---------------------------------------------------------------------------------------------
# The toy detector


@dataclass
class Evaluation:
    """COCO metrics and detections (COCO result format) of one checkpoint on the toy val split."""

    metrics: Dict[str, float]
    detections: List[dict]


@dataclass
class TrainRun:
    """One training run of the toy config: where, its checkpoint, the loss of every iteration, COCO
    AP before training, and the validation after it."""

    work: Path
    checkpoint: Path
    losses: List[float]
    ap_before: float
    final: Evaluation


def amp_dtype(checkpoint: Path) -> Optional[str]:
    """The dtype that mmengine's AmpOptimWrapper trained ``checkpoint`` under, from what the run
    itself saved: the wrapper's ``loss_scaler`` state beside the optimizer's, and the config in the
    checkpoint's meta. None where the run trained without it (fp32)."""
    from mmengine.config import Config

    from pit_det.checkpoint import safe_torch_load

    ckpt = safe_torch_load(str(checkpoint))
    if 'loss_scaler' not in ckpt.get('optimizer', {}):
        return None
    optim_wrapper = Config.fromstring(ckpt['meta']['cfg'], '.py').optim_wrapper
    assert optim_wrapper.type == 'AmpOptimWrapper', f'{checkpoint}: loss scaler saved by {optim_wrapper.type}'
    return optim_wrapper.get('dtype') or 'float16'


def fp32_env(device: str) -> Dict[str, str]:
    """fp32 on a GPU with TF32 off (``NVIDIA_TF32_OVERRIDE=0``, read by cuBLAS and cuDNN): torch lets
    cuDNN convolutions (PiT's patch embedding and pooling) round their inputs to TF32's 10-bit mantissa
    by default, a 1e-3 noise that would hide the fp32 comparison with the CPU."""
    return {} if device == 'cpu' else {'NVIDIA_TF32_OVERRIDE': '0'}


def train(tier: Tier, data: Path, work: Path, precision: str) -> TrainRun:
    """tools/train.py on the toy config: ``tier.epochs`` epochs, every iteration's loss logged as it
    is (no smoothing window), validated before training and after it (detections written)."""
    amp = ['--amp', 'bfloat16'] if precision == 'bf16' else []
    run_tool(
        [
            'tools/train.py',
            TOY_CONFIG,
            '--work-dir',
            work,
            '--data-root',
            data,
            '--validate-first',
            '--cfg-options',
            f'train_cfg.max_epochs={tier.epochs}',
            f'train_cfg.val_interval={tier.epochs}',
            'default_hooks.logger.interval=1',
            'log_processor.window_size=1',
            f'default_hooks.checkpoint.interval={tier.epochs}',
            f'val_evaluator.outfile_prefix={work}/detections',
            *amp,
        ],
        fp32_env(tier.device) if precision == 'fp32' else {},
    )
    scalars = sorted(work.glob('*/vis_data/scalars.json'))[-1]
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    validations = [r for r in records if 'coco/bbox_mAP' in r]
    assert len(validations) == 2, f'{work}: {len(validations)} validations, not one before and one after training'
    return TrainRun(
        work=work,
        checkpoint=Path((work / 'last_checkpoint').read_text().strip()),
        losses=[r['loss'] for r in records if 'loss' in r],
        ap_before=json.loads((work / 'metrics_before_train.json').read_text())['coco/bbox_mAP'],
        final=Evaluation(
            metrics={k: v for k, v in validations[-1].items() if k.startswith('coco/')},
            detections=json.loads((work / 'detections.bbox.json').read_text()),
        ),
    )


def evaluate(checkpoint: Path, data: Path, out: Path, device: str, precision: str) -> Evaluation:
    """tools/test.py on ``device`` ('cpu': every GPU hidden, the C++ kernel), fp32 (TF32 off) or under
    bf16 autocast."""
    env = dict(CPU_ONLY) if device == 'cpu' else {}
    if precision == 'fp32':
        env.update(fp32_env(device))
    elif device == 'cpu':
        env['PIT_DET_ALLOW_EMULATED'] = '1'  # the dry run on a CPU without bf16 instructions: numerics only
    run_tool(
        [
            'tools/test.py',
            TOY_CONFIG,
            checkpoint,
            '--work-dir',
            out / 'work',
            '--out-dir',
            out,
            '--data-root',
            data,
            *(['--bf16'] if precision == 'bf16' else []),
        ],
        env,
    )
    return Evaluation(
        metrics=json.loads((out / 'metrics.json').read_text()),
        detections=json.loads((out / 'detections.bbox.json').read_text()),
    )


def match_detections(a: List[dict], b: List[dict], per_image: int, box_tol: float, score_tol: float) -> dict:
    """Holds the ``per_image`` highest-scoring detections of each image in ``a`` to ``b``.

    Each is matched to a detection of ``b`` of the same image and class whose box corners all lie
    within ``box_tol`` pixels and whose score within ``score_tol`` (each of ``b``'s used once), looked
    up among all of ``b``'s detections: one that moves past the cut of ``per_image`` still matches.

    Returns:
        dict: ``compared`` and ``matched`` counts, ``images_with_unmatched`` (ids), and over the
        matched the largest ``box_diff`` (px) and ``score_diff``.
    """

    def by_image(dets):
        grouped = defaultdict(list)
        for d in dets:
            grouped[d['image_id']].append(d)
        return grouped

    def corners(d):
        x, y, w, h = d['bbox']
        return (x, y, x + w, y + h)

    a, b = by_image(a), by_image(b)
    result = dict(compared=0, matched=0, images_with_unmatched=[], box_diff=0.0, score_diff=0.0)
    for image, dets in sorted(a.items()):
        free = list(b.get(image, []))
        for d in sorted(dets, key=lambda d: -d['score'])[:per_image]:
            result['compared'] += 1
            diffs = [
                (max(abs(p - q) for p, q in zip(corners(d), corners(e))), abs(d['score'] - e['score']), i)
                for i, e in enumerate(free)
                if e['category_id'] == d['category_id']
            ]
            within = [t for t in diffs if t[0] <= box_tol and t[1] <= score_tol]
            if not within:
                if image not in result['images_with_unmatched']:
                    result['images_with_unmatched'].append(image)
                continue
            box, score, i = min(within, key=lambda t: t[0] / box_tol + t[1] / score_tol)
            free.pop(i)
            result['matched'] += 1
            result['box_diff'], result['score_diff'] = max(result['box_diff'], box), max(result['score_diff'], score)
    return result
