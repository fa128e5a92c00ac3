from .coco import CheckedCocoDataset
from .sampler import SeededSampler
from .toy import CATEGORIES as TOY_CATEGORIES
from .toy import make_toy_coco
from .transforms import PadToMinSize, SafeLoadImageFromFile, SafeResize

__all__ = [
    'CheckedCocoDataset',
    'SeededSampler',
    'PadToMinSize',
    'SafeLoadImageFromFile',
    'SafeResize',
    'TOY_CATEGORIES',
    'make_toy_coco',
]
