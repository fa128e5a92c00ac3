from .coco import CheckedCocoDataset
from .sampler import SeededSampler
from .toy import CATEGORIES as TOY_CATEGORIES
from .toy import make_toy_coco
from .transforms import PadToMinSize, SafeLoadImageFromFile

__all__ = [
    'CheckedCocoDataset',
    'SeededSampler',
    'PadToMinSize',
    'SafeLoadImageFromFile',
    'TOY_CATEGORIES',
    'make_toy_coco',
]
