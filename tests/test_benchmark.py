"""tools/benchmark_latency.py and its counting conventions (pit_det/benchmark/)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmcv.ops import MultiScaleDeformableAttention

from pit_det import benchmark as bm
from pit_det.models import set_msda_impl
from pit_det.ops import msda_flops
from pit_det.precision import cpu_info, native_dtypes

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('impl', ['stock', 'fast'])
def test_flops_of_one_deformable_attention_layer_equal_the_formula(impl):
    B, Q, C, M, L, P = 2, 50, 256, 8, 4, 4
    shapes = torch.tensor([[10, 12], [5, 6], [3, 3], [2, 2]])
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    S = int((shapes[:, 0] * shapes[:, 1]).sum())
    attn = MultiScaleDeformableAttention(embed_dims=C, num_heads=M, num_levels=L, num_points=P,
                                         batch_first=True).eval()
    set_msda_impl(attn, impl)
    query, value, ref = torch.randn(B, Q, C), torch.randn(B, S, C), torch.rand(B, Q, L, 2)
    flops = bm.count_flops(attn, lambda: attn(query, value=value, reference_points=ref,
                                                spatial_shapes=shapes, level_start_index=starts))
    # Sampling core: 4 bilinear corners + 1 attention weight, a multiply-add each, per channel.
    assert flops['msda_analytic'] == msda_flops(Q, M, L, P, C, B) == 2 * 5 * B * Q * L * P * C
    # The four projections, counted by torch's counter: value (S tokens), offsets, weights, output.
    linears = 2 * B * (S * C * C + Q * C * (M * L * P * 2) + Q * C * (M * L * P) + Q * C * C)
    assert flops['counted'] == linears
    assert flops['total'] == linears + flops['msda_analytic']


def test_cpu_attention_is_counted():
    q, k, v = torch.randn(1, 2, 10, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    flops = bm.count_flops(torch.nn.Linear(1, 1), lambda: F.scaled_dot_product_attention(q, k, v))
    assert flops['counted'] == 2 * (2 * 2 * 10 * 12 * 8)  # QK^T and AV, 2 FLOPs per multiply-add


def test_matmul_rate_is_flops_over_the_median_time(monkeypatch):
    monkeypatch.setattr(bm.measure, 'time_calls', lambda fn, warmup, iters, device: [0.5, 0.1, 0.2])
    assert bm.matmul_rate('cpu', size=64) == 2 * 64**3 / 0.2


def test_summarize():
    s = bm.summarize([0.001 * t for t in range(1, 12)])  # 1 .. 11 ms
    assert s['median_ms'] == pytest.approx(6.0) and s['p90_ms'] == pytest.approx(10.0)
    assert s['images_per_s'] == pytest.approx(1000 / 6.0) and s['iters'] == 11


def _benchmark_tool():
    spec = importlib.util.spec_from_file_location('benchmark_latency', ROOT / 'tools/benchmark_latency.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_precision_flags():
    """--bf16 / --fp16 put the low precision beside fp32 (whether the device runs it natively is
    pit_det.precision's decision, tested in test_precision.py)."""
    tool = _benchmark_tool()
    assert tool.parse_args(['x.py', '--bf16']).dtype == ['fp32', 'bf16']
    assert tool.parse_args(['x.py', '--dtype', 'bf16']).dtype == ['bf16']
    assert tool.parse_args(['x.py', '--dtype', 'bf16', '--bf16']).dtype == ['bf16']
    assert tool.parse_args(['x.py', '--fp16', '--bf16']).dtype == ['fp32', 'bf16', 'fp16']


def run_tool(tmp_path, *args) -> tuple:
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, 'tools/benchmark_latency.py', 'configs/deformable_detr_pit_s.py',
                           '--shape', '160', '208', '--threads', '1', '--out', str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_benchmark_tool_smoke(tmp_path):
    """The tool on CPU on a small input: both kernels side by side in fp32 and, where this CPU has
    native bf16, in bf16 (elsewhere --bf16 is refused: test_precision.py); same detections across
    kernels; the header names the processor; JSON and plot."""
    bf16 = 'bf16' in native_dtypes('cpu')
    report, stdout = run_tool(tmp_path, '--iters', '2', '--warmup', '1', '--profile', '3', '--plot',
                              *(['--bf16'] if bf16 else []))
    env = report['environment']
    dtypes = ['fp32', 'bf16'] if bf16 else ['fp32']
    assert env['threads'] == 1 and env['shape'] == [160, 208] and env['dtypes'] == dtypes
    cpu = cpu_info()
    assert (env['cpu'], env['cpu_isa'], env['cpu_native_bf16']) == (cpu.model, cpu.isa, bf16)
    assert env['onnxruntime'] and env['torch'] == torch.__version__
    assert stdout.startswith(f"cpu: {cpu.model} ({cpu.isa}, {'native' if bf16 else 'no native'} bf16, ")
    # A 2-core CPU: tens to hundreds of GFLOP/s; a unit slip (GFLOP/s as TFLOP/s) lands outside.
    assert set(env['matmul_tflops']) == set(dtypes)
    assert all(0.005 < rate < 50 for rate in env['matmul_tflops'].values())
    rows = report['results']
    assert [(r['impl'], r['dtype'], r['compiled']) for r in rows] == [
        (impl, dtype, False) for dtype in dtypes for impl in ('stock', 'fast')]
    stock, fast = rows[:2]
    assert stock['params'] == fast['params'] and stock['params']['total'] > stock['params']['backbone'] > 0
    # PiT-S at 160 x 208: 12 deformable attention calls (6 encoder + 6 decoder) counted analytically.
    assert fast['flops']['total'] == fast['flops']['counted'] + fast['flops']['msda_analytic']
    assert fast['flops']['msda_analytic'] > 0 and 0 < fast['flops']['backbone'] < fast['flops']['counted']
    assert 'reference' not in stock and all(r['reference'] == 'stock fp32' for r in rows[1:])
    # fp32 rounding of two kernels (measured: boxes equal, scores 5.2e-8): 1e-6 of the side, 1e-6.
    assert fast['vs_reference']['max_box_diff'] <= 1e-6 * 208 and fast['vs_reference']['max_score_diff'] <= 1e-6
    assert fast['vs_reference']['labels_equal']
    # bf16 keeps about 3 significant digits: scores within 0.05 of fp32, yet not identical to them.
    for row in rows[2:]:
        assert 0 < row['vs_reference']['max_score_diff'] < 0.05
    for row in rows[1:]:
        assert row['speedup'] == pytest.approx(stock['latency']['median_ms'] / row['latency']['median_ms'])
    for row in rows:
        rate = row['flops']['total'] / (row['latency']['median_ms'] / 1e3)
        assert row['achieved_tflops'] == pytest.approx(rate / 1e12)
        assert row['share_of_matmul_rate'] == pytest.approx(rate / (env['matmul_tflops'][row['dtype']] * 1e12))
        assert row['latency']['iters'] == 2 and row['latency']['median_ms'] > 0 and row['peak_mib'] > 0
        assert row['backbone_latency']['iters'] == 2 and len(row['top_ops']) == 3
    assert (tmp_path / 'bench.png').stat().st_size > 0
    assert 'speed-up' in stdout and ('fast bf16' in stdout) == bf16


@pytest.mark.slow
def test_benchmark_compile_and_runtime_rows(tmp_path):
    """--compile: an inductor-compiled row beside each eager one, its compile time apart from
    its latency, the same detections as eager; --runtimes / --graphs / --int8: the exported
    graphs timed in onnxruntime and OpenVINO, fp32 with PyTorch's detections, and INT8 (one
    encoder and decoder layer keep compiling and exporting short)."""
    report, stdout = run_tool(tmp_path, '--iters', '1', '--warmup', '1', '--no-flops', '--msda-impl', 'fast',
                              '--compile', '--onnx', '--runtimes', 'openvino', '--graphs', 'grid_sample', 'gather',
                              '--int8', '--cfg-options', 'model.encoder.num_layers=1', 'model.decoder.num_layers=1')
    eager, compiled, *deployed = report['results']
    assert [f"{r['impl']} {r['graph']} {r['dtype']}" for r in deployed] == [
        f'{runtime} {graph}' for runtime in ('onnxruntime', 'openvino')
        for graph in ('grid_sample fp32', 'gather fp32', 'grid_sample int8')]
    for row in deployed:
        assert row['export_s'] > 0 and row['latency']['median_ms'] > 0 and row['reference'] == 'fast fp32'
        assert f"{row['impl']} {row['graph']} {row['dtype']}" in stdout
        if row['dtype'] == 'fp32':  # the same detections as PyTorch, to fp32 rounding
            assert row['vs_reference']['labels_equal']
            assert row['vs_reference']['max_box_diff'] <= 1e-6 * 208
            assert row['vs_reference']['max_score_diff'] <= 1e-6
    assert (eager['compiled'], compiled['compiled']) == (False, True)
    assert report['environment']['compile_mode'] == 'default'
    assert compiled['compile_s'] > compiled['latency']['median_ms'] / 1e3 > 0 and 'compile_s' not in eager
    assert compiled['backbone_latency'] is None
    # test_step: mmengine's data preprocessor (stack_batch) breaks the graph 3 times; predict itself
    # is one graph (tests/test_msda_op.py). Eager rows have no graphs.
    assert (compiled['graphs'], compiled['graph_breaks']) == (4, 3) and 'graphs' not in eager
    assert compiled['reference'] == 'fast fp32' and compiled['vs_reference']['labels_equal']
    # Inductor fuses and reorders fp32 sums (measured 1.5e-5 px, scores 4.1e-8).
    assert compiled['vs_reference']['max_box_diff'] <= 1e-6 * 208 and compiled['vs_reference']['max_score_diff'] <= 1e-6
    assert 'fast fp32 compiled' in stdout
