"""The export tools end to end: a toy checkpoint as tools/train.py writes it, exported by
tools/deploy/export.py (dynamic; GridSample, gather and fused graphs) and run by tools/deploy/onnx_demo.py
without torch, against PyTorch; and every bad input each tool names."""

import json
from pathlib import Path

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
    pair_detections,
    predict,
    run,
    run_without_torch,
)
from matplotlib import cbook
from mmengine.config import Config
from tool_modules import run_in_process

from pit_det import benchmark as bm
from pit_det.datasets.toy import make_split
from pit_det.export import preprocessing_of
from pit_det.models import set_msda_impl
from pit_det_deploy.preprocess import prepare
from pit_det_deploy.runtime import load_graph

# Photographs that ship with matplotlib: a portrait (600 x 512 JPEG) and a product shot (128 x 128 PNG).
PHOTOS = [
    cbook.get_sample_data(name, asfileobj=False) for name in ('grace_hopper.jpg', 'Minduka_Present_Blue_Pack.png')
]


@pytest.fixture(scope='module')
def toy(trained_toy_detector, tmp_path_factory):
    """The toy detector trained for one epoch (mmengine's checkpoint, with dataset_meta) and its
    dynamic ONNX exports by tools/deploy/export.py, GridSample and fused (``trained_toy_detector``) and
    gather graphs, and two toy images of different sizes."""
    root = tmp_path_factory.mktemp('toy_export')  # this file's own: the shared fixture's folder is read only
    ckpt = trained_toy_detector['checkpoint']
    gather = run(
        ['tools/deploy/export.py', TOY, ckpt, '--out', root / 'toy_gather.onnx', '--dynamic', '--msda', 'gather']
    )
    assert gather.returncode == 0, gather.stderr[-3000:]
    make_split(root / 'images', 'val', 2, seed=3)
    images = sorted((root / 'images/val2017').iterdir())
    return dict(
        root=root,
        model=bm.build_detector(str(TOY), str(ckpt)),
        checkpoint=ckpt,
        onnx=trained_toy_detector['onnx'],
        gather=root / 'toy_gather.onnx',
        fused=trained_toy_detector['fused'],
        images=images,
        stdout=trained_toy_detector['stdout'],
    )


@pytest.mark.slow
@pytest.mark.parametrize('msda', ['grid_sample', 'gather', 'fused'])
def test_toy_dynamic_onnx_equals_pytorch_on_sizes_other_than_the_export_size(toy, msda):
    """Every graph, both runtimes, at sizes other than the traced one (odd feature maps too), and
    on two photographs through the toy config's test pipeline; the fused graph against PyTorch's
    C++ kernel, which its op runs."""
    path = toy['onnx'] if msda == 'grid_sample' else toy[msda]
    info = json.loads(onnx.load(str(path), load_external_data=False).metadata_props[0].value)
    assert (
        info['dynamic'] and info['input_shape'] == [96, 128] and info['classes'] == ['rectangle', 'ellipse', 'triangle']
    )
    assert info['msda'] == msda
    assert f'any {info["min_size"]}..4096' in toy['stdout']
    set_msda_impl(toy['model'], 'fast' if msda == 'fused' else msda)
    spec = preprocessing_of(Config.fromfile(TOY))
    photos = [torch.from_numpy(prepare(cv2.imread(str(path)), spec)[0]) for path in PHOTOS]
    inputs = [image(h, w, seed=w) for h, w in ((128, 80), (72, 128), (101, 67))] + photos
    expected = [predict(toy['model'], x) for x in inputs]
    for runtime in RUNTIMES:
        graph = load_graph(str(path), runtime)  # one loaded graph for every size, as a deployment runs it
        for x, ref in zip(inputs, expected):
            assert_same_detections(graph({'image': x.numpy()}), ref, max(x.shape[-2:]))


