"""tools/benchmark_latency.py and its counting conventions (pit_det/benchmark.py)."""
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
    monkeypatch.setattr(bm, 'time_calls', lambda fn, warmup, iters, device: [0.5, 0.1, 0.2])
    assert bm.matmul_rate('cpu', size=64) == 2 * 64**3 / 0.2


def test_summarize():
    s = bm.summarize([0.001 * t for t in range(1, 12)])  # 1 .. 11 ms
    assert s['median_ms'] == pytest.approx(6.0) and s['p90_ms'] == pytest.approx(10.0)
    assert s['images_per_s'] == pytest.approx(1000 / 6.0) and s['iters'] == 11


@pytest.mark.slow
def test_benchmark_tool_smoke(tmp_path):
    """The tool on CPU on a small input: both kernels timed, same detections, JSON and plot."""
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, 'tools/benchmark_latency.py', 'configs/deformable_detr_pit_s.py',
                           '--shape', '160', '208', '--iters', '2', '--warmup', '1', '--threads', '1',
                           '--profile', '3', '--out', str(out), '--plot'],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report['environment']['threads'] == 1 and report['environment']['shape'] == [160, 208]
    # A 2-core CPU: tens to hundreds of GFLOP/s; a unit slip (GFLOP/s as TFLOP/s) lands outside.
    assert 0.005 < report['environment']['matmul_tflops'] < 50
    stock, fast = report['results']
    assert (stock['impl'], fast['impl']) == ('stock', 'fast')
    assert stock['params'] == fast['params'] and stock['params']['total'] > stock['params']['backbone'] > 0
    # PiT-S at 160 x 208: 12 deformable attention calls (6 encoder + 6 decoder) counted analytically.
    assert fast['flops']['total'] == fast['flops']['counted'] + fast['flops']['msda_analytic']
    assert fast['flops']['msda_analytic'] > 0 and 0 < fast['flops']['backbone'] < fast['flops']['counted']
    assert fast['vs_stock']['max_box_diff'] <= 1e-4 and fast['vs_stock']['max_score_diff'] <= 1e-4
    assert fast['vs_stock']['labels_equal']
    assert fast['speedup_vs_stock'] == pytest.approx(stock['latency']['median_ms'] / fast['latency']['median_ms'])
    for row in (stock, fast):
        rate = row['flops']['total'] / (row['latency']['median_ms'] / 1e3)
        assert row['achieved_tflops'] == pytest.approx(rate / 1e12)
        assert row['share_of_matmul_rate'] == pytest.approx(rate / (report['environment']['matmul_tflops'] * 1e12))
    for row in (stock, fast):
        assert row['latency']['iters'] == 2 and row['latency']['median_ms'] > 0 and row['peak_mib'] > 0
        assert len(row['top_ops']) == 3
    assert (tmp_path / 'bench.png').stat().st_size > 0
    assert 'speed-up' in proc.stdout and 'pit_s' in proc.stdout
