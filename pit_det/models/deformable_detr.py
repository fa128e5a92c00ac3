"""mmdet's Deformable DETR with a selectable multi-scale deformable attention kernel."""
from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS

from .msda import set_msda_impl


@MODELS.register_module()
class PitDeformableDETR(DeformableDETR):
    """``DeformableDETR`` (Zhu et al., arXiv 2010.04159) whose deformable attention runs on
    ``msda_impl``; everything else, the state-dict keys included, is mmdet's.

    Args:
        msda_impl: 'auto' (pit-det's CPU kernel when it builds, else mmcv's), 'fast' (pit-det's
            CPU kernel, an error if it cannot be built) or 'stock' (mmcv's code unchanged).
            On GPU every choice runs mmcv's CUDA kernel. ``set_msda_impl(model, impl)``
            switches a built model.
        **kwargs: ``DeformableDETR``'s arguments.
    """

    def __init__(self, *args, msda_impl: str = 'auto', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        set_msda_impl(self, msda_impl)
