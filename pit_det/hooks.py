"""Training hooks."""

import json
import os.path as osp
import random
from typing import Optional

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce, barrier, get_rank, get_world_size
from mmengine.hooks import Hook


@HOOKS.register_module()
class ValidateBeforeTrainHook(Hook):
    """Run the validation loop once before the first training iteration and write its
    metrics to ``<work_dir>/metrics_before_train.json``: the untrained baseline that
    shows how much training changed. Skipped when resuming (it would not be untrained)."""

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        if runner.iter > 0 or runner.val_loop is None:
            return
        metrics = runner.val_loop.run()
        runner.logger.info(f'metrics before training: {metrics}')
        if runner.rank == 0:
            with open(osp.join(runner.work_dir, 'metrics_before_train.json'), 'w') as f:
                json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first non-finite loss instead of training on NaNs.

    Saves ``<work_dir>/nonfinite_iter_<N>.pth`` (model and optimizer as they are after
    the failing iteration, for inspection) and raises ``FloatingPointError`` naming the
    iteration, epoch and loss terms. The checkpoint is not recorded as the latest one, so
    ``--resume`` continues from the last good checkpoint.

    With several processes (torchrun, Slurm) each rank computes its own losses (mmengine does not
    reduce them before the hooks), so the ranks agree first, with one all-reduce of a flag per
    rank: all of them stop at the same iteration, naming the ranks whose loss was not finite. Rank 0
    writes the checkpoint (``save_checkpoint`` is master-only) and every rank waits for it before
    raising: torchrun stops the other ranks at the first one that exits. The cost is that all-reduce
    of ``world_size`` floats per iteration, and no new wait for the GPU: mmengine 0.10.7's
    ``RuntimeInfoHook`` already reads every loss with ``.item()`` each iteration (the all-reduce's
    latency is not yet measured on GPUs).
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs:
            return
        losses = {k: v for k, v in outputs.items() if 'loss' in k and torch.is_tensor(v)}
        bad = {k: float(v) for k, v in losses.items() if not torch.isfinite(v).all()}
        ranks = self._ranks_with_bad_losses(bool(bad), next(iter(losses.values())).device if losses else 'cpu')
        if not ranks:
            return
        it = runner.iter + 1
        name = f'nonfinite_iter_{it}.pth'
        runner.save_checkpoint(runner.work_dir, name, save_optimizer=True, save_param_scheduler=True)
        where = ''
        if get_world_size() > 1:
            barrier()  # rank 0's file is whole before any rank exits
            where = f' on rank {", ".join(map(str, ranks))} of {get_world_size()}'
        raise FloatingPointError(
            f'non-finite loss{where} at iteration {it} (epoch {runner.epoch + 1}): {bad or "finite on this rank"}; '
            f'state saved to {osp.join(runner.work_dir, name)} for inspection'
        )

    @staticmethod
    def _ranks_with_bad_losses(bad: bool, device) -> list:
        """The ranks whose loss was not finite this iteration (this process alone: ``[0]`` or ``[]``)."""
        if get_world_size() == 1:
            return [0] if bad else []
        flags = torch.zeros(get_world_size(), device=device)
        flags[get_rank()] = float(bad)
        all_reduce(flags)  # sum: every rank's flag on every rank
        return [rank for rank, flag in enumerate(flags.tolist()) if flag]


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make a resumed run draw the same random numbers as an uninterrupted one (mmengine restores
    model, optimizer, schedule and data order only).

    * The training process's Python, numpy and torch random states (dropout) are stored in every
      checkpoint and restored on resume, and on a GPU the current device's CUDA state too (exact with
      one GPU; with several, every rank continues from rank 0's, the one the checkpoint holds).
    * Each dataloader gets a generator of its own, seeded with the run's seed: torch's DataLoader
      draws its workers' base seed from the global generator whenever it creates an iterator
      (every epoch, only the first epoch with persistent workers, every validation), and a resumed
      run creates them at other points than the uninterrupted one.
    * The augmentations are seeded per sample by :class:`~pit_det.datasets.SeededSampler`.
    """

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        loaders = [runner.train_dataloader] + ([runner.val_loop.dataloader] if runner.val_loop is not None else [])
        for loader in loaders:
            loader.generator = torch.Generator().manual_seed(runner.seed)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Tensors and plain Python values only, so checkpoints stay readable with weights_only=True.
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state = dict(
            python=random.getstate(),
            numpy=(name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            torch=torch.get_rng_state(),
        )
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # a CPU run on a GPU machine starts no CUDA
            state['cuda'] = torch.cuda.get_rng_state()
        checkpoint.setdefault('meta', {})['rng_state'] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('rng_state')
        if state is None or not runner._resume:  # only a resumed run continues the stream
            return
        # mmengine's resume loads the checkpoint onto the training device (map_location=get_device()):
        # on a GPU these tensors are CUDA tensors, which numpy and torch's generators refuse.
        name, keys, pos, has_gauss, gauss = state['numpy']
        random.setstate(state['python'])
        np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state['torch'].cpu())
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state['cuda'].cpu())
        runner.logger.info('restored the random number generator states of the checkpoint')


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """A progress bar of the whole training run on stderr: iteration, elapsed time, ETA and the
    latest loss, as tqdm draws it. Only where stderr is a terminal (``disable=None``), on rank 0;
    mmengine's log lines are written as before, to the log file and the console.

    Args:
        smoothing: tqdm's rate smoothing (0: average over the run, 1: last iteration only).
        disable: None: draw only on a terminal; False: always; True: never.
    """

    priority = 'VERY_LOW'

    def __init__(self, smoothing: float = 0.1, disable: Optional[bool] = None) -> None:
        self.smoothing, self.disable = smoothing, disable
        self.bar = None

    def before_train(self, runner) -> None:
        if runner.rank != 0:
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=runner.max_iters,
            initial=runner.iter,
            desc='training',
            unit='it',
            smoothing=self.smoothing,
            disable=self.disable,
            dynamic_ncols=True,
        )

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.bar is None:
            return
        loss = (outputs or {}).get('loss')
        if loss is not None and not self.bar.disable:
            loss = loss.detach() if isinstance(loss, torch.Tensor) else loss
            self.bar.set_postfix_str(
                f'epoch {runner.epoch + 1}/{runner.max_epochs} loss {float(loss):.3f}', refresh=False
            )
        self.bar.update(1)

    def after_train(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
