"""End to end on a tiny generated toy set: train, evaluate, distributed, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pit_det.checkpoint import safe_torch_load
from pit_det.datasets import make_toy_coco
from pit_det_deploy.hardware import native_dtypes

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
# Keep each run to a few iterations: 8 training images, batch 4, no validation during training.
FAST = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=100']

pytestmark = pytest.mark.slow


def run(args, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, **kwargs
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_generator_is_deterministic_and_varied(tmp_path):
    a, b = make_toy_coco(tmp_path / 'a', 30, 5, seed=3), make_toy_coco(tmp_path / 'b', 30, 5, seed=3)
    for split in ('train', 'val'):
        ja = json.loads((a / f'annotations/instances_{split}2017.json').read_text())
        jb = json.loads((b / f'annotations/instances_{split}2017.json').read_text())
        assert ja == jb
        for img in ja['images']:
            name = f'{split}2017/' + img['file_name']
            assert (a / name).read_bytes() == (b / name).read_bytes()
    train = json.loads((a / 'annotations/instances_train2017.json').read_text())
    assert {c['name'] for c in train['categories']} == {'rectangle', 'ellipse', 'triangle'}
    per_image = {img['id']: 0 for img in train['images']}
    for ann in train['annotations']:
        per_image[ann['image_id']] += 1
        x, y, w, h = ann['bbox']
        img = train['images'][ann['image_id'] - 1]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img['width'] and y + h <= img['height']
    assert 0 in per_image.values() and max(per_image.values()) >= 3  # empty images and crowded ones
    assert len({ann['category_id'] for ann in train['annotations']}) == 3
    assert len({(img['height'], img['width']) for img in train['images']}) > 10
    other = make_toy_coco(tmp_path / 'c', 30, 5, seed=4)
    assert json.loads((other / 'annotations/instances_train2017.json').read_text()) != train
    assert not (a / 'annotations/instances_test2017.json').exists()  # the held-out split only when asked


def test_held_out_split_is_its_own_and_leaves_the_others_as_they_were(tmp_path):
    """tools/analysis/table5_toy.py scores a test split that the recipe's tuning on val never saw."""
    root = make_toy_coco(tmp_path, 30, 5, seed=3)
    val = (root / 'annotations/instances_val2017.json').read_bytes()
    make_toy_coco(root, 30, 5, seed=3, num_test=6)
    test = json.loads((root / 'annotations/instances_test2017.json').read_text())
    assert len(test['images']) == 6 and test['info']['description'].endswith('seed 5')  # seed + 2
    assert (root / 'annotations/instances_val2017.json').read_bytes() == val
    first_val = json.loads(val)['images'][0]['file_name']
    assert (root / 'test2017' / test['images'][0]['file_name']).read_bytes() != (
        root / 'val2017' / first_val
    ).read_bytes()


@pytest.fixture(scope='module')
def trained_toy(tiny_toy, tmp_path_factory) -> Path:
    """One short training run (validating once before it) shared by the tests below."""
    work = tmp_path_factory.mktemp('trained')
    run(
        ['tools/train.py', TOY, '--work-dir', work, '--data-root', tiny_toy, '--validate-first', '--cfg-options', *FAST]
    )
    return work


def test_train_then_evaluate_matches_pycocotools(tiny_toy, trained_toy, tmp_path):
    before = json.loads((trained_toy / 'metrics_before_train.json').read_text())
    assert 'coco/bbox_mAP' in before
    ckpt = (trained_toy / 'last_checkpoint').read_text().strip()
    assert Path(ckpt).name == 'epoch_1.pth'
    out = tmp_path / 'eval'
    run(
        [
            'tools/test.py',
            TOY,
            ckpt,
            '--work-dir',
            tmp_path / 'test',
            '--out-dir',
            out,
            '--data-root',
            tiny_toy,
            '--show-dir',
            'pictures',
        ]
    )
    metrics = json.loads((out / 'metrics.json').read_text())
    dets = json.loads((out / 'detections.bbox.json').read_text())
    assert len(dets) == 4 * 100  # test_cfg.max_per_img: top 100 of 50 queries x 3 classes per image
    gt = COCO(str(tiny_toy / 'annotations/instances_val2017.json'))
    ev = COCOeval(gt, gt.loadRes(str(out / 'detections.bbox.json')), 'bbox')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    names = ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']
    for i, name in enumerate(names):
        assert metrics[f'coco/bbox_{name}'] == pytest.approx(round(ev.stats[i], 3), abs=1e-9), name
    pictures = list((tmp_path / 'test').glob('*/pictures/*.png'))
    assert len(pictures) == 4


