"""pit-det's fused deformable attention in the runtimes (``tools/deploy/export.py --msda fused``,
:mod:`pit_det_deploy.fused`): the runtime library computes what the PyTorch extension computes,
a fused export gives PyTorch's detections in onnxruntime and OpenVINO on a photograph, static and
dynamic, and a machine that cannot build the library is told which graphs need none. The trained
toy detector's fused export by tools/deploy/export.py, run by the deploy tools without torch:
tests/test_export_tools.py; INT8 around the fused op: tests/test_quantize.py."""

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


NAMES = ('value', 'spatial_shapes', 'level_start_index', 'sampling_locations', 'attention_weights')


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
    tests, with locations off the map and a NaN among them, on the runtime's threads (2 here)."""
    for levels in LEVELS:
        inputs = random_inputs(levels, D=head_dim, dtype=torch.float32)
        inputs[3][0, 0, 0, 0, 0] = float('nan')
        expected = load_extension().forward(*inputs).numpy()
        (got,) = load_graph(str(node), runtime, threads=2)(dict(zip(NAMES, (t.numpy() for t in inputs))))
        assert got.shape == expected.shape and np.array_equal(got, expected)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_level_shapes_outside_value_are_named(node, runtime):
    value, shapes, starts, loc, attn = (t.numpy() for t in random_inputs(LEVELS[0], dtype=torch.float32))
    past_the_end = starts.copy()
    past_the_end[-1] += 1
    graph = load_graph(str(node), runtime)
    with pytest.raises(Exception, match='level 3 of spatial_shapes / level_start_index lies outside value'):
        graph(dict(zip(NAMES, (value, shapes, past_the_end, loc, attn))))


@pytest.fixture(scope='module')
def shallow_pit_s():
    return perturbed(bm.build_detector(str(CONFIG), None, SHALLOW))


@pytest.mark.slow
@pytest.mark.parametrize('dynamic', [False, True])
def test_fused_export_gives_pytorchs_detections_on_a_photograph(shallow_pit_s, tmp_path, dynamic):
    """One node per deformable attention and no GridSample; in both runtimes, the detections of
    PyTorch's C++ kernel on the photograph as the test pipeline prepares it (static: the traced
    size; dynamic: traced on another size), and on a generated image of another size (dynamic)."""
    model = shallow_pit_s
    photo, _ = prepare(cv2.imread(PHOTO), preprocessing_of(Config.fromfile(CONFIG)))  # (1, 3, 400, 469)
    photo = torch.from_numpy(photo)
    path = tmp_path / 'fused.onnx'
    export_onnx(model, photo if not dynamic else image(320, 416), str(path), dynamic=dynamic, msda='fused')
    graph = onnx.load(str(path), load_external_data=False).graph
    nodes = [n for n in graph.node if n.domain == fused.DOMAIN]
    assert [n.op_type for n in nodes] == [fused.OP] * 3  # 1 encoder + 2 decoder layers
    assert 'GridSample' not in {n.op_type for n in graph.node}
    set_msda_impl(model, 'fast')
    inputs = [photo, image(288, 352, seed=2)] if dynamic else [photo]
    for x in inputs:
        expected = predict(model, x)
        for runtime in RUNTIMES:
            assert_same_detections(run_graph(path, runtime, x.numpy()), expected, max(x.shape[-2:]))


def _forget_builds():
    for built in (fused.onnxruntime_library, fused.openvino_extension):
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


def _toy_export(tmp_path, msda: str):
    model = perturbed(bm.build_detector(str(TOY), None))
    path = tmp_path / f'{msda}.onnx'
    export_onnx(model, image(96, 128), str(path), msda=msda)
    return path


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_without_a_compiler_a_fused_graph_names_the_portable_graphs(tmp_path, runtime, no_compiler):
    fused_graph, grid_sample = _toy_export(tmp_path, 'fused'), _toy_export(tmp_path, 'grid_sample')
    # A standard-op graph needs no library: it loads and runs with nothing built.
    boxes, scores, labels = load_graph(str(grid_sample), runtime)({'image': image(96, 128).numpy()})
    assert boxes.shape[-1] == 4 and len(scores[0]) == len(labels[0]) > 0
    assert not (tmp_path / 'cache').exists()
    with pytest.raises(fused.FusedUnavailable) as err:
        load_graph(str(fused_graph), runtime)
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
