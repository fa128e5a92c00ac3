"""pit-det's changes to mmengine and mmdet, made by one explicit call: :func:`install`.

``import pit_det`` only registers pit-det's modules in mmdet's registries, as mmdet's own modules do.
These two changes replace library behaviour, so they are made here and nowhere else:

1. mmengine's loader for local checkpoint files becomes pit-det's weights-only reader
   (:func:`pit_det.checkpoint.load_checkpoint_file`), and its local file backend the atomic writer
   (:class:`pit_det.checkpoint.AtomicLocalBackend`): ``load_from``, ``--resume``, ``init_cfg``,
   ``tools/test.py`` and mmdet's ``init_detector`` never unpickle code, and no checkpoint is left
   half-written.
2. mmdet 3.3.0's ``DetInferencer`` accepts pit-det's image loader (:mod:`pit_det.inference`).

The configs make the call by naming this module in ``custom_imports`` (which can only import, so
importing it calls :func:`install`); every tool loads a config. Code that builds pit-det models
without a config calls ``pit_det.integration.install()``. The call is idempotent.
"""

from mmengine.fileio import register_backend
from mmengine.runner import CheckpointLoader

from .checkpoint import AtomicLocalBackend, load_checkpoint_file
from .inference import accept_pit_det_loader, accepts_pit_det_loader

__all__ = ['install', 'installed']


def installed() -> bool:
    """True once :func:`install` has run in this interpreter (and nothing has undone it since)."""
    return CheckpointLoader._schemes.get('') is load_checkpoint_file and accepts_pit_det_loader()


def install() -> None:
    """Make mmengine read and write checkpoints safely and mmdet's inferencer take pit-det's loader."""
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_checkpoint_file)
    register_backend('local', AtomicLocalBackend, force=True)
    accept_pit_det_loader()


install()
