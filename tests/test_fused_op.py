"""pit-det's fused deformable attention in the runtimes (``tools/deploy/export.py --msda fused``,
:mod:`pit_det_deploy.fused`): both runtimes' libraries compute what the PyTorch extension computes,
fused exports give PyTorch's detections in onnxruntime and OpenVINO (dynamic on a photograph,
static on the toy detector), and a machine that cannot build a library is told which graphs need
none. The trained toy detector's fused export by tools/deploy/export.py, run by the deploy tools
without torch: tests/test_export_tools.py; INT8 around the fused op: tests/test_quantize.py."""

import cv2
import numpy as np
import onnx
import pytest
import torch
from export_checks import (
    ROOT,
    RUNTIMES,
    TOY,
    assert_same_detections,
    image,
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
PHOTO = cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)  # a 512 x 600 photograph
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
def test_dynamic_fused_export_gives_pytorchs_detections_on_a_photograph(tmp_path):
    """PiT-S (1 encoder and 2 decoder layers), traced at 320 x 416: one node per deformable
    attention and no GridSample; in both runtimes, the detections of PyTorch's C++ kernel on the
    photograph as the test pipeline prepares it and on a generated image of another size."""
    model = perturbed(bm.build_detector(str(CONFIG), None, SHALLOW))
    photo, _ = prepare(cv2.imread(PHOTO), preprocessing_of(Config.fromfile(CONFIG)))  # (1, 3, 400, 469)
    path = tmp_path / 'fused.onnx'
    export_onnx(model, image(320, 416), str(path), dynamic=True, msda='fused')
    graph = onnx.load(str(path), load_external_data=False).graph
    assert [n.op_type for n in graph.node if n.domain == fused.DOMAIN] == [fused.OP] * 3
    assert 'GridSample' not in {n.op_type for n in graph.node}
    set_msda_impl(model, 'fast')
    for x in (torch.from_numpy(photo), image(288, 352, seed=2)):
        expected = predict(model, x)
        for runtime in RUNTIMES:
            assert_same_detections(run_graph(path, runtime, x.numpy()), expected, max(x.shape[-2:]))


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """The toy PiT-S (random weights) and its static 96 x 128 exports, fused and GridSample."""
    model = perturbed(bm.build_detector(str(TOY), None))
    root = tmp_path_factory.mktemp('toy_exports')
    for msda in ('fused', 'grid_sample'):
        export_onnx(model, image(96, 128), str(root / f'{msda}.onnx'), msda=msda)
    return dict(model=model, fused=root / 'fused.onnx', grid_sample=root / 'grid_sample.onnx')


def test_static_fused_export_gives_pytorchs_detections(toy):
    set_msda_impl(toy['model'], 'fast')
    x = image(96, 128, seed=5)
    expected = predict(toy['model'], x)
    for runtime in RUNTIMES:
        assert_same_detections(run_graph(toy['fused'], runtime, x.numpy()), expected, 128)


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
def test_without_a_compiler_a_fused_graph_names_the_portable_graphs(toy, tmp_path, runtime, no_compiler):
    # A standard-op graph needs no library: it loads and runs with nothing built.
    boxes, scores, labels = load_graph(str(toy['grid_sample']), runtime)({'image': image(96, 128).numpy()})
    assert boxes.shape[-1] == 4 and len(scores[0]) == len(labels[0]) > 0
    assert not (tmp_path / 'cache').exists()
    with pytest.raises(fused.FusedUnavailable) as err:
        load_graph(str(toy['fused']), runtime)
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
