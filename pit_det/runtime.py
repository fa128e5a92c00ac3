"""Glue between the tools and mmengine: data-root override, safe checkpoint loading,
atomic checkpoint writes, resumable-checkpoint lookup and distributed runs on CPU.

mmengine 0.10.7 reads checkpoints with a bare ``torch.load``; since torch 2.6 that means
``weights_only=True``, which refuses mmengine's own checkpoints (they pickle a
``HistoryBuffer``, numpy scalars and the like), so ``--resume`` and ``load_from`` break.
:func:`install_checkpoint_loader` replaces mmengine's local-file loader with one that

1. fully unpickles **only** files the caller marked as trusted: the run's own checkpoints
   in its work dir, or the file the user named with ``--resume`` (logged);
2. reads every other file with ``weights_only=True``, allowing the few plain classes that
   mmengine checkpoints contain. Their message hub also pickles bound methods through
   ``getattr``; that global is mapped to an inert stand-in returning ``None``, so the
   weights load and no attribute lookup or call can be smuggled in. A file that needs
   anything else is refused with an error naming it.
"""
import os
import os.path as osp
import re
import secrets
import zipfile
from typing import Iterable, List, Optional

import torch
from mmengine.config import Config
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from .checkpoint import safe_torch_load

_trusted: List[str] = []


def _is_trusted(path: str) -> bool:
    real = osp.realpath(path)
    return any(real == t or real.startswith(t + os.sep) for t in _trusted)


def load_checkpoint_file(filename: str, map_location=None) -> dict:
    """mmengine's local loader, made safe as described in the module docstring."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if _is_trusted(filename):
        print_log(f'{filename}: checkpoint of this run, fully unpickled (weights_only=False)', logger='current')
        return torch.load(filename, map_location=map_location, weights_only=False)
    return safe_torch_load(filename, map_location=map_location)


def install_checkpoint_loader(trusted_dirs_or_files: Iterable[str] = ()) -> None:
    """Register :func:`load_checkpoint_file` as mmengine's loader for local paths and
    mark ``trusted_dirs_or_files`` as the only places where full unpickling is allowed."""
    _trusted[:] = [osp.realpath(p) for p in trusted_dirs_or_files if p]
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_checkpoint_file)


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataset and COCO evaluator of ``cfg`` at ``data_root`` (standard COCO
    layout), keeping each dataset's relative ``ann_file`` and image prefix."""
    data_root = data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(loader) is None:
            continue
        dataset = cfg[loader]['dataset']
        while 'dataset' in dataset:  # wrappers such as RepeatDataset
            dataset = dataset['dataset']
        dataset['data_root'] = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        ev = cfg.get(evaluator)
        if ev is not None and ev.get('ann_file'):
            ev['ann_file'] = data_root + 'annotations/' + osp.basename(ev['ann_file'])


def setup_cpu_distributed(cfg: Config) -> None:
    """Make ``cfg.launcher='pytorch'`` work without GPUs (torchrun on CPU, gloo).

    mmengine 0.10.7 always calls ``torch.cuda.set_device`` when it initialises the process
    group and wraps the model in DDP with ``device_ids=[LOCAL_RANK]``; both fail on CPU. Here
    the gloo group is initialised first (mmengine then skips its own) and DDP gets
    ``device_ids=None``, as CPU modules require. No-op with CUDA or without a launcher.
    """
    if torch.cuda.is_available():
        return
    cfg.env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('launcher', 'none') == 'none':
        return
    if cfg.launcher != 'pytorch':
        raise RuntimeError(f'launcher {cfg.launcher!r} needs GPUs; on CPU use torchrun (--launcher pytorch)')
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel', broadcast_buffers=False)
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, writing each file to a temporary name in the same
    folder and renaming it into place: a run killed while saving a checkpoint leaves the
    previous file intact, never a truncated one under the final name."""

    def put(self, obj: bytes, filepath) -> None:
        filepath = str(filepath)
        folder = osp.dirname(filepath) or '.'
        os.makedirs(folder, exist_ok=True)
        tmp = osp.join(folder, f'.{osp.basename(filepath)}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
        # Mode 0666 less the umask, as a plain open() would give (mkstemp's 0600 would hide
        # checkpoints from the rest of a group on shared storage).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise


def install_atomic_checkpoint_writes() -> None:
    """Make every local-file write of mmengine (checkpoints included) atomic."""
    register_backend('local', AtomicLocalBackend, force=True)


def _is_complete_checkpoint(path: str) -> bool:
    """A torch checkpoint is a zip archive; a truncated one has no central directory."""
    return osp.isfile(path) and zipfile.is_zipfile(path)


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` should continue from: the one named in ``last_checkpoint``
    if complete, else the newest complete ``epoch_*.pth`` / ``iter_*.pth`` in ``work_dir``."""
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip()
        if named and _is_complete_checkpoint(named):
            return named
    candidates = [osp.join(work_dir, f) for f in os.listdir(work_dir) if re.fullmatch(r'(epoch|iter)_\d+\.pth', f)] \
        if osp.isdir(work_dir) else []
    candidates = sorted((c for c in candidates if _is_complete_checkpoint(c)), key=osp.getmtime)
    return candidates[-1] if candidates else None


def load_config(path: str, launcher: str = 'none', cfg_options: Optional[dict] = None,
                data_root: Optional[str] = None, work_dir: Optional[str] = None) -> Config:
    """The config as the tools use it: command-line overrides merged, data root moved,
    work dir defaulting to ``work_dirs/<config name>``, CPU distributed set up."""
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root:
        set_data_root(cfg, data_root)
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    setup_cpu_distributed(cfg)  # gloo instead of NCCL when there is no GPU
    return cfg
