"""``torch.export`` of a detector, pit-det's deformable-attention op kept in the graph."""

import torch
from torch import Tensor, nn
from torch.torch_version import TorchVersion

from ..errors import PitDetError
from ..models import msda_impl_as
from .wrappers import exportable

# The oldest torch each export was measured to run on (tests/test_export.py, onnxscript 0.7.2);
# training, evaluation and resume run from torch 2.6 (pyproject.toml). In 2.6 the ONNX exporter
# fails on ResNet-50's batch norm. Up to 2.12.1 torch.export's shape solver cannot prove the guards
# that the padded sizes of a free height and width put on the shipped detectors (2.12.1: R50; 2.10.0
# and 2.7.1: PiT-S too); 2.13 can (2.11 was not tried).
MIN_TORCH = {'static': (2, 7), 'dynamic': (2, 13)}


def require_torch_for_export(dynamic: bool) -> None:
    """Raises:
    PitDetError: this torch is older than :data:`MIN_TORCH` for the export asked for, naming
        both versions (an old torch fails deep in its exporter instead)."""
    kind = 'dynamic' if dynamic else 'static'
    if TorchVersion(torch.__version__) < MIN_TORCH[kind]:
        need = '.'.join(map(str, MIN_TORCH[kind]))
        raise PitDetError(
            f'{"a dynamic" if dynamic else "an"} export needs torch >= {need}; this is torch '
            f'{torch.__version__} (training, evaluation and inference run on it). Install the '
            f'torch of tools/setup/constraints.txt, or export where it is installed.'
        )


def export_program(
    detector: nn.Module, image: Tensor, msda_impl: str = 'fast', postprocess: bool = False, dynamic: bool = False
) -> torch.export.ExportedProgram:
    """``torch.export`` of the detector on ``image``'s shape (``dynamic``: any height and width).

    With ``msda_impl='fast'`` deformable attention is the custom op ``pit_det::ms_deform_attn``.
    """
    require_torch_for_export(dynamic)
    with torch.no_grad(), msda_impl_as(detector, msda_impl):
        return torch.export.export(
            exportable(detector, postprocess),
            (image,),
            strict=False,
            dynamic_shapes=dynamic_image_shapes() if dynamic else None,
        )


# The largest side a dynamic export accepts (the exported graph's guard, and its metadata).
MAX_DYNAMIC_SIZE = 4096


def dynamic_image_shapes(min_size: int = 256, max_size: int = MAX_DYNAMIC_SIZE) -> tuple:
    """Height and width free within [min_size, max_size]; batch 1. The lower bound keeps the
    encoder tokens above the shipped configs' 300 queries (so one graph covers the range)."""
    return (
        {
            2: torch.export.Dim('height', min=min_size, max=max_size),
            3: torch.export.Dim('width', min=min_size, max=max_size),
        },
    )


def min_dynamic_size(detector: nn.Module, step: int = 32, max_size: int = MAX_DYNAMIC_SIZE) -> int:
    """Smallest square side (a multiple of ``step``) at which the detector's encoder gets at least
    ``num_queries`` tokens: below it prediction takes fewer queries (another graph)."""
    detector.eval()
    for size in range(step, max_size + 1, step):
        with torch.no_grad():
            feats = detector.extract_feat(torch.zeros(1, 3, size, size))
        if sum(f.shape[-2] * f.shape[-1] for f in feats) >= detector.num_queries:
            return size
    raise PitDetError(f'no input up to {max_size} px gives {detector.num_queries} encoder tokens')
