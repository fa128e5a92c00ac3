from .pit import PiT
from .vit import ViT

__all__ = ['PiT', 'ViT']
