"""The TensorRT graph (``tools/deploy/export.py --msda trt_plugin``): the fused graph with each
``pit_det::MultiScaleDeformableAttention`` node written as NVIDIA's plugin node
``MultiscaleDeformableAttnPlugin_TRT`` (TensorRT's ``plugin/multiscaleDeformableAttnPlugin``),
which TensorRT's ONNX parser imports from its plugin registry by the node's op type.

**Not yet run in TensorRT.** What is checked (tests/test_trt_plugin.py): the rewrite is exact, and
the graph, its plugin nodes computed as the plugin's documentation specifies, gives PyTorch's
detections. onnxruntime and OpenVINO do not have the plugin; they run the fused graph.

The plugin's contract, from its README (TensorRT OSS, 2022-2025; version 1, no attributes), and
where it differs from the fused node's:

* inputs ``value`` [N, S, M, D], ``spatial_shapes`` [L, 2], ``level_start_index`` [L],
  ``sampling_locations`` [N, Lq, M, L, P, 2] and ``attention_weights`` [N, Lq, M, L, P], the
  fused node's five, in its order; the plugin takes the two index tensors as int32, so each gets a
  Cast (the fused node's are int64);
* its output is [N, Lq, M, D], where the fused node's is [N, Lq, M * D]: a Reshape follows it, and
  its output keeps the fused node's name, so the rest of the graph is untouched.
"""

from typing import Any

import numpy as np

from .errors import DeployError
from .fused import DOMAIN, OP

PLUGIN = 'MultiscaleDeformableAttnPlugin_TRT'


def to_trt_plugin(model: Any) -> Any:
    """The fused graph with TensorRT's plugin in place of every fused node (see the module).

    Args:
        model: an ``onnx.ModelProto`` of the fused graph; not changed.

    Returns:
        A new ``onnx.ModelProto``: each fused node replaced by Cast (x2), the plugin node (default
        domain, as TensorRT's parser looks plugins up by op type) and a Reshape to
        [N, Lq, M * D]; the ``pit_det`` opset import dropped.
    """
    from onnx import TensorProto, helper, numpy_helper

    out = type(model)()
    out.CopyFrom(model)
    nodes, replaced = [], 0
    flatten_heads = 'pit_det_trt_plugin_flatten_heads'  # Reshape's shape: keep N and Lq, merge M and D
    for i, node in enumerate(model.graph.node):
        if node.domain != DOMAIN or node.op_type != OP:
            nodes.append(node)
            continue
        value, shapes, starts, locations, weights = node.input
        name = node.name or f'msda_{i}'
        nodes += [
            helper.make_node('Cast', [shapes], [f'{name}/spatial_shapes_i32'], to=TensorProto.INT32),
            helper.make_node('Cast', [starts], [f'{name}/level_start_index_i32'], to=TensorProto.INT32),
            helper.make_node(
                PLUGIN,
                [value, f'{name}/spatial_shapes_i32', f'{name}/level_start_index_i32', locations, weights],
                [f'{name}/heads'],  # [N, Lq, M, D]
                name=f'{name}/plugin',
            ),
            helper.make_node('Reshape', [f'{name}/heads', flatten_heads], list(node.output), name=name),
        ]
        replaced += 1
    if not replaced:
        raise ValueError(f'the model has no {DOMAIN}::{OP} node to write as {PLUGIN}: export it with --msda fused')
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), flatten_heads))
    imports = [o for o in out.opset_import if o.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(imports)
    return out


def tensorrt_only(path: str) -> DeployError:
    """The error for a runtime asked to load the TensorRT graph."""
    return DeployError(
        f"{path}: its deformable attention is TensorRT's {PLUGIN} (exported with --msda trt_plugin), "
        'which only TensorRT runs; for onnxruntime and OpenVINO export with --msda fused (or grid_sample)'
    )
