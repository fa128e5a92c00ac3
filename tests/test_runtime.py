"""pit_det.runtime: checkpoint loading policy and the data-root override."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

from pit_det.runtime import install_checkpoint_loader, load_checkpoint_file, set_data_root

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


def _mmengine_like_checkpoint(path: Path) -> None:
    """What mmengine's CheckpointHook saves: weights plus pickled message hub and meta."""
    buf = HistoryBuffer()
    buf.update(1.5)
    torch.save({'meta': {'epoch': 3, 'seed': np.int64(7), 'dataset_meta': {'classes': ('a', 'b')}},
                'state_dict': {'w': torch.ones(2)},
                'message_hub': {'log_scalars': {'train/loss': buf}, 'runtime_info': {'x': np.float64(0.5)}},
                'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-4}]}}, path)


class _Payload:
    def __reduce__(self):
        return (print, ('unpickled code ran',))


def test_untrusted_mmengine_checkpoint_loads_weights_only(tmp_path):
    path = tmp_path / 'epoch_3.pth'
    _mmengine_like_checkpoint(path)
    install_checkpoint_loader([])
    ckpt = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    torch.testing.assert_close(ckpt['state_dict']['w'], torch.ones(2))
    assert ckpt['meta']['epoch'] == 3
    # The loss history is kept as inert data; the real HistoryBuffer's shared state is untouched.
    assert type(ckpt['message_hub']['log_scalars']['train/loss']).__name__ == '_TrainingRecord'
    assert HistoryBuffer._statistics_methods.get('mean') is not None


def test_untrusted_code_is_refused_and_trusted_run_dir_is_not(tmp_path, capsys):
    run_dir = tmp_path / 'work'
    run_dir.mkdir()
    evil = {'state_dict': {'w': torch.ones(1)}, 'payload': _Payload()}
    torch.save(evil, tmp_path / 'downloaded.pth')
    torch.save(evil, run_dir / 'epoch_1.pth')
    install_checkpoint_loader([str(run_dir)])
    with pytest.raises(RuntimeError, match='downloaded.pth.*refused to unpickle'):
        load_checkpoint_file(str(tmp_path / 'downloaded.pth'), 'cpu')
    assert 'unpickled code ran' not in capsys.readouterr().out
    # The run's own checkpoints (resume) are trusted: full unpickling, as mmengine needs.
    load_checkpoint_file(str(run_dir / 'epoch_1.pth'), 'cpu')
    assert 'unpickled code ran' in capsys.readouterr().out


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        load_checkpoint_file(str(tmp_path / 'nothing.pth'))


def test_set_data_root_moves_datasets_and_evaluators():
    cfg = Config.fromfile(str(CONFIGS / 'deformable_detr_pit_s.py'))
    set_data_root(cfg, '/datasets/coco')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == '/datasets/coco/'
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'
    assert cfg.val_evaluator.ann_file == '/datasets/coco/annotations/instances_val2017.json'
    assert cfg.test_evaluator.ann_file == '/datasets/coco/annotations/instances_val2017.json'
