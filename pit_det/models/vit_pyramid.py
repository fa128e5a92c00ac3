"""ViT backbone with a simple feature pyramid on its chosen block outputs.

A plain ViT gives every map at stride 16. Following ViTDet (Li et al., "Exploring Plain
Vision Transformer Backbones for Object Detection", ECCV 2022, arXiv:2203.16527), each map
is resampled by a fixed factor: 2x by a learned 2 x 2 transposed convolution, 0.5x by
2 x 2 max-pooling, 1x unchanged. With the default factors layers 2, 8 and 12 become a
stride 8 / 16 / 32 pyramid like PiT's stages.
"""

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import nn

from .vit import ViT


class HalveMaxPool(nn.Module):
    """2 x 2 max-pooling with stride 2 that keeps a last odd row / column, as
    ``MaxPool2d(2, 2, ceil_mode=True)`` does: (B, C, h, w) -> (B, C, ceil(h / 2), ceil(w / 2)).

    The odd side is padded with -inf instead: the same maxima, and ``torch.export`` of a free
    height and width does not meet ceil_mode's output-size rule, which its shape solver (torch
    2.13) cannot prove for every size.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, w % 2, 0, h % 2), value=float('-inf'))
        return F.max_pool2d(x, kernel_size=2, stride=2)


def _resampler(dim: int, factor: float) -> nn.Module:
    if factor == 2.0:
        return nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)
    if factor == 1.0:
        return nn.Identity()
    if factor == 0.5:
        return HalveMaxPool()
    raise ValueError(f'scale factor {factor!r} not supported; use 2.0, 1.0 or 0.5')


@MODELS.register_module()
class ViTPyramid(ViT):
    """:class:`ViT` whose i-th output is resampled by ``scale_factors[i]``.

    Args:
        scale_factors: One factor per ``out_indices`` entry, each 2.0, 1.0 or 0.5.
        **kwargs: Arguments of :class:`ViT`.

    Attributes:
        out_strides: ``patch_size / scale_factors[i]`` for each output.
    """

    detection_layers = ('resample.',)  # ImageNet ViT files have no resamplers

    def __init__(self, scale_factors: Sequence[float] = (2.0, 1.0, 0.5), **kwargs) -> None:
        super().__init__(**kwargs)
        if len(scale_factors) != len(self.out_indices):
            raise ValueError(
                f'scale_factors={tuple(scale_factors)} needs one factor per out_indices entry {self.out_indices}'
            )
        self.resample = nn.ModuleList([_resampler(c, f) for c, f in zip(self.out_channels, scale_factors)])
        self.out_strides = tuple(int(self.patch_size / f) for f in scale_factors)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, ceil(H / 16) * f, ceil(W / 16) * f) map per factor f
        (rounded up for f = 0.5)."""
        return tuple(r(o) for r, o in zip(self.resample, super().forward(x)))
