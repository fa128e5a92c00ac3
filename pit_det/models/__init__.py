from .pit import PiT
from .vit import ViT
from .vit_pyramid import ViTPyramid

__all__ = ['PiT', 'ViT', 'ViTPyramid']
