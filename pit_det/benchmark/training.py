"""Training throughput: images/s per device of a config's own training step, and what a COCO
schedule takes at that rate (``tools/analysis/benchmark.py --train-throughput``).

The step is what ``tools/train.py`` runs each iteration: the config's detector (seeded random
weights; the backbone's pretrained ``init_cfg`` is not loaded), its data preprocessor, the losses
(Hungarian matching included), backward, and the config's optim wrapper (AdamW, gradient clipping,
per-parameter lr) stepping the optimizer. The batches have the config's size and went through the
config's own training pipeline (flip, the multi-scale resize and the crop branch) from synthetic
photo-sized images with boxes; reading and decoding files is left out, as data-loader workers do
it beside the step. Warm-up iterations are not timed; the rate is the images of the timed
iterations over their summed time, CUDA synchronised around each.
"""

import copy
import logging
import math
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope
from torch import nn

from .. import ops
from ..precision import amp_optim_wrapper
from . import measure as bm
from .runner import Settings, label

# COCO train2017 (instances_train2017.json): 118,287 images, 117,266 of them with at least one
# annotation. mmdet's Deformable DETR configs, and so pit-det's, keep the 1,021 without
# (filter_empty_gt=False): their epoch is every image.
COCO_TRAIN2017_IMAGES = 118_287
COCO_TRAIN2017_ANNOTATED = 117_266
PHOTO = (480, 640)  # (H, W): COCO's most common image size
BOXES_PER_PHOTO = 7  # COCO train2017 has about 7.3 annotated objects per image


