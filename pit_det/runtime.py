"""Glue between the tools and mmengine: data-root override and safe checkpoint loading.

mmengine 0.10.7 reads checkpoints with a bare ``torch.load``; since torch 2.6 that means
``weights_only=True``, which refuses mmengine's own checkpoints (they pickle a
``HistoryBuffer``, numpy scalars and the like), so ``--resume`` and ``load_from`` break.
:func:`install_checkpoint_loader` replaces mmengine's local-file loader with one that

1. reads with ``weights_only=True``, allowing the few plain classes mmengine checkpoints
   contain (no code can run), and
2. falls back to full unpickling **only** for files the caller marked as trusted: the
   run's own checkpoints in its work dir, or a file the user named with ``--resume``.
   That fallback is logged. Any other file that needs it is refused with a clear error.
"""
import os
import os.path as osp
import pickle
from typing import Iterable, List

import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader

# Plain data classes found in mmengine / mmdet checkpoints (message hub, meta).
SAFE_GLOBALS: List = [
    HistoryBuffer, np.ndarray, np.dtype, np.core.multiarray._reconstruct, np.core.multiarray.scalar,
    type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64)), type(np.dtype(np.bool_)),
    ConfigDict,
]

_trusted: List[str] = []


def _is_trusted(path: str) -> bool:
    real = osp.realpath(path)
    return any(real == t or real.startswith(t + os.sep) for t in _trusted)


def load_checkpoint_file(filename: str, map_location=None) -> dict:
    """mmengine's local loader, made safe as described in the module docstring."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not _is_trusted(filename):
            raise RuntimeError(
                f'{filename}: refused to unpickle objects beyond tensors and plain data (weights_only=True). '
                f'Only this run\'s own checkpoints (work dir, or --resume PATH) may be fully unpickled. '
                f'Detail: {str(err).splitlines()[0]}') from err
        print_log(f'{filename}: trusted checkpoint of this run needs full unpickling '
                  f'({str(err).splitlines()[0]}); loading with weights_only=False', logger='current')
        return torch.load(filename, map_location=map_location, weights_only=False)


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
