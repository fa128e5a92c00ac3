"""pit-det: PiT and ViT backbones for Deformable DETR in MMDetection 3.x.

Importing the package registers its modules in mmdet's registries and changes nothing else. The
configs load it with ``custom_imports = dict(imports=['pit_det.integration'], ...)``, which also
makes mmengine read checkpoints safely and write them atomically (:mod:`pit_det.integration`).
"""

from . import datasets, hooks  # noqa: F401  registers datasets, transforms and hooks
from .models import PiT, ViT, ViTPyramid

__version__ = '0.1.0'
__all__ = ['PiT', 'ViT', 'ViTPyramid', '__version__']
