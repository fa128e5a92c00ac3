"""``torch.export`` of a detector, pit-det's deformable-attention op kept in the graph."""
import torch
from torch import Tensor, nn

from ..errors import PitDetError
from ..models import msda_impl_as
from .wrappers import exportable


def export_program(detector: nn.Module, image: Tensor, msda_impl: str = 'fast', postprocess: bool = False,
                   dynamic: bool = False) -> torch.export.ExportedProgram:
    """``torch.export`` of the detector on ``image``'s shape (``dynamic``: any height and width).

    With ``msda_impl='fast'`` deformable attention is the custom op ``pit_det::ms_deform_attn``.
    """
    with torch.no_grad(), msda_impl_as(detector, msda_impl):
        return torch.export.export(exportable(detector, postprocess), (image,), strict=False,
                                   dynamic_shapes=dynamic_image_shapes() if dynamic else None)


def dynamic_image_shapes(min_size: int = 256, max_size: int = 4096) -> tuple:
    """Height and width free within [min_size, max_size]; batch 1. The lower bound keeps the
    encoder tokens above the shipped configs' 300 queries (so one graph covers the range)."""
    return ({2: torch.export.Dim('height', min=min_size, max=max_size),
             3: torch.export.Dim('width', min=min_size, max=max_size)},)


def min_dynamic_size(detector: nn.Module, step: int = 32, max_size: int = 4096) -> int:
    """Smallest square side (a multiple of ``step``) at which the detector's encoder gets at least
    ``num_queries`` tokens: below it prediction takes fewer queries (another graph)."""
    detector.eval()
    for size in range(step, max_size + 1, step):
        with torch.no_grad():
            feats = detector.extract_feat(torch.zeros(1, 3, size, size))
        if sum(f.shape[-2] * f.shape[-1] for f in feats) >= detector.num_queries:
            return size
    raise PitDetError(f'no input up to {max_size} px gives {detector.num_queries} encoder tokens')
