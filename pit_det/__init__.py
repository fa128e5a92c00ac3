"""pit-det: PiT and ViT backbones for Deformable DETR in MMDetection 3.x.

Importing the package registers its modules in mmdet's registries; configs load it with
``custom_imports = dict(imports=['pit_det'], allow_failed_imports=False)``.
"""

from . import (  # noqa: F401  registers datasets, transforms and hooks
    checkpoint,  # noqa: F401  mmengine reads local checkpoints safely and writes them atomically
    datasets,
    hooks,
    inference,  # noqa: F401  mmdet's DetInferencer accepts pit-det's image loader
)
from .models import PiT, ViT, ViTPyramid

__version__ = '0.1.0'
__all__ = ['PiT', 'ViT', 'ViTPyramid', '__version__']
