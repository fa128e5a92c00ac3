"""The exporter's translation of pit-det's op ``pit_det::ms_deform_attn`` into one ONNX node,
``pit_det::MultiScaleDeformableAttention`` (``tools/deploy/export.py --msda fused``), which
:mod:`pit_det_deploy.fused` runs in onnxruntime and OpenVINO.

Its inputs are the op's, in order; ``im2col_step`` (a batch chunk of mmcv's CUDA kernel) is dropped.
Imported only for that export: it imports onnxscript, whose parser needs the function at module level.
"""

import onnxscript
import torch
from onnxscript import FLOAT, INT64

from pit_det_deploy.fused import DOMAIN

pit_det_opset = onnxscript.values.Opset(DOMAIN, 1)


# A script function, typed: onnxscript writes a node of an op without a schema only from parsed
# source, and torch's exporter counts the node's outputs from the return annotation.
@onnxscript.script(pit_det_opset)
def ms_deform_attn(
    value: FLOAT,
    spatial_shapes: INT64,
    level_start_index: INT64,
    sampling_locations: FLOAT,
    attention_weights: FLOAT,
    im2col_step: int,
) -> FLOAT:
    output = pit_det_opset.MultiScaleDeformableAttention(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    return output


TRANSLATION = {torch.ops.pit_det.ms_deform_attn.default: ms_deform_attn}
