"""tools/deploy/onnx_demo.py prints an input the user can fix (``DeployError``, a missing file) in one line
and keeps the traceback of anything else, which is a bug. The real error paths (no ONNX model, a
static model, a strip out of range) run end to end in test_export.py."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from pit_det_deploy import DeployError

ROOT = Path(__file__).resolve().parents[1]


def onnx_demo(monkeypatch, error: Exception):
    spec = importlib.util.spec_from_file_location('onnx_demo', ROOT / 'tools/deploy/onnx_demo.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

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
