"""tools/analysis/int8_accuracy.py's summary: APs by seed, their mean and sample sd, the INT8 drop
per runtime and the largest gap between tools/test.py and the fp32 export."""

from tool_modules import load_tool


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
