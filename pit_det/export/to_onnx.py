"""The ONNX model of a detector: standard ops only, post-processing inside, facts for the runtime
in its metadata."""
import json
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ..errors import PitDetError
from ..models import msda_impl_as
from .program import MAX_DYNAMIC_SIZE, dynamic_image_shapes, min_dynamic_size, require_torch_for_export
from .wrappers import exportable

# Deformable attention in the exported graph: pit-det's gather kernel or mmcv's grid_sample one
# (``pit_det.ops.IMPLS``), and the opset each needs. torch's dynamo exporter writes opset 18 at least.
GRAPHS = {'gather': 13, 'grid_sample': 16}
MIN_EXPORTER_OPSET = 18


def export_onnx(detector: nn.Module, image: Tensor, path: str, dynamic: bool = False, opset: int = 18,
                min_size: Optional[int] = None, metadata: Optional[dict] = None,
                msda: str = 'grid_sample') -> Dict[str, object]:
    """The detector with post-processing as an ONNX model at ``path``; deformable attention as
    standard ops: ``msda='grid_sample'`` (one GridSample per level; the faster graph in both
    runtimes, docs/export.md) or ``'gather'`` (Gather and arithmetic, no GridSample: for runtimes
    without a correct GridSample, such as TensorRT). Returns the facts stored in its metadata (``pit_det`` key, JSON):
    input range, graph kind and whatever ``metadata`` adds.

    Raises:
        PitDetError: an unknown ``msda``, an ``opset`` below the exporter's 18, or a torch too old
            for the export.
    """
    import onnx
    require_torch_for_export(dynamic)
    if msda not in GRAPHS:
        raise PitDetError(f'--msda {msda!r}: choose one of {sorted(GRAPHS)}')
    if opset < MIN_EXPORTER_OPSET:
        raise PitDetError(f'opset {opset} is not supported: the ONNX exporter of torch writes opset >= '
                          f'{MIN_EXPORTER_OPSET} (the {msda} graph itself needs opset >= {GRAPHS[msda]})')
    H, W = image.shape[-2:]
    info = dict(metadata or {}, input_shape=[H, W], dynamic=dynamic, opset=opset, msda=msda)
    shapes = None
    if dynamic:
        info['min_size'] = min_size or min_dynamic_size(detector)
        info['max_size'] = MAX_DYNAMIC_SIZE
        shapes = dynamic_image_shapes(info['min_size'], info['max_size'])
    with torch.no_grad(), msda_impl_as(detector, msda):
        # onnxscript's graph optimiser (0.7.2) left a dangling input in these graphs
        # ('sigmoid_1_min_1' is not ... output of a previous node); onnxruntime optimises at load.
        program = torch.onnx.export(exportable(detector), (image,), dynamo=True, opset_version=opset,
                                    dynamic_shapes=shapes,
                                    input_names=['image'], output_names=['boxes', 'scores', 'labels'],
                                    optimize=False, verbose=False)
    model = program.model_proto
    onnx.helper.set_model_props(model, {'pit_det': json.dumps(info)})
    onnx.save(model, path)
    return info
