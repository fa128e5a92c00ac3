"""Safe reading of pretrained weight files and strict loading into a backbone.

Pretrained files come from the internet, so they are read with
``torch.load(..., weights_only=True)``: tensors, plain containers and the few plain
classes in :data:`SAFE_GLOBALS`, never arbitrary pickled code. A file that needs more
than that is refused.
"""
import collections
import pickle
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import ConfigDict
from mmengine.logging import print_log
from torch import nn

from .errors import CheckpointError

_np_core = getattr(np, '_core', None) or np.core  # numpy 2 renamed np.core

StateDict = Dict[str, torch.Tensor]


def _inert_getattr(*args) -> None:
    """Stands in for ``getattr`` when unpickling untrusted checkpoints: mmengine's
    ``HistoryBuffer`` pickles its statistics methods as ``getattr(cls, name)``."""
    return None


class _TrainingRecord:
    """Stands in for mmengine's ``HistoryBuffer`` (loss history of the message hub) when
    unpickling untrusted checkpoints: keeps the data, runs no code of the real class, and
    leaves the real class's shared state untouched."""


# Plain data classes found in mmengine / mmdet checkpoints (message hub, meta). Only the
# run's own checkpoints, read for resuming, are unpickled with the real classes.
SAFE_GLOBALS: List = [
    collections.Counter, ConfigDict, np.ndarray, np.dtype, _np_core.multiarray._reconstruct,
    _np_core.multiarray.scalar,
    *(type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                  np.uint32, np.uint64, np.float16, np.float32, np.float64)),
    (_TrainingRecord, 'mmengine.logging.history_buffer.HistoryBuffer'),
    (_inert_getattr, '__builtin__.getattr'), (_inert_getattr, 'builtins.getattr'),
]


def safe_torch_load(path: Union[str, Path], map_location=None):
    """``torch.load(weights_only=True)`` with :data:`SAFE_GLOBALS` allowed.

    Raises:
        CheckpointError: the file needs unpickling beyond that (it could run code).
    """
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'{path}: refused to unpickle objects beyond tensors and plain data (weights_only=True), which '
            f'could run code. Only a run\'s own checkpoints, when resuming it, are fully unpickled; re-save '
            f'just the state_dict from a trusted environment. Detail: {str(err).splitlines()[0]}') from err


def read_state_dict(path: Union[str, Path]) -> StateDict:
    """Read a weight file (``.pth``/``.pt``/``.bin`` pickle or ``.safetensors``) safely.

    Wrappers used by common trainers are removed: ``{'model': ...}`` (DeiT, PiT),
    ``{'state_dict': ...}`` (mmengine, Lightning) and ``{'module': ...}``, and the
    ``module.`` prefix left by DistributedDataParallel.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is not a weight file or carries pickled code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        obj = load_file(str(path))
    else:
        try:
            obj = safe_torch_load(path, map_location='cpu')
        except CheckpointError:
            raise
        except Exception as err:  # zip / EOF / magic-number errors from a corrupt or foreign file
            raise CheckpointError(f'{path}: not a readable PyTorch weight file ({err})') from err
    for wrapper in ('state_dict', 'model', 'module'):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f'{path}: expected a dict of tensors, got {type(obj).__name__}')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in obj.items()}


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """Keep only keys under ``prefix`` (e.g. ``'backbone.'`` of a detector) without it;
    the state dict is returned unchanged when no key has the prefix."""
    if not any(k.startswith(prefix) for k in state_dict):
        return state_dict
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_pretrained(model: nn.Module, path: Union[str, Path],
                    filter_fn: Callable[[StateDict], StateDict],
                    keep_init: Sequence[str] = (), logger: Optional[str] = 'current') -> None:
    """Load backbone weights from ``path`` through ``filter_fn`` into ``model``.

    Every parameter and buffer of ``model`` must be present, except those under a
    ``keep_init`` prefix (layers the detection backbone adds on top of the ImageNet
    model): those keep their own initialisation when absent, and the log names them.
    Other missing keys are an error naming them. Keys the model does not use are logged.

    Raises:
        CheckpointError: missing keys or mismatched shapes, each named.
    """
    state = filter_fn(strip_prefix(read_state_dict(path), 'backbone.'))
    own = model.state_dict()
    absent = sorted(set(own) - set(state))
    kept = [k for k in absent if k.startswith(tuple(keep_init))]
    missing = [k for k in absent if k not in kept]
    if missing:
        raise CheckpointError(f'{path}: {len(missing)} backbone weights missing from the checkpoint: {missing}')
    unexpected = sorted(set(state) - set(own))
    bad_shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in own if k in state and state[k].shape != own[k].shape]
    if bad_shapes:
        raise CheckpointError(f'{path}: shape mismatch (wrong arch, or distilled flag?): {bad_shapes}')
    model.load_state_dict({k: state[k] for k in own if k in state}, strict=not kept)
    print_log(f'loaded {len(own) - len(kept)} tensors from {path}'
              + (f'; {len(kept)} not in it keep their own init (added for detection): {kept}' if kept else '')
              + (f'; ignored {len(unexpected)} unused keys: {unexpected}' if unexpected else ''), logger=logger)
