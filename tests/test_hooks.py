"""Training hooks that the shipped configs add (pit_det/hooks.py)."""

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config

from pit_det import hooks
from pit_det.hooks import NonFiniteLossHook, ProgressBarHook, RNGStateHook


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


class OnGpu(torch.Tensor):
    """A tensor of a checkpoint loaded onto a GPU (mmengine's resume: map_location=get_device()): numpy
    refuses it as it refuses a CUDA tensor; ``.cpu()`` gives the plain tensor."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor")

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor)


def on_gpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(OnGpu)
    if isinstance(obj, (tuple, list)):
        return type(obj)(on_gpu(x) for x in obj)
    return {k: on_gpu(v) for k, v in obj.items()} if isinstance(obj, dict) else obj


def draws():
    return random.random(), float(np.random.rand()), torch.rand(2).tolist()


def test_rng_states_restored_from_a_checkpoint_loaded_onto_a_gpu(monkeypatch):
    """--resume on a GPU: the stored Python, numpy and torch states arrive as CUDA tensors and
    continue the streams; the current device's CUDA state, stored where CUDA ran, is restored too."""
    cuda_state = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_rng_state', lambda device='cuda': cuda_state)
    monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda state, device='cuda': restored.append(state))
    set_cpu_state = torch.set_rng_state

    def set_rng_state(state):  # torch's CPU generator refuses a CUDA tensor ("must be a torch.ByteTensor")
        if isinstance(state, OnGpu):
            raise TypeError('RNG state must be a torch.ByteTensor')
        set_cpu_state(state)

    monkeypatch.setattr(torch, 'set_rng_state', set_rng_state)
    hook, checkpoint = RNGStateHook(), {}
    hook.before_save_checkpoint(None, checkpoint)
    expected = draws()
    draws()  # the streams move on, as training does after the checkpoint
    checkpoint = on_gpu(checkpoint)
    runner = SimpleNamespace(_resume=True, logger=SimpleNamespace(info=lambda message: None))
    hook.after_load_checkpoint(runner, checkpoint)
    assert draws() == expected
    assert len(restored) == 1 and type(restored[0]) is torch.Tensor and torch.equal(restored[0], cuda_state)


class Runner(SimpleNamespace):
    def __init__(self, work_dir):
        super().__init__(iter=4, epoch=1, work_dir=str(work_dir), saved=[])

    def save_checkpoint(self, out_dir, filename, **kwargs):
        self.saved.append(filename)


@pytest.mark.parametrize('rank', [0, 1])
def test_non_finite_loss_on_one_rank_stops_every_rank(rank, monkeypatch, tmp_path):
    """torchrun / Slurm with 2 ranks, rank 0's loss NaN: both ranks stop at the same iteration (the
    ranks' flags all-reduced), naming rank 0; each calls save_checkpoint (mmengine writes on rank 0
    only) and waits at a barrier for that file before raising. Rank 1's own loss is finite."""
    events = []

    def all_reduce(flags):  # the other rank's flag arrives: rank 0's loss was NaN
        events.append('all_reduce')
        flags[0] = 1.0

    monkeypatch.setattr(hooks, 'get_world_size', lambda: 2)
    monkeypatch.setattr(hooks, 'get_rank', lambda: rank)
    monkeypatch.setattr(hooks, 'all_reduce', all_reduce)
    monkeypatch.setattr(hooks, 'barrier', lambda: events.append(('barrier', list(runner.saved))))
    runner = Runner(tmp_path)
    loss = torch.tensor(float('nan') if rank == 0 else 0.5)
    with pytest.raises(FloatingPointError, match=r'non-finite loss on rank 0 of 2 at iteration 5 \(epoch 2\)'):
        NonFiniteLossHook().after_train_iter(runner, 0, outputs=dict(loss_cls=loss, acc=torch.tensor(1.0)))
    assert events == ['all_reduce', ('barrier', ['nonfinite_iter_5.pth'])]


def test_finite_losses_on_every_rank_go_on(monkeypatch, tmp_path):
    monkeypatch.setattr(hooks, 'get_world_size', lambda: 2)
    monkeypatch.setattr(hooks, 'get_rank', lambda: 1)
    reduced = []
    monkeypatch.setattr(hooks, 'all_reduce', reduced.append)
    runner = Runner(tmp_path)
    NonFiniteLossHook().after_train_iter(runner, 0, outputs=dict(loss_cls=torch.tensor(0.5)))
    assert runner.saved == [] and len(reduced) == 1 and reduced[0].tolist() == [0.0, 0.0]
