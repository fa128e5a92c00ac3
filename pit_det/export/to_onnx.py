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


def export_onnx(detector: nn.Module, image: Tensor, path: str, dynamic: bool = False, opset: int = 18,
                min_size: Optional[int] = None, metadata: Optional[dict] = None) -> Dict[str, object]:
    """The detector with post-processing as an ONNX model at ``path``; deformable attention as
    standard ops (``grid_sample`` -> GridSample). Returns the facts stored in its metadata
    (``pit_det`` key, JSON): input range and whatever ``metadata`` adds.

    Raises:
        PitDetError: ``opset`` below 16 (no GridSample), or a torch too old for the export.
    """
    import onnx
    require_torch_for_export(dynamic)
    if opset < 16:
        raise PitDetError(f'opset {opset} is not supported: deformable attention needs GridSample (opset >= 16)')
    H, W = image.shape[-2:]
    info = dict(metadata or {}, input_shape=[H, W], dynamic=dynamic, opset=opset)
    shapes = None
    if dynamic:
        info['min_size'] = min_size or min_dynamic_size(detector)
        info['max_size'] = MAX_DYNAMIC_SIZE
        shapes = dynamic_image_shapes(info['min_size'], info['max_size'])
    with torch.no_grad(), msda_impl_as(detector, 'grid_sample'):
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
