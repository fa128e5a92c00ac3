"""tools/analysis/int8_accuracy.py's summary: APs by seed, their mean and sample sd, the INT8 drop
per runtime and the largest gap between tools/test.py and the fp32 export."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from tool_modules import load_tool

from pit_det.errors import PitDetError


def _tool():
    return load_tool('tools/analysis/int8_accuracy.py')


def test_the_summary_gives_mean_sd_drops_and_the_fp32_gap():
    tool = _tool()
    runs = {
        0: {
            'pytorch': 0.300,
            'fp32 onnxruntime': 0.301,
            'fp32 openvino': 0.300,
            'int8 onnxruntime': 0.290,
            'int8 openvino': 0.296,
        },
        1: {
            'pytorch': 0.320,
            'fp32 onnxruntime': 0.320,
            'fp32 openvino': 0.320,
            'int8 onnxruntime': 0.316,
            'int8 openvino': 0.318,
        },
        2: {
            'pytorch': 0.310,
            'fp32 onnxruntime': 0.310,
            'fp32 openvino': 0.310,
            'int8 onnxruntime': 0.310,
            'int8 openvino': 0.302,
        },
    }
    table = tool.to_markdown(runs, 'a CPU', 'fused')
    lines = table.splitlines()
    assert (
        lines[0]
        == '| toy val AP, fused graph | pytorch | fp32 onnxruntime | fp32 openvino | int8 onnxruntime | int8 openvino |'
    )
    assert lines[2] == '| seed 0 | 0.300 | 0.301 | 0.300 | 0.290 | 0.296 |'
    # pytorch: mean 0.310, sample sd 0.010 (population sd would be 0.008)
    assert lines[5].startswith('| mean ± sd | 0.310 ± 0.010 |')
    # onnxruntime drops 0.011, 0.004, 0.000: mean 0.005, sd 0.0056
    assert 'INT8 AP drop in onnxruntime: 0.005 ± 0.006 (fp32 minus INT8, per seed: +0.011, +0.004, +0.000)' in table
    assert 'INT8 AP drop in openvino: 0.005 ± 0.003 (fp32 minus INT8, per seed: +0.004, +0.002, +0.008)' in table
    assert 'at most 0.0010 over the seeds and runtimes' in table and '3 seeds on a CPU.' in table


def _earlier_run(folder, model_of_scores=None):
    """A seed folder as a full run leaves it: tools/test.py's metrics, the fused export, its fp32 scores."""
    (folder / 'metrics.json').write_text(json.dumps({'coco/bbox_mAP': 0.334}))
    (folder / 'fused.onnx').write_bytes(b'')
    for runtime, ap in (('onnxruntime', 0.3338), ('openvino', 0.3337)):
        score = dict(bbox_mAP=ap, model=str(model_of_scores or folder / 'fused.onnx'))
        (folder / f'fp32_{runtime}.json').write_text(json.dumps(score))


def test_reuse_quantizes_and_scores_int8_only_with_the_groups_asked(tmp_path, monkeypatch):
    """--reuse --keep-fp32 head attention: no training or export; the earlier fp32 APs, and INT8
    quantized with those groups fp32 into files of their own, beside the default's."""
    tool = _tool()
    _earlier_run(tmp_path)
    commands = []

    def run_logged(cmd, log):
        commands.append([str(c) for c in cmd])
        if '--out' in cmd and str(cmd[cmd.index('--out') + 1]).endswith('.json'):
            Path(cmd[cmd.index('--out') + 1]).write_text(json.dumps({'bbox_mAP': 0.33 if 'openvino' in cmd else 0.32}))

    monkeypatch.setattr(tool, 'run_logged', run_logged)
    args = SimpleNamespace(msda='fused', reuse=True, keep_fp32=['head', 'attention'], data_root='d', calib=32)
    ap = tool.score_seed(0, tmp_path, args)
    assert ap == {
        'pytorch': 0.334,
        'fp32 onnxruntime': 0.3338,
        'fp32 openvino': 0.3337,
        'int8 onnxruntime': 0.32,
        'int8 openvino': 0.33,
    }
    tools = [Path(c[1]).name for c in commands]
    assert tools == ['quantize.py', 'onnx_eval.py', 'onnx_eval.py']
    int8 = str(tmp_path / 'fused.int8.head+attention.onnx')
    assert commands[0][-5:] == ['--num-images', '32', '--keep-fp32', 'head', 'attention'] and int8 in commands[0]
    assert all(c[2] == int8 for c in commands[1:])
    # --keep-fp32 none: every matmul INT8, its own files; no --keep-fp32: the quantizer's default, as before.
    assert tool.int8_tag([]) == '.none' and tool.int8_tag(None) == ''


def test_reuse_names_what_is_missing_or_scored_from_another_model(tmp_path):
    tool = _tool()
    with pytest.raises(PitDetError, match=r'no earlier run of this graph in .*metrics.json.*run without --reuse'):
        tool.reused_fp32(tmp_path, 'fused')
    _earlier_run(tmp_path, model_of_scores=tmp_path / 'grid_sample.onnx')
    with pytest.raises(PitDetError, match=r'fp32 scores in .* are of .*grid_sample.onnx.*not of .*fused.onnx'):
        tool.reused_fp32(tmp_path, 'fused')
