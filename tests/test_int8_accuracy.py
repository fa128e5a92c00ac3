"""tools/analysis/int8_accuracy.py: its summary (APs by seed, their mean and sample sd, the INT8
drop per runtime and the largest gap between tools/test.py and the fp32 export), and --reuse with
--keep-fp32 (INT8 again from an earlier run's export, into files of its own)."""

import json
import os
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


def _earlier_run(folder, model_of_scores='fused.onnx'):
    """A seed folder as a full run leaves it, each file made after the one it derives from: the last
    checkpoint, tools/test.py's metrics, the fused export and its fp32 scores."""
    (folder / 'epoch_4.pth').write_bytes(b'')
    (folder / 'last_checkpoint').write_text(str(folder / 'epoch_4.pth'))
    (folder / 'metrics.json').write_text(json.dumps({'coco/bbox_mAP': 0.334}))
    (folder / 'fused.onnx').write_bytes(b'')
    for runtime, ap in (('onnxruntime', 0.3338), ('openvino', 0.3337)):
        score = dict(bbox_mAP=ap, model=str(folder / model_of_scores))
        (folder / f'fused.fp32_{runtime}.json').write_text(json.dumps(score))
    for i, name in enumerate(['epoch_4.pth', 'metrics.json', 'fused.onnx', 'fused.fp32_onnxruntime.json']):
        os.utime(folder / name, (1000 + i, 1000 + i))


def test_reuse_quantizes_and_scores_int8_only_with_the_groups_asked(tmp_path, monkeypatch):
    """--reuse --keep-fp32 head attention: no training or export; the earlier fp32 APs, and INT8
    quantized with those groups fp32 into files (model, scores, logs) of their own, beside the default's."""
    tool = _tool()
    _earlier_run(tmp_path)
    commands, logs = [], []

    def run_logged(cmd, log):
        commands.append([str(c) for c in cmd])
        logs.append(str(log))
        if '--out' in cmd and str(cmd[cmd.index('--out') + 1]).endswith('.json'):
            Path(cmd[cmd.index('--out') + 1]).write_text(json.dumps({'bbox_mAP': 0.33 if 'openvino' in cmd else 0.32}))

    monkeypatch.setattr(tool, 'run_logged', run_logged)
    args = SimpleNamespace(msda='fused', reuse=True, keep_fp32=('head', 'attention'), data_root='d', calib=32)
    ap = tool.score_seed(0, tmp_path, args)
    assert ap == {
        'pytorch': 0.334,
        'fp32 onnxruntime': 0.3338,
        'fp32 openvino': 0.3337,
        'int8 onnxruntime': 0.32,
        'int8 openvino': 0.33,
    }
    assert [Path(c[1]).name for c in commands] == ['quantize.py', 'onnx_eval.py', 'onnx_eval.py']
    stem = str(tmp_path / 'fused.int8.head+attention')
    assert (
        commands[0][2] == str(tmp_path / 'fused.onnx') and commands[0][commands[0].index('--out') + 1] == f'{stem}.onnx'
    )
    assert commands[0][-5:] == ['--num-images', '32', '--keep-fp32', 'head', 'attention']
    assert [c[2] for c in commands[1:]] == [f'{stem}.onnx'] * 2
    assert [c[c.index('--out') + 1] for c in commands[1:]] == [f'{stem}_onnxruntime.json', f'{stem}_openvino.json']
    assert logs == [f'{stem}.quantize.log', f'{stem}_onnxruntime.log', f'{stem}_openvino.log']
    # The quantizer's default groups keep the plain name; no group at all is 'none'.
    assert tool.int8_name('fused', ('head',)) == 'fused.int8' and tool.int8_name('gather', ()) == 'gather.int8.none'


def test_reuse_names_what_is_missing_stale_or_of_another_model(tmp_path):
    tool = _tool()
    with pytest.raises(PitDetError, match=r'no earlier run of the fused graph in .*metrics.json.*run without --reuse'):
        tool.reused_fp32(tmp_path, 'fused')
    _earlier_run(tmp_path, model_of_scores='grid_sample.onnx')
    with pytest.raises(PitDetError, match=r'fused.fp32_onnxruntime.json scores .*grid_sample.onnx, not .*fused.onnx'):
        tool.reused_fp32(tmp_path, 'fused')
    _earlier_run(tmp_path, model_of_scores='../seed_9/fused.onnx')  # another seed's export of the graph
    with pytest.raises(PitDetError, match=r'scores .*seed_9/fused.onnx, not .*fused.onnx'):
        tool.reused_fp32(tmp_path, 'fused')
    _earlier_run(tmp_path)
    assert tool.reused_fp32(tmp_path, 'fused')['fp32 openvino'] == 0.3337
    os.utime(tmp_path / 'fused.onnx', (999, 999))  # an export from before the last training
    with pytest.raises(PitDetError, match=r'fused.onnx is older than .*epoch_4.pth'):
        tool.reused_fp32(tmp_path, 'fused')
    _earlier_run(tmp_path)
    (tmp_path / 'metrics.json').write_text('{}')
    with pytest.raises(PitDetError, match=r"metrics.json: no 'coco/bbox_mAP' in it"):
        tool.reused_fp32(tmp_path, 'fused')


def test_reuse_trains_nothing_so_it_refuses_epochs(tmp_path):
    with pytest.raises(PitDetError, match='--reuse trains nothing'):
        _tool().main(
            ['--reuse', '--epochs', '2', '--work-dir', str(tmp_path / 'w'), '--data-root', str(tmp_path / 'd')]
        )