class CpuAutocastOptimWrapper(OptimWrapper):
    """bf16 / fp16 training on CPU, which mmengine's ``AmpOptimWrapper`` refuses (it asserts a
    GPU): the forward (and loss) under autocast, as that wrapper's ``optim_context`` does, without
    its loss scaling (a speed measurement; bf16 has fp32's exponent range anyway).

    Args:
        dtype: the autocast precision.
        **kwargs: ``OptimWrapper``'s (optimizer, clip_grad, ...).
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def optim_wrapper_for(model: nn.Module, cfg: Config, device: str, dtype: str) -> OptimWrapper:
    """The config's optim wrapper in precision ``dtype``: as configured for fp32; for bf16 / fp16
    on a GPU what ``tools/train.py --amp`` builds (mmengine's ``AmpOptimWrapper``, dynamic loss
    scaling, with ``dtype``), on CPU :class:`CpuAutocastOptimWrapper`."""
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if dtype != 'fp32' and device.startswith('cuda'):
        optim_cfg = amp_optim_wrapper(optim_cfg, str(bm.DTYPES[dtype])[len('torch.') :])
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # the constructor logs every parameter's lr and weight decay
    try:
        wrapper = build_optim_wrapper(model, optim_cfg)
    finally:
        logger.setLevel(level)
    if dtype != 'fp32' and not device.startswith('cuda'):
        wrapper = CpuAutocastOptimWrapper(
            bm.DTYPES[dtype], optimizer=wrapper.optimizer, clip_grad=optim_cfg.get('clip_grad')
        )
    return wrapper


def synthetic_batches(
    cfg: Config, count: int, photo: Tuple[int, int] = PHOTO, boxes: int = BOXES_PER_PHOTO, seed: int = 0
) -> List[dict]:
    """``count`` training batches as the config's data loader gives them to ``train_step``.

    Each image is ``photo`` (H, W) of uint8 noise with ``boxes`` random boxes of the config's
    classes, run through the config's training pipeline from the step after loading (its
    ``Load*`` steps are what this replaces), then collated as mmengine's ``pseudo_collate``.
    The pipeline's random choices are seeded: the same batches every run.
    """
    steps = [t for t in cfg.train_dataloader.dataset.pipeline if not t['type'].startswith(('Load', 'SafeLoad'))]
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmdet')):
        pipeline = Compose(steps)
    rng = np.random.default_rng(seed)
    height, width = photo
    size = np.array([width, height, width, height], dtype=np.float32)
    batch_size = cfg.train_dataloader.batch_size
    state = np.random.get_state()  # mmcv's and mmdet's transforms draw from numpy's global generator
    np.random.seed(seed)
    try:
        batches = []
        for b in range(count):
            samples = []
            for i in range(b * batch_size, (b + 1) * batch_size):
                corner = rng.uniform(0.0, 0.8, (boxes, 2))
                extent = rng.uniform(0.05, 0.5, (boxes, 2))
                xyxy = np.concatenate([corner, np.minimum(corner + extent, 1.0)], 1) * size
                samples.append(
                    pipeline(
                        dict(
                            img=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                            img_shape=(height, width),
                            ori_shape=(height, width),
                            img_id=i,
                            img_path=f'synthetic/{i}.jpg',
                            gt_bboxes=HorizontalBoxes(torch.from_numpy(xyxy.astype(np.float32))),
                            gt_bboxes_labels=rng.integers(0, cfg.model.bbox_head.num_classes, boxes),
                            gt_ignore_flags=np.zeros(boxes, dtype=bool),
                        )
                    )
                )
            batches.append(pseudo_collate(samples))
    finally:
        np.random.set_state(state)
    return batches


def coco_schedule(
    images_per_s: float, batch_size: int, filter_empty_gt: bool, gpus: int = 8, epochs: int = 50
) -> Dict[str, object]:
    """Hours of ``epochs`` COCO train2017 epochs on ``gpus`` devices, each at ``images_per_s``
    with ``batch_size`` images per iteration: ideal scaling, i.e. no time for the gradients'
    all-reduce, for data loading that falls behind, or for validation.

    An epoch is the images the config's loader iterates: all 118,287, or the 117,266 with
    annotations where ``filter_empty_gt`` drops the others. Each iteration takes ``batch_size``
    images per device; mmengine's sampler pads the last one.
    """
    images = COCO_TRAIN2017_ANNOTATED if filter_empty_gt else COCO_TRAIN2017_IMAGES
    iters_per_epoch = math.ceil(images / (gpus * batch_size))
    hours = iters_per_epoch * epochs * batch_size / images_per_s / 3600
    return dict(
        gpus=gpus,
        epochs=epochs,
        images_per_epoch=images,
        filter_empty_gt=filter_empty_gt,
        iters_per_epoch=iters_per_epoch,
        hours=hours,
    )


def train_throughput(
    config: str,
    cfg: Config,
    batches: List[dict],
    device: str,
    dtype: str = 'fp32',
    warmup: int = 3,
    progress: Optional[Callable[[], None]] = None,
) -> Dict[str, object]:
    """Images/s per device of ``config``'s training step (module docstring) in ``dtype``.

    Args:
        config: config file (named in the result).
        cfg: its config, overrides merged.
        batches: :func:`synthetic_batches` of ``cfg`` (``PHOTO``-sized photos), one per iteration:
            ``warmup`` untimed, then the timed ones. The same for every precision, so built once
            per config.
        device: 'cpu' or 'cuda'.
        dtype: 'fp32', or 'bf16' / 'fp16' autocast (:func:`optim_wrapper_for`).
        warmup: untimed iterations.
        progress: called after each timed iteration.

    Returns:
        dict: ``images_per_s``, ``step`` (ms per iteration, :func:`.measure.summarize`),
        ``batch_size``, ``impl`` / ``kernel`` (deformable attention), ``peak_mib``, the last
        iteration's ``loss`` and ``coco_50e_8gpus`` (:func:`coco_schedule`).
    """
    model = bm.build_detector(cfg).to(device).train()
    wrapper = optim_wrapper_for(model, cfg, device, dtype)
    batch_size = cfg.train_dataloader.batch_size
    remaining = iter(batches)
    last = {}

    def step() -> None:
        last['log_vars'] = model.train_step(next(remaining), wrapper)

    with bm.peak_memory(device) as memory:
        times = bm.time_calls(step, warmup, len(batches) - warmup, device, progress)
    images_per_s = batch_size * len(times) / sum(times)
    step_ms = {k: v for k, v in bm.summarize(times).items() if k != 'images_per_s'}  # its images/s is batch 1's
    impl, kernel = _msda(model, device)
    filter_empty_gt = cfg.train_dataloader.dataset.get('filter_cfg', {}).get('filter_empty_gt', False)
    return dict(
        config=config,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
        photo=list(PHOTO),
        impl=impl,
        kernel=kernel,
        images_per_s=images_per_s,
        step=step_ms,
        loss=last['log_vars']['loss'].item(),
        **memory,
        coco_50e_8gpus=coco_schedule(images_per_s, batch_size, filter_empty_gt),
    )


def _msda(model: nn.Module, device: str) -> Tuple[str, str]:
    """The model's deformable attention: the choice its modules carry (the config's ``msda_impl``)
    and the kernel that runs on ``device``, each joined with ' / ' where modules differ."""
    impls = {getattr(m, 'impl', 'stock') for m in model.modules() if isinstance(m, MultiScaleDeformableAttention)}
    kernels = {ops.resolve(impl, device) for impl in impls}
    return ' / '.join(sorted(impls)), ' / '.join(sorted(kernels))


def benchmark_training(
    configs: Sequence[str], settings: Settings, progress: Optional[Callable[[str, int], None]] = None
) -> List[dict]:
    """:func:`train_throughput` of every config in each of ``settings.dtypes`` on ``settings.device``
    (``warmup``, ``iters`` and ``cfg_options`` as the latency rows'); no rows unless ``settings.train``.
    One that fails becomes a row with its ``error``, and the others still run."""
    if not settings.train:
        return []
    rows = []
    for config in configs:
        cfg = Config.fromfile(config)
        if settings.cfg_options:
            cfg.merge_from_dict(settings.cfg_options)
        batches = synthetic_batches(cfg, settings.warmup + settings.iters)  # seeded: the same for every precision
        for dtype in settings.dtypes:
            what = f'{label(config)} training {dtype}'
            try:
                row = train_throughput(
                    config,
                    cfg,
                    batches,
                    settings.device,
                    dtype,
                    settings.warmup,
                    progress=lambda: progress(what, 1) if progress else None,
                )
            except Exception as err:  # one precision failing must not cost the run its other rows
                row = dict(config=config, dtype=dtype, device=settings.device, error=f'{type(err).__name__}: {err}')
            rows.append(dict(model=label(config), **row))
    return rows
