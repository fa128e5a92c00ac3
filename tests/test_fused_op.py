"""pit-det's fused deformable attention in the runtimes (``tools/deploy/export.py --msda fused``,
:mod:`pit_det_deploy.fused`): both runtimes' libraries compute what the PyTorch extension computes,
a fused export gives PyTorch's detections in onnxruntime and OpenVINO on a photograph, and a
machine that cannot build a library is told which graphs need none. The trained toy detector's
dynamic fused export by tools/deploy/export.py, against PyTorch and run by the deploy tools without
torch: tests/test_export_tools.py; INT8 around the fused op: tests/test_quantize.py."""

import cv2
import numpy as np
import onnx
import pytest
import torch
from export_checks import (
    ROOT,
    RUNTIMES,
    assert_same_detections,
    predict,
    run_graph,
)
from matplotlib import cbook
from mmengine.config import Config
from test_msda import LEVELS, random_inputs
from weight_files import perturbed

from pit_det import benchmark as bm
from pit_det.export import export_onnx, preprocessing_of
from pit_det.models import set_msda_impl
from pit_det.ops import load_extension
from pit_det_deploy import fused, load_graph
from pit_det_deploy.preprocess import prepare

CONFIG = ROOT / 'configs/deformable_detr_pit_s.py'
PHOTO = cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)  # a photograph, 600 high and 512 wide
# One encoder and two decoder layers, as the other export tests (tests/test_export.py: SHALLOW).
SHALLOW = {'model.encoder.num_layers': 1, 'model.decoder.num_layers': 2}


@pytest.fixture(scope='module')
def node(tmp_path_factory):
    """The fused node alone, as an ONNX file."""
    path = tmp_path_factory.mktemp('node') / 'node.onnx'
    onnx.save(fused.node_model(), str(path))
    return path


@pytest.mark.parametrize('runtime', RUNTIMES)
@pytest.mark.parametrize('head_dim', [8, 32])  # 32: every shipped config, its own compiled path
def test_both_runtimes_compute_what_the_pytorch_extension_computes(node, runtime, head_dim):
    """The same source compiled three times: bit for bit, for every level layout of the kernel
    tests (37 queries, and 150: the kernel takes 64 per task), with locations off the map and a NaN
    among them, on the runtime's threads (2 here)."""
    for levels, queries in zip(LEVELS, (37, 150, 37, 150)):
        inputs = random_inputs(levels, Q=queries, D=head_dim, dtype=torch.float32)
        inputs[3][0, 0, 0, 0, 0] = float('nan')
        expected = load_extension().forward(*inputs).numpy()
        (got,) = load_graph(str(node), runtime, threads=2)(dict(zip(fused.INPUTS, (t.numpy() for t in inputs))))
        assert got.shape == expected.shape and np.array_equal(got, expected)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_inputs_that_do_not_fit_are_named(node, runtime):
    """A level past the end of value, attention weights of another shape and a sampling location
    without its (x, y) pair: each an error naming what does not fit, never a read out of bounds."""
    value, shapes, starts, loc, attn = (t.numpy() for t in random_inputs(LEVELS[0], dtype=torch.float32))
    past_the_end = starts.copy()
    past_the_end[-1] += 1
    graph = load_graph(str(node), runtime)
    cases = [
        ((value, shapes, past_the_end, loc, attn), 'level 3 of spatial_shapes / level_start_index lies outside value'),
        ((value, shapes, starts, loc, attn[..., :2]), r'attention_weights \(2, 37, 4, 4, 2\) do not fit'),
        ((value, shapes, starts, loc[..., :1], attn), r'sampling_locations \(2, 37, 4, 4, 3, 1\) and attention'),
    ]
    for inputs, message in cases:
        with pytest.raises(Exception, match=message):
            graph(dict(zip(fused.INPUTS, inputs)))


@pytest.mark.slow
def test_fused_export_gives_pytorchs_detections_on_a_photograph(tmp_path):
    """PiT-S (1 encoder and 2 decoder layers) exported at the photograph's size as the test pipeline
    prepares it: one node per deformable attention and no GridSample; in both runtimes, the
    detections of PyTorch's C++ kernel, which the node runs. (Dynamic fused exports: the trained toy
    detector's, tests/test_export_tools.py.)"""
    model = perturbed(bm.build_detector(str(CONFIG), None, SHALLOW))
    photo, _ = prepare(cv2.imread(PHOTO), preprocessing_of(Config.fromfile(CONFIG)))
    photo = torch.from_numpy(photo)
    assert photo.shape == (1, 3, 469, 400)  # 600 x 512 (portrait) through Resize((666, 400), keep_ratio)
    path = tmp_path / 'fused.onnx'
    export_onnx(model, photo, str(path), msda='fused')
    graph = onnx.load(str(path), load_external_data=False).graph
    assert [n.op_type for n in graph.node if n.domain == fused.DOMAIN] == [fused.OP] * 3
    assert 'GridSample' not in {n.op_type for n in graph.node}
    set_msda_impl(model, 'fast')
    expected = predict(model, photo)
    for runtime in RUNTIMES:
        assert_same_detections(run_graph(path, runtime, photo.numpy()), expected, 469)


@pytest.fixture(scope='module')
def standard(tmp_path_factory):
    """A model of standard ops only (one Add), as an ONNX file."""
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]) for name in ('x', 'y'))
    graph = helper.make_graph([helper.make_node('Add', ['x', 'x'], ['y'])], 'add', [x], [y])
    path = tmp_path_factory.mktemp('standard') / 'add.onnx'
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)]), str(path))
    return path


def _forget_builds():
    for built in (fused.onnxruntime_headers, fused.onnxruntime_library, fused.openvino_extension):
        built.cache_clear()


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    """An empty library cache and no C++ compiler; what this process had built is forgotten
    meanwhile."""
    monkeypatch.setenv('ONNXRUNTIME_INCLUDE_DIR', str(fused.onnxruntime_headers()))  # no download in tests
    monkeypatch.setenv('PIT_DET_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-compiler'))
    _forget_builds()
    yield
    _forget_builds()


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_without_a_compiler_a_fused_graph_names_the_portable_graphs(node, standard, tmp_path, runtime, no_compiler):
    # A standard-op graph needs no library: it loads and runs with nothing built.
    (y,) = load_graph(str(standard), runtime)({'x': np.array([1.0, 2.5], np.float32)})
    assert y.tolist() == [2.0, 5.0]
    assert not (tmp_path / 'cache').exists()
    with pytest.raises(fused.FusedUnavailable) as err:
        load_graph(str(node), runtime)
    message = str(err.value)
    assert 'no-such-compiler cannot run' in message and 'install a C++ compiler' in message
    assert '--msda grid_sample or --msda gather' in message


def test_onnxruntime_headers_that_are_not_there_are_named(node, monkeypatch, tmp_path):
    monkeypatch.setenv('ONNXRUNTIME_INCLUDE_DIR', str(tmp_path))
    monkeypatch.setenv('PIT_DET_CACHE', str(tmp_path / 'cache'))
    _forget_builds()
    try:
        with pytest.raises(fused.FusedUnavailable, match=f'ONNXRUNTIME_INCLUDE_DIR={tmp_path} has no onnxruntime_lite'):
            load_graph(str(node), 'onnxruntime')
    finally:
        _forget_builds()