def test_evaluate_in_bf16(tiny_toy, trained_toy, tmp_path):
    """tools/test.py --bf16 runs the model under bf16 autocast (the scores move by bf16 rounding;
    an autocast that mmengine's loop switches off would leave them identical), writes float32
    detections and gives COCO metrics. On a CPU without native bf16 it is refused instead (both
    branches with the capability stubbed: test_precision.py)."""
    ckpt = (trained_toy / 'last_checkpoint').read_text().strip()
    if 'bf16' not in native_dtypes('cpu'):
        proc = subprocess.run(
            [
                sys.executable,
                'tools/test.py',
                TOY,
                ckpt,
                '--data-root',
                tiny_toy,
                '--bf16',
                '--work-dir',
                tmp_path / 'work',
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1 and 'would be emulated' in proc.stderr and 'Traceback' not in proc.stderr
        return
    dets = {}
    for precision in ('fp32', 'bf16'):
        out = tmp_path / precision
        run(
            [
                'tools/test.py',
                TOY,
                ckpt,
                '--work-dir',
                tmp_path / 'work',
                '--out-dir',
                out,
                '--data-root',
                tiny_toy,
                *(['--bf16'] if precision == 'bf16' else []),
            ]
        )
        assert 'coco/bbox_mAP' in json.loads((out / 'metrics.json').read_text())
        dets[precision] = json.loads((out / 'detections.bbox.json').read_text())
    assert len(dets['bf16']) == len(dets['fp32']) == 4 * 100
    assert [d['score'] for d in dets['bf16']] != [d['score'] for d in dets['fp32']]


def test_demo_draws_one_picture_per_input(tiny_toy, trained_toy, tmp_path):
    ckpt = (trained_toy / 'last_checkpoint').read_text().strip()
    out = tmp_path / 'demo'
    run(['tools/demo.py', tiny_toy / 'val2017', TOY, ckpt, '--out', out, '--score-thr', '0.0'])
    inputs = sorted(p.stem for p in (tiny_toy / 'val2017').glob('*.png'))
    assert sorted(p.stem for p in out.glob('*.png')) == inputs
    records = json.loads((out / 'detections.json').read_text())
    assert len(records) == len(inputs)
    assert all(len(r['detections']) == 100 for r in records)  # threshold 0: all max_per_img boxes
    det = records[0]['detections'][0]
    assert det['name'] in ('rectangle', 'ellipse', 'triangle') and len(det['bbox']) == 4


def test_plain_mmengine_checkpoint_evaluates_and_resumes(tiny_toy, tmp_path):
    """A checkpoint as plain mmdet 3.3 / mmengine 0.10.7 write it (``custom_hooks=[]``: none of
    pit-det's hooks, so no random states; the bytes are torch.save's either way) is read
    weights-only by tools/test.py and by --resume, which then continues the run."""
    work = tmp_path / 'work'
    run(['tools/train.py', TOY, '--work-dir', work, '--data-root', tiny_toy, '--cfg-options', *FAST, 'custom_hooks=[]'])
    first = safe_torch_load(work / 'epoch_1.pth')
    assert (
        'rng_state' not in first['meta']
        and type(first['message_hub']['log_scalars']['train/loss']).__name__ == 'HistoryBuffer'
    )
    out = tmp_path / 'eval'
    run(
        [
            'tools/test.py',
            TOY,
            work / 'epoch_1.pth',
            '--work-dir',
            tmp_path / 'test',
            '--out-dir',
            out,
            '--data-root',
            tiny_toy,
        ]
    )
    assert 'coco/bbox_mAP' in json.loads((out / 'metrics.json').read_text())
    proc = run(
        [
            'tools/train.py',
            TOY,
            '--work-dir',
            work,
            '--data-root',
            tiny_toy,
            '--resume',
            '--cfg-options',
            *FAST,
            'train_cfg.max_epochs=2',
            'default_hooks.checkpoint.interval=1',
        ]
    )
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 1' in log, log[-3000:]
    ckpt = safe_torch_load(work / 'epoch_2.pth', map_location='cpu')
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 4


def launch(script: str, *args, port: int) -> subprocess.CompletedProcess:
    """``bash tools/<script> args`` as a user runs it on one node, with this interpreter."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', PYTHON=sys.executable, PORT=str(port))
    proc = subprocess.run(
        ['bash', f'tools/{script}', *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_torchrun_two_processes_on_cpu(tiny_toy, tmp_path):
    """tools/dist_train.sh and tools/dist_test.sh with 2 processes (gloo on CPU, as NCCL on GPUs):
    training splits the batches; evaluation splits the images, and mmengine's sampler pads 3 images
    to 2 x 2, which must be dropped again: the metrics and detections are those of one process."""
    work = tmp_path / 'work'
    proc = launch(
        'dist_train.sh',
        TOY,
        2,
        '--work-dir',
        work,
        '--data-root',
        tiny_toy,
        '--cfg-options',
        *FAST,
        'train_dataloader.batch_size=2',
        port=29517,
    )
    log = proc.stdout + proc.stderr
    assert 'Distributed launcher: pytorch' in log or 'world_size: 2' in log or 'distributed: True' in log, log[-3000:]
    ckpt = safe_torch_load(work / 'epoch_1.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 2  # 8 images / (2 processes x 2 per process)
    three = ['--data-root', tiny_toy, '--cfg-options', 'test_dataloader.dataset.indices=3']
    run(['tools/test.py', TOY, work / 'epoch_1.pth', '--work-dir', tmp_path / 'one', *three])
    proc = launch('dist_test.sh', TOY, work / 'epoch_1.pth', 2, '--work-dir', tmp_path / 'two', *three, port=29518)
    log = proc.stdout + proc.stderr
    assert 'Distributed launcher: pytorch' in log and 'GPU number: 2' in log, log[-3000:]  # mmengine's words on CPU too
    results = {}
    for name in ('one', 'two'):
        detections = json.loads((tmp_path / name / 'detections.bbox.json').read_text())
        results[name] = json.loads((tmp_path / name / 'metrics.json').read_text()), detections
    assert results['two'] == results['one']
    assert len({d['image_id'] for d in results['one'][1]}) == 3 and results['one'][0]['coco/bbox_mAP'] >= 0
