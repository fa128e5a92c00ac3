"""One home for weight files and checkpoints: safe reading (:mod:`.reading`), strict pretrained
loading (:mod:`.pretrained`), the state-dict comparison (:mod:`.compare`), atomic writing
(:mod:`.writing`) and the resume lookup (:mod:`.resume`).

Importing pit-det (configs do, through ``custom_imports``) installs the safe reader as mmengine's
loader for local files and the atomic writer as its local file backend, so ``load_from``,
``--resume``, ``init_cfg``, ``tools/test.py`` and mmdet's ``init_detector`` never unpickle code,
and no checkpoint is left half-written.
"""

from mmengine.fileio import register_backend
from mmengine.runner import CheckpointLoader

from ..errors import CheckpointError
from .compare import StateDictMismatch, state_dict_mismatch
from .pretrained import load_pretrained, strip_prefix
from .reading import SAFE_GLOBALS, StateDict, load_checkpoint_file, read_state_dict, safe_torch_load
from .resume import checkpoint_seed, find_resumable_checkpoint
from .writing import AtomicLocalBackend

__all__ = [
    'AtomicLocalBackend',
    'CheckpointError',
    'SAFE_GLOBALS',
    'StateDict',
    'StateDictMismatch',
    'checkpoint_seed',
    'find_resumable_checkpoint',
    'load_checkpoint_file',
    'load_pretrained',
    'read_state_dict',
    'safe_torch_load',
    'state_dict_mismatch',
    'strip_prefix',
]

CheckpointLoader.register_scheme(prefixes='', force=True)(load_checkpoint_file)
register_backend('local', AtomicLocalBackend, force=True)
