"""Training hooks that the shipped configs add (pit_det/hooks.py)."""

from types import SimpleNamespace

import torch
from mmengine.config import Config

from pit_det.hooks import ProgressBarHook


def test_progress_bar_counts_iterations_and_shows_epoch_and_loss(capsys):
    runner = SimpleNamespace(rank=0, max_iters=6, iter=2, epoch=0, max_epochs=3)  # resumed at iteration 2
    hook = ProgressBarHook(disable=False)
    hook.before_train(runner)
    for i in range(4):
        runner.epoch = (2 + i) // 2
        hook.after_train_iter(runner, i, outputs=dict(loss=torch.tensor(1.5 - i / 10)))
    assert hook.bar.n == 6 and hook.bar.total == 6
    hook.after_train(runner)
    err = capsys.readouterr().err
    assert '6/6' in err and 'epoch 3/3 loss 1.200' in err


def test_progress_bar_only_on_rank_0_and_in_every_shipped_config(capsys):
    hook = ProgressBarHook(disable=False)
    hook.before_train(SimpleNamespace(rank=1, max_iters=6, iter=0))
    hook.after_train_iter(SimpleNamespace(rank=1), 0, outputs=dict(loss=1.0))
    assert hook.bar is None and capsys.readouterr().err == ''
    for name in ('r50', 'vit_s', 'vit_s_pyramid', 'pit_s'):
        hooks = Config.fromfile(f'configs/deformable_detr_{name}.py').custom_hooks
        assert dict(type='ProgressBarHook') in hooks, name
