"""Bad data, interrupted runs, non-finite losses: nothing may lose a long run."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pit_det.checkpoint import AtomicLocalBackend, find_resumable_checkpoint, resumable_meta, safe_torch_load
from pit_det.datasets.check import ERRORS, check_coco
from pit_det.datasets.toy import make_split
from pit_det.datasets.transforms import PadToMinSize, SafeLoadImageFromFile
from pit_det.errors import DatasetError

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')


def make_defective_set(root: Path, with_duplicates: bool) -> dict:
    """A 16-image toy split with one instance of each defect; returns the expected counts."""
    coco = make_split(root, 'train', 16, seed=5)
    img_dir = root / 'train2017'
    images = coco['images']
    anns_of = {img['id']: [a for a in coco['annotations'] if a['image_id'] == img['id']] for img in images}
    with_boxes = [img for img in images if anns_of[img['id']]]
    path = lambda i: img_dir / images[i]['file_name']  # noqa: E731

    os.remove(path(0))  # missing_image
    path(1).write_bytes(path(1).read_bytes()[:200])  # unreadable (truncated PNG)
    path(2).write_bytes(b'this is not an image')  # unreadable (garbage)
    img = cv2.imread(str(path(3)))
    cv2.imwrite(str(path(3)), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))  # grayscale
    img = cv2.imread(str(path(4)))
    cv2.imwrite(str(path(4)), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))  # alpha
    img = cv2.imread(str(path(5)))
    cv2.imwrite(str(path(5)), img.astype(np.uint16) * 257)  # 16-bit
    images[6]['width'] += 7  # size_mismatch
    cv2.imwrite(str(path(7)), np.full((10, 12, 3), 128, np.uint8))  # small image
    images[7].update(height=10, width=12)
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] != images[7]['id']]
    a0, a1, a2, a3 = (anns_of[img['id']][0] for img in with_boxes[-4:])
    a0['bbox'][2] = 0  # degenerate (w = 0)
    a1['bbox'][3] = -5  # degenerate (h < 0)
    a2['bbox'][0] = next(i for i in images if i['id'] == a2['image_id'])['width'] + 5  # box_outside_image
    a3['category_id'] = 99  # unknown_category
    expected = dict(
        missing_image=1,
        unreadable_image=2,
        grayscale_image=1,
        alpha_image=1,
        high_bit_depth_image=1,
        size_mismatch=1,
        small_image=1,
        degenerate_box=2,
        box_outside_image=1,
        unknown_category=1,
    )
    if with_duplicates:
        images.append(dict(images[8]))
        coco['annotations'][1]['id'] = coco['annotations'][0]['id']
        expected.update(duplicate_image_id=1, duplicate_annotation_id=1)
    (root / 'annotations' / 'instances_train2017.json').write_text(json.dumps(coco))
    return expected


@pytest.mark.slow
def test_checker_finds_every_defect(tmp_path):
    expected = make_defective_set(tmp_path, with_duplicates=True)
    report, _ = check_coco(tmp_path / 'annotations/instances_train2017.json', tmp_path / 'train2017')
    assert dict(report.counts) == expected
    assert report.num_errors == sum(n for k, n in expected.items() if k in ERRORS)
    proc = subprocess.run(
        [
            sys.executable,
            'tools/data/validate_dataset.py',
            tmp_path / 'annotations/instances_train2017.json',
            tmp_path / 'train2017',
            '--workers',
            '2',
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'ERROR missing_image: 1' in proc.stdout and '000001.png' in proc.stdout
    assert 'warning small_image: 1' in proc.stdout and '000008.png (12x10)' in proc.stdout


@pytest.mark.slow
def test_checker_passes_a_clean_set_and_names_a_broken_json(tmp_path):
    make_split(tmp_path, 'val', 6, seed=2)
    proc = subprocess.run(
        [
            sys.executable,
            'tools/data/validate_dataset.py',
            tmp_path / 'annotations/instances_val2017.json',
            tmp_path / 'val2017',
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and '0 errors, 0 warnings' in proc.stdout, proc.stdout + proc.stderr
    bad = tmp_path / 'bad.json'
    bad.write_text('{"images": [], "annotations": []}')
    with pytest.raises(DatasetError, match="bad.json: field 'categories' missing"):
        check_coco(bad, tmp_path)


@pytest.mark.slow
def test_training_over_bad_data_skips_and_reports(tmp_path):
    make_defective_set(tmp_path, with_duplicates=False)
    make_split(tmp_path, 'val', 4, seed=1)
    val_dir = tmp_path / 'val2017'
    os.remove(next(val_dir.glob('*.png')))  # an unreadable image at evaluation time too
    proc = subprocess.run(
        [
            sys.executable,
            'tools/train.py',
            TOY,
            '--work-dir',
            tmp_path / 'work',
            '--data-root',
            tmp_path,
            '--cfg-options',
            'train_cfg.max_epochs=1',
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert re.search(r'unreadable image \S+000001\.png .*skipped', log)  # missing
    assert re.search(r'unreadable image \S+000002\.png .*skipped', log)  # truncated
    assert re.search(r'unreadable image \S+val2017\S+\.png .*replaced by a blank image', log)
    assert re.search(r'dropped 4 of \d+ boxes', log), log[-3000:]
    assert 'coco/bbox_mAP' in log and (tmp_path / 'work/epoch_1.pth').is_file()


def test_checker_takes_an_exif_rotated_image_at_the_size_it_loads(tmp_path):
    """A phone JPEG with EXIF orientation 6: mmcv's loader turns it a quarter, so the json must give
    the turned size; the checker compared the raw size and called the right json wrong."""
    from mmcv.transforms import LoadImageFromFile
    from PIL import Image

    coco = make_split(tmp_path, 'val', 2, seed=1)
    img = coco['images'][0]
    raw = Image.fromarray(np.zeros((30, 50, 3), np.uint8))  # stored 50 wide, 30 high
    exif = raw.getexif()
    exif[274] = 6  # rotate 90 degrees clockwise when shown
    img['file_name'] = 'rotated.jpg'
    raw.save(tmp_path / 'val2017' / 'rotated.jpg', exif=exif)
    loaded = LoadImageFromFile()(dict(img_path=str(tmp_path / 'val2017' / 'rotated.jpg')))['img']
    assert loaded.shape[:2] == (50, 30)
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] != img['id']]
    ann = tmp_path / 'annotations' / 'instances_val2017.json'
    for (width, height), counts in (
        ((30, 50), {'rotated_image': 1}),
        ((50, 30), {'rotated_image': 1, 'size_mismatch': 1}),
    ):
        img.update(width=width, height=height)
        ann.write_text(json.dumps(coco))
        report, _ = check_coco(ann, tmp_path / 'val2017')
        assert dict(report.counts) == counts, report.counts
    assert report.examples['size_mismatch'] == ['rotated.jpg (file 30x50 as loaded, json 50x30)']


def test_unreadable_images_are_bounded(tmp_path):
    SafeLoadImageFromFile.failures = 0
    load = SafeLoadImageFromFile(max_failures=2)
    for _ in range(2):
        assert load({'img_path': str(tmp_path / 'nope.png')}) is None
    with pytest.raises(RuntimeError, match='more than 2 unreadable images.*nope.png'):
        load({'img_path': str(tmp_path / 'nope.png')})
    SafeLoadImageFromFile.failures = 0
    blank = SafeLoadImageFromFile(on_failure='blank')({'img_path': 'x.png', 'height': 20, 'width': 30})
    assert blank['img'].shape == (20, 30, 3) and blank['img_shape'] == (20, 30)
    SafeLoadImageFromFile.failures = 0


def test_pad_to_min_size():
    out = PadToMinSize(16).transform({'img': np.ones((10, 40, 3), np.uint8), 'img_shape': (10, 40)})
    assert out['img'].shape == (16, 40, 3) and out['pad_shape'] == (16, 40) and out['img_shape'] == (10, 40)
    assert out['img'][10:].sum() == 0 and out['img'][:10].min() == 1
    same = np.ones((20, 20, 3), np.uint8)
    assert PadToMinSize(16).transform({'img': same})['img'] is same


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    torch.save({'w': torch.ones(3)}, target)
    before = target.read_bytes()

    def killed(fd):
        raise KeyboardInterrupt  # the process dies in the middle of writing

    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt):
        AtomicLocalBackend().put(b'partial bytes', target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['epoch_1.pth']  # no temporary file left
    # A truncated checkpoint named as the latest one (a plain writer killed mid-save) is skipped.
    (tmp_path / 'epoch_2.pth').write_bytes(before[:100])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == str(target)


@pytest.mark.parametrize('umask', [0o022, 0o002, 0o077])
def test_checkpoints_get_the_mode_a_plain_save_gives(tmp_path, umask):
    """Shared cluster storage: the group must be able to read checkpoints when the umask says so."""
    old = os.umask(umask)
    try:
        torch.save({'w': torch.ones(1)}, tmp_path / 'plain.pth')
        AtomicLocalBackend().put(b'bytes', tmp_path / 'epoch_1.pth')
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / 'epoch_1.pth').stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / 'plain.pth').stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth', 'plain.pth']


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_checkpoint(tmp_path):
    make_split(tmp_path, 'train', 8, seed=0)
    make_split(tmp_path, 'val', 4, seed=1)
    work = tmp_path / 'work'
    proc = subprocess.run(
        [
            sys.executable,
            'tools/train.py',
            TOY,
            '--work-dir',
            work,
            '--data-root',
            tmp_path,
            '--cfg-options',
            'model.bbox_head.loss_bbox.loss_weight=nan',
            'train_cfg.max_epochs=1',
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'FloatingPointError: non-finite loss at iteration 1 (epoch 1)' in log, log[-3000:]
    assert (work / 'nonfinite_iter_1.pth').is_file() and not (work / 'last_checkpoint').exists()


def _final_metric(log: str) -> float:
    return float(re.findall(r'coco/bbox_mAP: ([0-9.]+)', log)[-1])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    """The shipped data loading (2 persistent workers each for training and validation, random
    flips / resizes) and no fixed seed: a run killed mid-epoch and resumed ends with the weights
    (1e-5) and metrics of an uninterrupted run with the seed mmengine drew. Validation runs at the
    end only: then the uninterrupted run creates no data iterator between the checkpoint and epoch 2
    while the resumed one does, which is what the dataloaders' own generators guard (with
    validation every epoch both happen to create one)."""
    make_split(tmp_path, 'train', 16, seed=0)
    make_split(tmp_path, 'val', 4, seed=1)
    loaders = [
        f'{loader}.{key}'
        for loader in ('train_dataloader', 'val_dataloader')
        for key in ('num_workers=2', 'persistent_workers=True')
    ]
    opts = [
        '--data-root',
        tmp_path,
        '--cfg-options',
        'train_cfg.max_epochs=2',
        'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.logger.interval=1',
        *loaders,
    ]
    train = [sys.executable, 'tools/train.py', TOY]

    work = tmp_path / 'killed'
    log_path = tmp_path / 'killed.log'
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            [*train, '--work-dir', work, *opts, 'randomness.seed=None'],
            cwd=ROOT,
            env=ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if re.search(r'Epoch\(train\) \[2\]\[\s*2/\d+\]', log_path.read_text()):
                proc.send_signal(signal.SIGKILL)  # mid-epoch 2, after epoch_1.pth was written
                break
            time.sleep(0.05)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log_path.read_text()[-3000:]
    assert (work / 'epoch_1.pth').is_file() and not (work / 'epoch_2.pth').exists()
    seed = resumable_meta(str(work / 'epoch_1.pth'))['seed']  # drawn by mmengine, as with the shipped configs

    clean = subprocess.run(
        [*train, '--work-dir', tmp_path / 'clean', *opts, f'randomness.seed={seed}'],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert clean.returncode == 0, clean.stderr[-3000:]
    resumed = subprocess.run(
        [*train, '--work-dir', work, '--resume', *opts, 'randomness.seed=None'],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert re.search(r'resumed epoch: 1, iter: \d+', log) and 'restored the random number generator states' in log
    assert f'seed: {seed}' in log or f"'seed': {seed}" in log or f'seed={seed}' in log, log[:3000]
    # Stated tolerance: weights within 1e-5 (CPU kernels are deterministic for a fixed thread
    # count), mAP equal.
    a = safe_torch_load(tmp_path / 'clean/epoch_2.pth', map_location='cpu')['state_dict']
    b = safe_torch_load(work / 'epoch_2.pth', map_location='cpu')['state_dict']
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-5
    assert _final_metric(log) == _final_metric(clean.stdout + clean.stderr)
