"""pit-det: PiT and ViT backbones for Deformable DETR in MMDetection 3.x.

Importing the package registers its modules in mmdet's registries; configs load it with
``custom_imports = dict(imports=['pit_det'], allow_failed_imports=False)``.
"""
from . import checkpoint  # noqa: F401  mmengine reads local checkpoints safely and writes them atomically
from . import datasets, hooks  # noqa: F401  registers datasets, transforms and hooks
from .models import PiT, ViT, ViTPyramid

__version__ = '0.1.0'
__all__ = ["PiT", "ViT", "ViTPyramid", "__version__"]
