"""A crafted checkpoint in every place a user can point the tools at: never run, always named."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_checkpoint_reading import crafted_checkpoint, mmengine_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')

pytestmark = pytest.mark.slow


def _tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True)


def _where(place: str, tmp_path: Path, toy: Path):
    """(command, the crafted file) for each place a checkpoint path can come from."""
    work = tmp_path / 'work'
    work.mkdir()
    marker = tmp_path / 'code_ran'
    train = ['tools/train.py', TOY, '--work-dir', work, '--data-root', toy, '--cfg-options', 'train_cfg.max_epochs=1']
    if place == 'resume_path':  # a downloaded "checkpoint to resume from"
        evil = crafted_checkpoint(tmp_path / 'downloaded_epoch_20.pth', marker)
        return [*train, '--resume', evil], evil, marker
    if place == 'last_checkpoint':  # a file in the work dir named as the latest
        evil = crafted_checkpoint(work / 'epoch_2.pth', marker)
        mmengine_checkpoint(work / 'epoch_1.pth')
        (work / 'last_checkpoint').write_text(str(evil))
        return [*train, '--resume'], evil, marker
    if place == 'dropped_in_work_dir':  # the newest file of the work dir, no last_checkpoint
        mmengine_checkpoint(work / 'epoch_1.pth')
        os.utime(work / 'epoch_1.pth', (1, 1))
        evil = crafted_checkpoint(work / 'epoch_7.pth', marker)
        return [*train, '--resume'], evil, marker
    evil = crafted_checkpoint(tmp_path / 'model.pth', marker)
    if place == 'test':
        return ['tools/test.py', TOY, evil, '--work-dir', work, '--data-root', toy], evil, marker
    if place == 'demo':
        return ['tools/demo.py', toy / 'val2017', TOY, evil, '--out', tmp_path / 'demo'], evil, marker
    if place == 'export':
        return ['tools/deploy/export.py', TOY, evil, '--out', tmp_path / 'model.onnx'], evil, marker
    if place == 'load_from':
        return [*train, f'load_from={evil}'], evil, marker
    raise ValueError(place)


@pytest.mark.parametrize(
    'place', ['resume_path', 'last_checkpoint', 'dropped_in_work_dir', 'test', 'demo', 'export', 'load_from']
)
def test_crafted_checkpoint_is_refused_and_named(tmp_path, tiny_toy, place):
    command, evil, marker = _where(place, tmp_path, tiny_toy)
    proc = _tool(*command)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert f'error: {evil}: refused: it needs the global posix.mkdir' in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists()


def test_last_checkpoint_out_of_the_work_dir_names_both(tmp_path, tiny_toy):
    work = tmp_path / 'work'
    work.mkdir()
    elsewhere = tmp_path / 'epoch_9.pth'
    mmengine_checkpoint(elsewhere)
    (work / 'last_checkpoint').write_text(str(elsewhere))
    proc = _tool('tools/train.py', TOY, '--work-dir', work, '--data-root', tiny_toy, '--resume')
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert f'error: {work}/last_checkpoint names {elsewhere}, which is outside the work dir {work}' in proc.stderr
