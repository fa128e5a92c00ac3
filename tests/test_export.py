"""Export of the PyTorch detectors: torch.export programs (custom op kept) and ONNX models run by
onnxruntime and OpenVINO, against the detectors they come from; the torch versions export needs.
The tools on a toy checkpoint: tests/test_export_tools.py."""

import re

import onnx
import pytest
import torch
from export_checks import ROOT, RUNTIMES, assert_same_detections, image, predict, run_graph
from weight_files import perturbed

from pit_det import benchmark as bm
from pit_det.errors import PitDetError
from pit_det.export import MIN_TORCH, DetectorCore, export_onnx, export_program, require_torch_for_export
from pit_det.models import set_msda_impl

# The tests of every shipped detector, of both graphs and of the dynamic program trace one encoder
# layer and two decoder layers (box refinement passes boxes from one to the next): the other layers
# are the same module again, and tracing them took most of these tests' time. PiT-S at full depth
# is traced by the first test (12 deformable attention ops).
SHALLOW = {'model.encoder.num_layers': 1, 'model.decoder.num_layers': 2}


def test_export_program_keeps_the_op_and_equals_eager():
    """torch.export of backbone + transformer + head on CPU: all 12 deformable attention calls are
    the custom op in the graph, and the program computes exactly what eager does."""
    pit_s = perturbed(bm.build_detector(str(ROOT / 'configs/deformable_detr_pit_s.py'), None))
    x = image(160, 208)
    program = export_program(pit_s, x, msda_impl='fast')
    ops = [n for n in program.graph.nodes if n.target == torch.ops.pit_det.ms_deform_attn.default]
    assert len(ops) == 12
    with torch.no_grad():
        logits, boxes = program.module()(x)
        ref_logits, ref_boxes = DetectorCore(pit_s)(x)
    assert logits.shape == (1, 300, 80) and boxes.shape == (1, 300, 4)
    assert torch.equal(logits, ref_logits) and torch.equal(boxes, ref_boxes)


def test_dynamic_export_program_equals_eager_on_other_sizes():
    model = perturbed(bm.build_detector(str(ROOT / 'configs/deformable_detr_pit_s.py'), None, SHALLOW))
    program = export_program(model, image(320, 416), msda_impl='fast', postprocess=True, dynamic=True)
    for h, w in ((288, 352), (400, 533)):
        x = image(h, w, seed=h)
        with torch.no_grad():
            out = program.module()(x)
        assert_same_detections([t.numpy() for t in out], predict(model, x), max(h, w))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['r50', 'vit_s', 'vit_s_pyramid'])
def test_every_shipped_detector_exports_with_a_free_height_and_width(name):
    """What ``tools/deploy/export.py --dynamic`` traces (GridSample attention) for the other shipped
    configs; the pyramid's odd-size pooling once stopped torch.export's shape solver."""
    model = perturbed(bm.build_detector(str(ROOT / f'configs/deformable_detr_{name}.py'), None, SHALLOW))
    program = export_program(model, image(320, 416), msda_impl='grid_sample', postprocess=True, dynamic=True)
    x = image(400, 533, seed=1)  # odd feature maps at stride 16 and 32: 25 x 34, 13 x 17
    with torch.no_grad():
        out = program.module()(x)
    assert_same_detections([t.numpy() for t in out], predict(model, x), 533)


@pytest.mark.slow
@pytest.mark.parametrize(
    'name,msda', [('pit_s', 'grid_sample'), ('pit_s', 'gather'), ('vit_s', 'gather'), ('r50', 'grid_sample')]
)
def test_onnx_equals_pytorch(tmp_path, name, msda):
    """Random-weight Table 5 detectors: onnxruntime's and OpenVINO's detections equal mmdet's
    predict to fp32 rounding, with deformable attention as standard ops (GridSample, or none in the
    gather graph) and no custom op."""
    model = perturbed(bm.build_detector(str(ROOT / f'configs/deformable_detr_{name}.py'), None, SHALLOW))
    x = image(256, 320)
    path = tmp_path / f'{name}.onnx'
    export_onnx(model, x, str(path), msda=msda)
    graph = onnx.load(str(path), load_external_data=False).graph
    assert ('GridSample' in {n.op_type for n in graph.node}) == (msda == 'grid_sample')
    assert {n.domain for n in graph.node} <= {''}
    set_msda_impl(model, msda)  # the exported kernel (the C++ kernel vs it: tests/test_msda*.py)
    expected = predict(model, x)
    for runtime in RUNTIMES:
        assert_same_detections(run_graph(path, runtime, x.numpy()), expected, 320)


@pytest.mark.parametrize(
    'version,static_ok,dynamic_ok',
    [
        ('2.6.0+cu124', False, False),
        ('2.7.1', True, False),
        ('2.12.1+cu130', True, False),
        (torch.__version__, True, True),
    ],
)
def test_exports_name_the_torch_they_need(monkeypatch, tmp_path, version, static_ok, dynamic_ok):
    """torch 2.6 fails in its ONNX exporter and 2.12.1 in the dynamic-shape solver, deep inside
    torch (measured with this file's tests); an export on them stops first, naming the versions."""
    monkeypatch.setattr(torch, '__version__', version)
    for dynamic, ok in ((False, static_ok), (True, dynamic_ok)):
        if ok:
            require_torch_for_export(dynamic)
            continue
        need = '.'.join(map(str, MIN_TORCH['dynamic' if dynamic else 'static']))
        with pytest.raises(PitDetError, match=re.escape(f'export needs torch >= {need}; this is torch {version}')):
            export_onnx(None, torch.zeros(1, 3, 64, 64), str(tmp_path / 'm.onnx'), dynamic=dynamic)
        with pytest.raises(PitDetError, match=re.escape(f'export needs torch >= {need}')):
            export_program(None, torch.zeros(1, 3, 64, 64), dynamic=dynamic)
    assert not (tmp_path / 'm.onnx').exists()


def test_the_exported_preprocessing_is_the_test_pipelines_keep_ratio_resize_found_by_class():
    """The deployed preprocessing mirrors the test pipeline's resize, whatever its registered name:
    mmdet's ``Resize``, pit-det's ``SafeResize``, or a user's subclass of either. A pipeline without
    a keep-ratio resize to a scale is refused, naming the config."""
    from mmdet.datasets.transforms import Resize
    from mmdet.registry import TRANSFORMS

    from pit_det.config import read_config
    from pit_det.export import preprocessing_of

    cfg = read_config(str(ROOT / 'configs/deformable_detr_pit_s.py'))
    assert preprocessing_of(cfg)['resize_scale'] == [666, 400]  # SafeResize, half of COCO's 1333 x 800

    class MyResize(Resize):
        pass

    TRANSFORMS.register_module(module=MyResize)
    try:
        for name in ('Resize', 'MyResize', 'mmdet.MyResize'):
            cfg.test_pipeline[1] = dict(type=name, scale=(320, 200), keep_ratio=True)
            assert preprocessing_of(cfg)['resize_scale'] == [320, 200], name
        for resize in (
            dict(type='RandomResize', scale=(320, 200), keep_ratio=True),  # not a fixed scale
            dict(type='Resize', scale_factor=0.5, keep_ratio=True),  # by a factor: no scale to store
            dict(type='MyResize', scale=(320, 200), keep_ratio=False),
        ):
            cfg.test_pipeline[1] = resize
            with pytest.raises(PitDetError, match=re.escape(f'{cfg.filename}: export needs a test pipeline with a')):
                preprocessing_of(cfg)
    finally:
        TRANSFORMS._module_dict.pop('MyResize')
