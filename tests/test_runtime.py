"""pit_det.runtime: the data-root override."""
from pathlib import Path

from mmengine.config import Config

from pit_det.runtime import set_data_root

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


def test_set_data_root_moves_datasets_and_evaluators():
    cfg = Config.fromfile(str(CONFIGS / 'deformable_detr_pit_s.py'))
    set_data_root(cfg, '/datasets/coco')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == '/datasets/coco/'
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'
    assert cfg.val_evaluator.ann_file == '/datasets/coco/annotations/instances_val2017.json'
    assert cfg.test_evaluator.ann_file == '/datasets/coco/annotations/instances_val2017.json'
