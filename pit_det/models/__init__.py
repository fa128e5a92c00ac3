from .build import build_detector, load_detector
from .deformable_detr import PitDeformableDETR
from .losses import PortableFocalLoss
from .msda import MSDeformAttn, msda_impl_as, record_sampling, set_msda_impl
from .pit import PiT
from .vit import ViT
from .vit_pyramid import ViTPyramid

__all__ = [
    'MSDeformAttn',
    'PiT',
    'PitDeformableDETR',
    'PortableFocalLoss',
    'ViT',
    'ViTPyramid',
    'build_detector',
    'load_detector',
    'msda_impl_as',
    'record_sampling',
    'set_msda_impl',
]
