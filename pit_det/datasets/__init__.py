from .coco import CheckedCocoDataset
from .toy import CATEGORIES as TOY_CATEGORIES
from .toy import make_toy_coco
from .transforms import PadToMinSize, SafeLoadImageFromFile

__all__ = ['CheckedCocoDataset', 'PadToMinSize', 'SafeLoadImageFromFile', 'TOY_CATEGORIES', 'make_toy_coco']
