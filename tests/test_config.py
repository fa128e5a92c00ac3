"""pit_det.config: the data-root override and the process group's teardown."""

from pathlib import Path

import torch.distributed as dist
from mmengine.config import Config

from pit_det.config import set_data_root, shutdown_distributed

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


def test_set_data_root_moves_datasets_and_evaluators():
    cfg = Config.fromfile(str(CONFIGS / 'deformable_detr_pit_s.py'))
    set_data_root(cfg, '/datasets/coco')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == '/datasets/coco/'
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'
    assert cfg.val_evaluator.ann_file == '/datasets/coco/annotations/instances_val2017.json'
    assert cfg.test_evaluator.ann_file == '/datasets/coco/annotations/instances_val2017.json'


def test_set_data_root_moves_every_metric_of_an_evaluator_in_each_form():
    """An evaluator as a list of metrics or a dict with ``metrics`` (mmengine's other two forms):
    each metric with an ``ann_file`` moved; one without left so."""
    for form in ('list', 'metrics'):
        cfg = Config.fromfile(str(CONFIGS / 'deformable_detr_pit_s.py'))
        coco = dict(cfg.test_evaluator)
        metrics = [coco, dict(coco, ann_file='annotations/other.json'), dict(type='X')]
        cfg.test_evaluator = metrics if form == 'list' else dict(type='Evaluator', metrics=metrics)
        set_data_root(cfg, '/datasets/coco')
        moved = cfg.test_evaluator if form == 'list' else cfg.test_evaluator.metrics
        assert [m.get('ann_file') for m in moved] == [
            '/datasets/coco/annotations/instances_val2017.json',
            '/datasets/coco/annotations/other.json',
            None,
        ], form


def test_shutdown_distributed_destroys_the_group(tmp_path):
    # A gloo group left to the interpreter's teardown aborted rank 0 of torchrun runs (SIGABRT
    # after the last epoch, about 1 run in 3); the tools destroy it when they finish.
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown_distributed()
    assert not dist.is_initialized()
    shutdown_distributed()  # without a group: nothing to do
