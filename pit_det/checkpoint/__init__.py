"""One home for weight files and checkpoints: safe reading (:mod:`.reading`), strict pretrained
loading (:mod:`.pretrained`), the state-dict comparison (:mod:`.compare`), atomic writing
(:mod:`.writing`) and the resume lookup (:mod:`.resume`).

:func:`pit_det.integration.install` makes the safe reader mmengine's loader for local files and the
atomic writer its local file backend; importing this package does not.
"""

from ..errors import CheckpointError
from .compare import StateDictMismatch, require_fit, state_dict_mismatch
from .pretrained import load_pretrained, require_pretrained_loaded, strip_prefix
from .reading import SAFE_GLOBALS, StateDict, load_checkpoint_file, read_checkpoint, read_state_dict, safe_torch_load
from .resume import find_resumable_checkpoint, resumable_meta
from .writing import AtomicLocalBackend

__all__ = [
    'AtomicLocalBackend',
    'CheckpointError',
    'SAFE_GLOBALS',
    'StateDict',
    'StateDictMismatch',
    'find_resumable_checkpoint',
    'load_checkpoint_file',
    'load_pretrained',
    'read_checkpoint',
    'read_state_dict',
    'require_fit',
    'require_pretrained_loaded',
    'resumable_meta',
    'safe_torch_load',
    'state_dict_mismatch',
    'strip_prefix',
]