@pytest.fixture(scope='module')
def torch_demo(toy) -> Path:
    """tools/demo.py's pictures and detections of the toy images (a folder: one run for both)."""
    out = toy['root'] / 'torch_demo'
    proc = run(['tools/demo.py', toy['images'][0].parent, TOY, toy['checkpoint'], '--out', out, '--score-thr', '0'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize('runtime', RUNTIMES)
def test_onnx_demo_draws_what_demo_draws_without_torch(toy, torch_demo, tmp_path, runtime):
    """tools/deploy/onnx_demo.py runs with the runtime, numpy and OpenCV only (torch and OpenMMLab
    unimportable), and writes the picture and detections tools/demo.py writes, in onnxruntime
    and in OpenVINO, from the GridSample graph and from the fused one (whose library the deploy
    package builds and loads on its own)."""
    folder, torch_out = toy['images'][0].parent, torch_demo
    for graph in ('onnx', 'fused'):
        onnx_out = tmp_path / graph
        proc = run_without_torch(
            'tools/deploy/onnx_demo.py', folder, toy[graph], '--out', onnx_out, '--score-thr', '0', '--runtime', runtime
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        _assert_same_pictures_and_detections(toy['images'], onnx_out, torch_out)


def _assert_same_pictures_and_detections(images, onnx_out, torch_out):
    records = [json.loads((d / 'detections.json').read_text()) for d in (onnx_out, torch_out)]
    assert [r['file'] for r in records[0]] == [r['file'] for r in records[1]] == [str(p) for p in images]
    for ours, theirs in zip(*records):
        assert len(ours['detections']) == len(theirs['detections']) == 100  # score threshold 0: all of them
        # The same detections, up to the order of scores that tie (rounded to 1e-4 in the file).
        pairs = pair_detections(
            theirs['detections'],
            ours['detections'],
            lambda a, b: (
                (a['label'], a['name']) == (b['label'], b['name'])
                and abs(a['score'] - b['score']) <= 1e-4
                and np.abs(np.subtract(a['bbox'], b['bbox'])).max() <= 0.011  # rounded to 0.01 px in the file
            ),
        )
        assert None not in pairs
    for image_path in images:
        picture, reference = (cv2.imread(str(d / f'{image_path.stem}.png')) for d in (onnx_out, torch_out))
        assert picture.shape == reference.shape == cv2.imread(str(image_path)).shape
        assert np.array_equal(picture, reference)
        assert (picture != cv2.imread(str(image_path))).any()  # something was drawn


@pytest.mark.slow
def test_bad_inputs_are_named(toy, tmp_path, monkeypatch, capsys):
    # A checkpoint of another detector: the weights that do not fit are named, with both files (a
    # new process, as a user runs the tool: no traceback; the export's other errors run in this one).
    r50 = tmp_path / 'r50.pth'
    torch.save(bm.build_detector(str(ROOT / 'configs/deformable_detr_r50.py'), None).state_dict(), r50)
    proc = run(['tools/deploy/export.py', TOY, r50, '--out', tmp_path / 'x.onnx'])
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert f'error: {r50} does not match {TOY}' in proc.stderr and 'backbone.' in proc.stderr
    assert not (tmp_path / 'x.onnx').exists()
    # An opset without GridSample, and one torch's exporter cannot convert the gather graph to.
    export = ['tools/deploy/export.py', TOY, toy['checkpoint'], '--out', tmp_path / 'x.onnx']
    code, err = run_in_process(export[0], [*export[1:], '--opset', '15'], monkeypatch, capsys)
    assert code == 1 and 'error: opset 15 is not supported: the grid_sample graph needs opset >= 16' in err
    code, err = run_in_process(
        export[0], [*export[1:], '--shape', '64', '64', '--msda', 'gather', '--opset', '17'], monkeypatch, capsys
    )
    assert code == 1 and 'could not convert this gather graph to opset 17 (it wrote opset 18)' in err
    assert not (tmp_path / 'x.onnx').exists()
    # Something that is not an ONNX model.
    fake = tmp_path / 'model.onnx'
    fake.write_text('not a model')
    proc = run_without_torch('tools/deploy/onnx_demo.py', toy['images'][0], fake, '--out', tmp_path / 'o')
    assert proc.returncode == 1 and f'error: {fake}: cannot load as an ONNX model' in proc.stderr
    # A static model and an image that resizes to another size.
    static = tmp_path / 'static.onnx'
    code, err = run_in_process(export[0], [*export[1:3], '--out', static, '--shape', '64', '64'], monkeypatch, capsys)
    assert code == 0, err[-3000:]
    proc = run_without_torch('tools/deploy/onnx_demo.py', toy['images'][0], static, '--out', tmp_path / 'o')
    assert proc.returncode == 1 and 'takes 64 x 64 inputs only' in proc.stderr and '--dynamic' in proc.stderr
    # A zero-byte file among the images: the others are drawn and written, the file named.
    mixed = tmp_path / 'mixed'
    mixed.mkdir()
    (mixed / 'a.png').write_bytes(toy['images'][0].read_bytes())
    (mixed / 'b.png').write_bytes(b'')
    proc = run_without_torch('tools/deploy/onnx_demo.py', mixed, toy['onnx'], '--out', tmp_path / 'm')
    assert proc.returncode == 1 and f'error: cannot read 1 of 2 images ({mixed / "b.png"}): skipped' in proc.stderr
    assert [r['file'] for r in json.loads((tmp_path / 'm' / 'detections.json').read_text())] == [str(mixed / 'a.png')]
    # A strip that resizes below the dynamic model's range (PyTorch handles it; the graph does not),
    # to one pixel as SafeResize does, not to mmcv's zero.
    strip = tmp_path / 'strip.png'
    cv2.imwrite(str(strip), np.full((1, 2000, 3), 128, np.uint8))
    proc = run_without_torch('tools/deploy/onnx_demo.py', strip, toy['onnx'], '--out', tmp_path / 'o')
    assert proc.returncode == 1 and "resizes to 1 x 128, outside the model's input range" in proc.stderr
    assert str(strip) in proc.stderr
