"""Reading weight files and checkpoints without running code from them.

Every file, pretrained weights and the run's own checkpoints alike, is read with
``torch.load(..., weights_only=True)``: tensors, plain containers, numbers and strings, and the few
plain-data classes in :data:`SAFE_GLOBALS`. Nothing is fully unpickled, so a crafted file cannot
run code, whether it is downloaded, dropped into a work dir or named by ``last_checkpoint``.

mmengine checkpoints pickle their message hub's ``HistoryBuffer`` objects (with their statistics
methods as ``getattr(HistoryBuffer, 'mean')``) and numpy arrays and scalars. The buffers are read
into inert :class:`_HistoryBufferRecord` stand-ins, whose ``getattr`` may only name a statistics
method, and then rebuilt through ``HistoryBuffer``'s public constructor from their numbers alone:
none of mmengine's code runs on the file's data, and the class's shared state is left alone.
"""

import argparse
import collections
import pickle
import pickletools
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.config import ConfigDict
from mmengine.logging import HistoryBuffer

from ..errors import CheckpointError

_np_core = getattr(np, '_core', None) or np.core  # numpy 2 renamed np.core

StateDict = Dict[str, torch.Tensor]


class _HistoryBufferRecord:
    """What a pickled mmengine ``HistoryBuffer`` holds, as inert data: ``max_length``,
    ``_log_history``, ``_count_history`` and ``statistics_methods``."""


def _statistics_method(owner, name):
    """Stands in for ``getattr`` while unpickling: only ``getattr(HistoryBuffer, <identifier>)``,
    which mmengine pickles for the buffer's statistics methods, and it returns the name only."""
    if owner is not _HistoryBufferRecord or not isinstance(name, str) or not name.isidentifier():
        raise pickle.UnpicklingError(f'getattr({owner!r}, {name!r}) is not allowed')
    return name


def _empty_bytes(*args) -> bytes:
    """Stands in for ``bytes`` while unpickling: pickle protocol 2 writes ``b''`` as ``bytes()``,
    which an empty numpy array (an empty ``HistoryBuffer``) needs; with arguments it is refused."""
    if args:
        raise pickle.UnpicklingError(f'bytes{args!r} is not allowed')
    return b''


_NUMPY_DTYPES = (
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
)

