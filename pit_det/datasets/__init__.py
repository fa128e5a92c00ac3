from .toy import CATEGORIES as TOY_CATEGORIES
from .toy import make_toy_coco

__all__ = ['TOY_CATEGORIES', 'make_toy_coco']
