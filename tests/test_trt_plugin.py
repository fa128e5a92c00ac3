"""The TensorRT graph (``tools/deploy/export.py --msda trt_plugin``, :mod:`pit_det_deploy.trt_plugin`).
It is not run in TensorRT here: what is checked is that each fused node becomes the plugin node
with the inputs TensorRT's plugin documents, and that the graph, its plugin nodes computed as that
documentation specifies (a numpy kernel below, written from the README, not from pit-det's
kernels), gives PyTorch's detections; and that the CPU runtimes, which lack the plugin, say so."""

import numpy as np
import onnx
import pytest
from export_checks import ROOT, RUNTIMES, assert_same_detections, image, predict
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from weight_files import perturbed

from pit_det import benchmark as bm
from pit_det.export import export_onnx
from pit_det.models import set_msda_impl
from pit_det_deploy import DeployError, fused, load_graph
from pit_det_deploy.trt_plugin import PLUGIN, to_trt_plugin

CONFIG = ROOT / 'configs/deformable_detr_pit_s.py'
SHALLOW = {'model.encoder.num_layers': 1, 'model.decoder.num_layers': 2}  # as tests/test_export.py
H, W = 128, 160  # the smallest 4:5 input whose encoder has the 300 tokens two-stage picks from


def documented_plugin(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """MultiscaleDeformableAttnPlugin_TRT as its README specifies it: value [N, S, M, D], int32
    spatial_shapes [L, 2] (H, W) and level_start_index [L], locations [N, Lq, M, L, P, 2] (x, y in
    [0, 1] of the level), weights [N, Lq, M, L, P]; output [N, Lq, M, D]. Bilinear, corners off the
    level read zero (Deformable DETR's kernel, which the plugin ships)."""
    assert spatial_shapes.dtype == np.int32 and level_start_index.dtype == np.int32
    N, _, M, D = value.shape
    out = np.zeros((N, sampling_locations.shape[1], M, D), np.float64)
    n = np.arange(N)[:, None, None, None]
    m = np.arange(M)[None, None, :, None]
    for level, ((h, w), start) in enumerate(zip(spatial_shapes, level_start_index)):
        grid = value[:, start : start + h * w].reshape(N, h, w, M, D).astype(np.float64)
        x = sampling_locations[:, :, :, level, :, 0] * w - 0.5  # [N, Lq, M, P], pixel centres at .5
        y = sampling_locations[:, :, :, level, :, 1] * h - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        for dx in (0, 1):
            for dy in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                on_map = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                corner = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi)) * on_map
                sample = grid[n, np.clip(yi, 0, h - 1).astype(int), np.clip(xi, 0, w - 1).astype(int), m]
                out += np.einsum('nqmp,nqmpd->nqmd', attention_weights[:, :, :, level] * corner, sample)
    return out.astype(np.float32)


class MultiscaleDeformableAttnPlugin_TRT(OpRun):  # the name onnx's reference evaluator dispatches on
    op_domain = ''

    def _run(self, *inputs):
        return (documented_plugin(*inputs),)


class GatherElements(OpRun):
    """onnx's reference GatherElements (1.19) uses np.choose, which takes at most 64 entries along
    the axis; the top-k of the post-processing gathers from 300."""

    def _run(self, data, indices, axis=0):
        return (np.take_along_axis(data, np.where(indices < 0, indices + data.shape[axis], indices), axis),)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Shallow PiT-S (perturbed random weights) and its TensorRT export at H x W."""
    model = perturbed(bm.build_detector(str(CONFIG), None, SHALLOW))
    x = image(H, W)
    path = tmp_path_factory.mktemp('trt') / 'trt_plugin.onnx'
    export_onnx(model, x, str(path), msda='trt_plugin')
    set_msda_impl(model, 'fast')  # the fused graph's kernel, traced for this one
    return model, x, path


def test_each_attention_is_the_plugin_node_with_int32_indices_and_its_4d_output_reshaped(exported):
    model = onnx.load(str(exported[2]))
    graph = model.graph
    plugins = [n for n in graph.node if n.op_type == PLUGIN]
    assert len(plugins) == 3  # 1 encoder layer, 2 decoder layers
    assert not any(n.domain == fused.DOMAIN for n in graph.node)
    assert fused.DOMAIN not in {o.domain for o in model.opset_import}
    producer = {out: n for n in graph.node for out in n.output}
    consumers = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    for plugin in plugins:
        assert plugin.domain == '' and not plugin.attribute  # looked up by op type, version 1, no fields
        for i in (1, 2):  # spatial_shapes, level_start_index: int32, cast from the traced int64
            cast = producer[plugin.input[i]]
            assert cast.op_type == 'Cast'
            assert onnx.helper.get_attribute_value(cast.attribute[0]) == onnx.TensorProto.INT32
        (reshape,) = consumers[plugin.output[0]]  # [N, Lq, M, D] -> [N, Lq, M * D]
        assert reshape.op_type == 'Reshape' and constants[reshape.input[1]].tolist() == [0, 0, -1]


@pytest.mark.slow
def test_the_graph_with_the_documented_plugin_gives_pytorchs_detections(exported):
    model, x, path = exported
    evaluator = ReferenceEvaluator(str(path), new_ops=[MultiscaleDeformableAttnPlugin_TRT, GatherElements])
    boxes, scores, labels = evaluator.run(None, {'image': x.numpy()})
    assert_same_detections([boxes, scores, labels], predict(model, x), H)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_the_cpu_runtimes_name_the_graphs_they_can_run(exported, runtime):
    path = exported[2]
    with pytest.raises(DeployError, match=f"{path}: its deformable attention is TensorRT's {PLUGIN}.*--msda fused"):
        load_graph(str(path), runtime)


def test_a_graph_without_the_fused_node_is_refused():
    graph = onnx.helper.make_graph([onnx.helper.make_node('Relu', ['x'], ['y'])], 'g', [], [])
    with pytest.raises(ValueError, match='no pit_det::MultiScaleDeformableAttention node.*--msda fused'):
        to_trt_plugin(onnx.helper.make_model(graph))