# Plain-data globals found in mmengine / mmdet checkpoints, allowed as they are: numpy arrays and
# scalars in meta and runtime info, ``Counter`` milestones of the schedulers, ``ConfigDict``.
ALLOWED_GLOBALS: List = [
    argparse.Namespace,  # the training arguments that DeiT's and timm's checkpoints keep beside the weights
    collections.Counter,
    ConfigDict,
    np.ndarray,
    np.dtype,
    _np_core.multiarray._reconstruct,
    _np_core.multiarray.scalar,
    *(type(np.dtype(t)) for t in _NUMPY_DTYPES),
    # The same numpy functions under the names numpy 1 pickled them with.
    (_np_core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
    (_np_core.multiarray.scalar, 'numpy.core.multiarray.scalar'),
]
# Globals replaced while unpickling by pit-det's stand-ins, which rebuild plain data and refuse
# anything else: the message hub's ``HistoryBuffer`` records, the ``getattr`` that names their
# statistics methods, and ``bytes()`` (an empty numpy array); under Python 2 and 3 names.
STAND_INS: List = [
    (_HistoryBufferRecord, 'mmengine.logging.history_buffer.HistoryBuffer'),
    (_statistics_method, '__builtin__.getattr'),
    (_statistics_method, 'builtins.getattr'),
    (_empty_bytes, '__builtin__.bytes'),
    (_empty_bytes, 'builtins.bytes'),
]
# What ``torch.load(weights_only=True)`` may meet in a checkpoint pit-det reads.
SAFE_GLOBALS: List = [*ALLOWED_GLOBALS, *STAND_INS]


def _pickle_opcode(reason: str) -> Optional[str]:
    """The opcode named by the weights-only unpickler's ``'Unsupported operand N'`` (torch 2.13,
    torch/_weights_only_unpickler.py): ``'STACK_GLOBAL (147)'`` for one it refuses (those that
    import or call code, and protocol 4's FRAME: Python's own pickle.dump), ``''`` for a byte
    that is no opcode at all (a text file), None for another reason."""
    found = re.fullmatch(r'Unsupported operand (\d+)', reason.strip())
    if found is None:
        return None
    code = int(found.group(1))
    op = pickletools.code2op.get(chr(code)) if code < 256 else None
    return f'{op.name} ({code})' if op else ''


def safe_torch_load(path: Union[str, Path], map_location=None, **kwargs):
    """``torch.load(weights_only=True)`` with :data:`SAFE_GLOBALS` allowed; message-hub records
    are rebuilt into real ``HistoryBuffer`` objects.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file needs a global beyond the allowlist (named, with the file), or
            is not a readable PyTorch file.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as err:
        # torch wraps the reason in boilerplate about its weights_only default; keep the reason.
        found = re.search(r'GLOBAL ([\w.]+)', str(err))
        reasons = [
            line
            for line in str(err).splitlines()
            if line.strip()
            and not line.startswith(('Weights only load failed', 'Please file an issue', 'Check the documentation'))
        ]
        name = found.group(1) if found else ''
        name = name if '.' in name else f'builtins.{name}'  # torch 2.6 names it builtins.print, 2.13 print
        what = f'the global {name}' if found else (reasons or [str(err)])[0]
        opcode = _pickle_opcode(what)
        if opcode == '':  # its bytes are no pickle: a text file, a stray byte
            raise CheckpointError(f'{path}: not a readable PyTorch checkpoint ({what})') from err
        if opcode:
            what = f'the pickle opcode {opcode}'
        raise CheckpointError(
            f"{path}: refused: it needs {what}, which is not on pit-det's allowlist of plain data "
            f"(tensors, numbers, strings, containers, numpy arrays, mmengine's message hub); "
            f'unpickling it could run code. If the file is yours, load it where you trust it and '
            f're-save plain tensors: torch.save(model.state_dict(), ...).'
        ) from err
    except Exception as err:  # zip / EOF / magic-number errors from a corrupt or foreign file
        raise CheckpointError(f'{path}: not a readable PyTorch checkpoint ({err})') from err
    return _rebuild_history_buffers(obj, path)


def _rebuild_history_buffers(obj, path, depth: int = 0):
    """``obj`` with every :class:`_HistoryBufferRecord` replaced by a ``HistoryBuffer`` built
    from its numbers (containers are walked; tensors are left alone)."""
    if isinstance(obj, _HistoryBufferRecord):
        state = vars(obj)
        logs, counts, max_length = (state.get(k) for k in ('_log_history', '_count_history', 'max_length'))
        if not (
            isinstance(logs, np.ndarray)
            and isinstance(counts, np.ndarray)
            and isinstance(max_length, int)
            and logs.dtype.kind in 'biuf'
            and counts.dtype.kind in 'biuf'
        ):
            raise CheckpointError(f'{path}: a message-hub HistoryBuffer holds something other than numbers')
        return HistoryBuffer(logs.tolist(), counts.tolist(), max_length)
    if depth > 16 or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _rebuild_history_buffers(value, path, depth + 1)
    elif isinstance(obj, list):
        obj[:] = [_rebuild_history_buffers(v, path, depth + 1) for v in obj]
    return obj


# Where trainers keep the weights in a checkpoint dict, in the order they are looked for:
# mmengine and Lightning (``state_dict``), DeiT, PiT and DETR (``model``), a saved DDP (``module``).
WEIGHT_KEYS = ('state_dict', 'model', 'module')


def _weights_in(checkpoint):
    """The value under the first of :data:`WEIGHT_KEYS` that holds a dict, else ``checkpoint``."""
    if isinstance(checkpoint, dict):
        for key in WEIGHT_KEYS:
            if isinstance(checkpoint.get(key), dict):
                return checkpoint[key]
    return checkpoint


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_checkpoint_file(filename: str, map_location=None) -> dict:
    """mmengine's loader for local files (``CheckpointLoader``, prefix ''), made safe: used for
    ``load_from``, ``--resume``, ``init_cfg`` and mmdet's ``init_detector`` alike.

    A checkpoint whose weights sit under ``'model'`` or ``'module'`` (DeiT, PiT and DETR trainers)
    gets them under ``'state_dict'`` as well, where mmengine 0.10.7's ``_load_checkpoint_to_model``
    looks; else it takes the whole dict as the weights, loads nothing of the model (one unexpected
    key) and leaves it random, saying so only in a log line."""
    checkpoint = safe_torch_load(str(Path(filename).expanduser()), map_location=map_location)
    weights = _weights_in(checkpoint)
    if weights is not checkpoint and 'state_dict' not in checkpoint and weights and _is_state_dict(weights):
        return dict(checkpoint, state_dict=weights)
    return checkpoint


def read_checkpoint(path: Union[str, Path]) -> Tuple[StateDict, dict]:
    """Read a weight file (``.pth``/``.pt``/``.bin`` pickle or ``.safetensors``) safely, once.

    Returns:
        The weights, without the wrappers of :data:`WEIGHT_KEYS` and without the ``module.``
        prefix left by DistributedDataParallel; and the checkpoint's ``meta`` dict (mmengine's:
        ``dataset_meta``, ``epoch``...), ``{}`` where it has none (a safetensors file never has).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is not a weight file or carries pickled code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    if path.suffix == '.safetensors':
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except SafetensorError as err:  # a truncated or foreign file: its header does not parse
            raise CheckpointError(f'{path}: not a readable safetensors file ({err})') from None
    else:
        obj = safe_torch_load(path, map_location='cpu')
    weights = _weights_in(obj)
    if not _is_state_dict(weights):
        raise CheckpointError(f'{path}: expected a dict of tensors, got {type(weights).__name__}')
    meta = obj.get('meta') if weights is not obj else None
    return (
        {k[len('module.') :] if k.startswith('module.') else k: v for k, v in weights.items()},
        meta if isinstance(meta, dict) else {},
    )


def read_state_dict(path: Union[str, Path]) -> StateDict:
    """The weights of a weight file, as :func:`read_checkpoint` reads them."""
    return read_checkpoint(path)[0]
