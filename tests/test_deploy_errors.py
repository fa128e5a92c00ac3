"""tools/deploy/onnx_demo.py prints an input the user can fix (``DeployError``, a missing file) in one line
and keeps the traceback of anything else, which is a bug; the runtimes' load errors become one
``DeployError`` naming the file. The real error paths (no ONNX model, a static model, a strip out of
range) run end to end in test_export_tools.py."""

import re

import cv2
import numpy as np
import onnx
import pytest
from tool_modules import load_tool

from pit_det_deploy import RUNTIMES, DeployError, OnnxDetector
from pit_det_deploy import runtime as runtimes


def onnx_demo(monkeypatch, error: Exception):
    tool = load_tool('tools/deploy/onnx_demo.py')

    class Detector:  # a loaded model whose call fails with ``error``
        classes = ['a']

        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, image):
            raise error

    monkeypatch.setattr(tool, 'OnnxDetector', Detector)
    return lambda argv: tool.run_tool(lambda: tool.main(argv))  # as its ``__main__`` runs it


@pytest.fixture
def inputs(tmp_path):
    image, model = tmp_path / 'a.png', tmp_path / 'm.onnx'
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    model.write_bytes(b'')
    return [str(image), str(model), '--out', str(tmp_path / 'out')]


def test_input_errors_are_one_line_naming_the_image(monkeypatch, inputs, capsys):
    assert onnx_demo(monkeypatch, DeployError('resizes outside the range'))(inputs) == 1
    assert capsys.readouterr().err == f'error: {inputs[0]}: resizes outside the range\n'


def test_other_errors_keep_their_traceback(monkeypatch, inputs):
    with pytest.raises(ValueError, match='a bug'):
        onnx_demo(monkeypatch, ValueError('a bug'))(inputs)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_a_file_the_runtime_cannot_load_is_named(tmp_path, runtime):
    fake = tmp_path / 'model.onnx'
    fake.write_text('not a model')
    with pytest.raises(DeployError, match=f'^{re.escape(str(fake))}: cannot load as an ONNX model'):
        OnnxDetector(str(fake), runtime=runtime)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_a_bug_after_loading_keeps_its_traceback(tmp_path, monkeypatch, runtime):
    """Only the runtime's load is caught: an error in reading the metadata is pit-det's bug."""
    path = tmp_path / 'identity.onnx'
    value = onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node('Identity', ['x'], ['y'])], 'g', [value], [value])
    graph.output[0].name = 'y'
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', 17)]), str(path))

    def broken(*args):
        raise KeyError('a bug')

    monkeypatch.setattr(runtimes.metadata, 'parse', broken)
    monkeypatch.setattr(runtimes.metadata, 'from_openvino', broken)
    with pytest.raises(KeyError, match='a bug'):
        OnnxDetector(str(path), runtime=runtime)
