"""tools/analysis/benchmark.py and its counting conventions (pit_det/benchmark/)."""

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmcv.ops import MultiScaleDeformableAttention
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper
from tool_modules import load_tool
from torch.autograd import DeviceType

from pit_det import benchmark as bm
from pit_det import ops
from pit_det.benchmark import kernels, profiling, training, variant
from pit_det.models import set_msda_impl
from pit_det.ops import msda_flops
from pit_det_deploy.hardware import cpu_info, native_dtypes

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
# The dispatcher's module (the package's `ms_deform_attn` is the custom op).
ONE_LAYER = {'model.encoder.num_layers': 1, 'model.decoder.num_layers': 1}


@pytest.mark.parametrize('impl', ['stock', 'fast'])
def test_flops_of_one_deformable_attention_layer_equal_the_formula(impl):
    B, Q, C, M, L, P = 2, 50, 256, 8, 4, 4
    shapes = torch.tensor([[10, 12], [5, 6], [3, 3], [2, 2]])
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    S = int((shapes[:, 0] * shapes[:, 1]).sum())
    attn = MultiScaleDeformableAttention(embed_dims=C, num_heads=M, num_levels=L, num_points=P, batch_first=True).eval()
    set_msda_impl(attn, impl)
    query, value, ref = torch.randn(B, Q, C), torch.randn(B, S, C), torch.rand(B, Q, L, 2)
    flops = bm.count_flops(
        attn, lambda: attn(query, value=value, reference_points=ref, spatial_shapes=shapes, level_start_index=starts)
    )
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
    return load_tool('tools/analysis/benchmark.py')


def test_precision_flags():
    """--bf16 / --fp16 put the low precision beside fp32 (whether the device runs it natively is
    pit_det.precision's decision, tested in test_precision.py)."""
    tool = _benchmark_tool()
    assert tool.parse_args([str(TOY), '--bf16']).dtype == ['fp32', 'bf16']
    assert tool.parse_args([str(TOY), '--dtype', 'bf16']).dtype == ['bf16']
    assert tool.parse_args([str(TOY), '--dtype', 'bf16', '--bf16']).dtype == ['bf16']
    assert tool.parse_args([str(TOY), '--fp16', '--bf16']).dtype == ['fp32', 'bf16', 'fp16']


def test_int8_rows_by_their_fp32_groups(capsys):
    """--int8 alone: one INT8 row with the quantizer's default fp32 groups; with values, one row per
    comma-joined group set ('none': every matmul INT8), in one order, repeats dropped; an unknown
    group, or 'none' beside one, named."""
    tool = _benchmark_tool()
    assert tool.parse_args([str(TOY)]).int8 == []
    assert tool.parse_args([str(TOY), '--int8']).int8 == [('head',)]
    rows = tool.parse_args([str(TOY), '--int8', 'head', 'head,attention', 'none', 'attention,head', 'head,head']).int8
    assert rows == [('head',), ('head', 'attention'), ()]
    named = {
        'head,heads': "--int8 'heads': choose from head, sampling, attention or none",
        'none,head': '--int8 none head: none keeps no group in fp32; give it alone',
    }
    for bad, message in named.items():
        with pytest.raises(SystemExit):
            tool.parse_args([str(TOY), '--int8', bad])
        assert message in capsys.readouterr().err


def run_tool(tmp_path, *args, config: str = 'configs/deformable_detr_pit_s.py', shape=('160', '208')) -> tuple:
    """The tool on CPU, named explicitly: on a GPU machine the default device is the GPU."""
    out = tmp_path / 'bench.json'
    proc = subprocess.run(
        [
            sys.executable,
            'tools/analysis/benchmark.py',
            config,
            '--device',
            'cpu',
            '--shape',
            *shape,
            '--threads',
            '1',
            '--out',
            str(out),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_benchmark_tool_smoke(tmp_path):
    """The tool on CPU on a small input: both kernels side by side in fp32 and, where this CPU has
    native bf16, in bf16 (elsewhere --bf16 is refused: test_precision.py); same detections across
    kernels; the header names the processor; JSON and plot."""
    bf16 = 'bf16' in native_dtypes('cpu')
    report, stdout = run_tool(
        tmp_path, '--iters', '2', '--warmup', '1', '--profile', '3', '--plot', *(['--bf16'] if bf16 else [])
    )
    env = report['environment']
    dtypes = ['fp32', 'bf16'] if bf16 else ['fp32']
    assert env['threads'] == 1 and env['shape'] == [160, 208] and env['dtypes'] == dtypes
    cpu = cpu_info()
    assert (env['cpu'], env['cpu_isa'], env['cpu_native_bf16']) == (cpu.model, cpu.isa, bf16)
    assert (env['cpu_native_int8'], env['cpu_family']) == (cpu.native('int8'), cpu.family)
    assert env['onnxruntime'] and env['torch'] == torch.__version__
    assert cpu.native('fp16') == env['cpu_native_fp16']
    assert stdout.startswith(f'cpu: {cpu.describe()}; 1 threads;'), stdout[:300]  # as every tool names the CPU
    # A 2-core CPU: tens to hundreds of GFLOP/s; a unit slip (GFLOP/s as TFLOP/s) lands outside.
    assert set(env['matmul_tflops']) == set(dtypes)
    assert all(0.005 < rate < 50 for rate in env['matmul_tflops'].values())
    rows = report['results']
    kernels = (('stock', 'mmcv-pytorch'), ('fast', 'cpp'))
    assert [(r['runtime'], r['impl'], r['kernel'], r['dtype'], r['compiled']) for r in rows] == [
        ('torch', impl, kernel, dtype, False) for dtype in dtypes for impl, kernel in kernels
    ]
    assert report['failed'] == [] and report['training'] == []
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
        assert list(row['stages']) == [*bm.STAGES, 'other', 'total'] and 'cuda' not in row
    assert (tmp_path / 'bench.png').stat().st_size > 0
    assert 'speed-up' in stdout and ('fast bf16' in stdout) == bf16


def test_a_gpu_header_names_the_gpu_its_host_and_whether_mmcv_has_cuda_ops():
    """The header of a GPU run, from the environment the benchmark records (its CPU part as
    ``CpuInfo.describe`` words it, from the recorded fields: here a host with native bf16 and fp16)."""
    env = dict(
        device='cuda:0',
        gpu='NVIDIA H200',
        cuda='13.0',
        mmcv_cuda_ops=False,
        torch='2.11.0',
        mmcv='2.1.0',
        onnxruntime='1.23.2',
        openvino=None,
        threads=16,
        cpu='Intel(R) Xeon(R) Platinum 8480+',
        cpu_isa='AVX512',
        cpu_cores=16,
        cpu_native_bf16=True,
        cpu_native_fp16=True,
        cpu_native_int8=True,
        cpu_family='family 6 model 143',
    )
    assert bm.describe_environment(env) == (
        'cuda:0: NVIDIA H200, host Intel(R) Xeon(R) Platinum 8480+ (AVX512, native bf16 / fp16, int8 dot products, '
        '16 cores, family 6 model 143); 16 threads; torch 2.11.0, cuda 13.0, mmcv 2.1.0 (without CUDA ops), '
        'onnxruntime 1.23.2'
    )


@pytest.mark.slow
def test_benchmark_compile_and_runtime_rows(tmp_path):
    """--compile: an inductor-compiled row beside each eager one, its compile time apart from
    its latency, the same detections as eager, and in mode reduce-overhead whether CUDA graphs ran
    (on CPU they cannot); --runtimes / --msda / --int8: the exported graphs (GridSample and
    fused) timed in onnxruntime and OpenVINO, fp32 with PyTorch's detections, and INT8 of the first,
    with --profile each row's ops as its runtime ran them (one encoder and decoder layer keep
    compiling and exporting short)."""
    report, stdout = run_tool(
        tmp_path,
        '--iters',
        '1',
        '--warmup',
        '1',
        '--no-flops',
        '--msda-impl',
        'fast',
        '--compile',
        '--compile-mode',
        'reduce-overhead',
        '--onnx',
        '--runtimes',
        'openvino',
        '--msda',
        'grid_sample',
        'fused',
        '--int8',
        'head',
        'head,attention',
        '--profile',
        '60',
        '--cfg-options',
        'model.encoder.num_layers=1',
        'model.decoder.num_layers=1',
    )
    eager, compiled, *deployed = report['results']
    assert [variant(r) for r in deployed] == [
        f'{runtime} {graph}'
        for runtime in ('onnxruntime', 'openvino')
        for graph in ('grid_sample fp32', 'fused fp32', 'grid_sample int8', 'grid_sample int8 fp32:head+attention')
    ]
    assert [r.get('int8_fp32') for r in deployed[:4]] == [None, None, ['head'], ['head', 'attention']]
    # Self-attention left fp32: in onnxruntime's profile, more fp32 matmuls per call (the backbone's and the
    # decoder's self-attention products) and fewer int8 ones.
    ops = [r['top_ops'] for r in deployed[2:4]]
    fp32_matmuls = [sum(op['calls'] for op in row if op['op'] == 'MatMul') for row in ops]
    int8_matmuls = [sum(op['calls'] for op in row if int8_products(op['op']) and 'MatMul' in op['op']) for row in ops]
    assert fp32_matmuls[1] > fp32_matmuls[0] and int8_matmuls[1] < int8_matmuls[0], ops
    for row in deployed:
        assert row['export_s'] > 0 and row['latency']['median_ms'] > 0 and row['reference'] == 'fast fp32'
        assert variant(row) in stdout
        if row['dtype'] == 'fp32':  # the same detections as PyTorch, to fp32 rounding
            assert row['vs_reference']['labels_equal']
            assert row['vs_reference']['max_box_diff'] <= 1e-6 * 208
            assert row['vs_reference']['max_score_diff'] <= 1e-6
        # Every op kind (fewer than 60), named as the runtime ran it: the sampling as GridSample or
        # as the fused op; in INT8 onnxruntime's int8 ops, OpenVINO's int8 kernels.
        ops = [op['op'] for op in row['top_ops']]
        assert len(ops) < 60 and sum(op['share'] for op in row['top_ops']) == pytest.approx(1.0)
        sampling = 'MultiScaleDeformableAttention' if row['impl'] == 'fused' else 'GridSample'
        assert any(op.startswith(sampling) for op in ops), ops
        int8 = [op for op in ops if int8_products(op)]
        assert bool(int8) == (row['dtype'] == 'int8'), int8
    assert [(r['runtime'], r['compiled']) for r in (eager, compiled)] == [('torch', False), ('torch', True)]
    assert report['environment']['compile_mode'] == 'reduce-overhead'
    # CUDA graphs need CUDA tensors: on CPU inductor skips them, and the row says so.
    assert 1 <= compiled['cudagraph_skips'] <= compiled['graphs'] and 'cudagraph_skips' not in eager
    assert f'{compiled["cudagraph_skips"]} of {compiled["graphs"]} graphs compiled without CUDA graphs' in stdout
    assert compiled['compile_s'] > compiled['latency']['median_ms'] / 1e3 > 0 and 'compile_s' not in eager
    assert compiled['backbone_latency'] is None
    # test_step: mmengine's data preprocessor (stack_batch) breaks the graph 3 times; predict itself
    # is one graph (tests/test_msda_op.py). Eager rows have no graphs.
    assert (compiled['graphs'], compiled['graph_breaks']) == (4, 3) and 'graphs' not in eager
    assert compiled['reference'] == 'fast fp32' and compiled['vs_reference']['labels_equal']
    # Inductor fuses and reorders fp32 sums (measured 1.5e-5 px, scores 4.1e-8).
    assert compiled['vs_reference']['max_box_diff'] <= 1e-6 * 208 and compiled['vs_reference']['max_score_diff'] <= 1e-6
    assert 'fast fp32 compiled' in stdout


def int8_products(op: str) -> bool:
    """An op kind of ``pit_det_deploy.op_times`` that multiplies in int8: onnxruntime's int8 ops, or an OpenVINO
    matmul or convolution on an int8 kernel (its masks' Subgraph and Convert run in i8 in fp32 models too)."""
    kind, _, kernel = op.partition(' (')
    if kind.startswith(('QLinear', 'MatMulInteger', 'ConvInteger')):
        return True
    return kind in ('FullyConnected', 'MatMul', 'Convolution', 'GroupConvolution') and '_i8' in kernel.lower()


def _event(name: str, device: str = 'cpu', start: float = 0.0, end: float = 0.0, kind: str = None):
    return SimpleNamespace(
        name=name,
        device_type=DeviceType.CUDA if device == 'cuda' else DeviceType.CPU,
        time_range=SimpleNamespace(start=start, end=end),
        activity_type=kind,
    )


@pytest.mark.parametrize('typed', [True, False], ids=['activity types', 'names only'])
def test_cuda_events_are_counted_by_kind_and_stage(typed):
    """--profile on a GPU, from torch.profiler's events of one call: launches by their host call
    (runtime or driver API: Triton launches through the driver), CUDA graph replays, kernels on the
    device (not copies, the GPU side of stage ranges or synchronisation records), host waits,
    device-to-host copies, and launches by the stage range they start in; host calls after the call
    (the profiler's own synchronisation when it stops) do not count. torch 2.13 types its events;
    older torch names them only."""
    events = [
        _event(profiling.CALL, start=0, end=45, kind='user_annotation'),
        _event(profiling.CALL, 'cuda', 1, 46, 'gpu_user_annotation'),
        _event('stage: backbone', start=0, end=10, kind='user_annotation'),
        _event('stage: backbone', 'cuda', 1, 12, 'gpu_user_annotation'),
        _event('cudaLaunchKernel', start=1, end=2, kind='cuda_runtime'),
        _event('cuLaunchKernelEx', start=3, end=4, kind='cuda_driver'),
        *[_event(f'void kernel_{i}<float>(float*)', 'cuda', 5 + i, 6 + i, 'kernel') for i in range(3)],
        _event('stage: decoder', start=20, end=30, kind='user_annotation'),
        _event('cudaLaunchKernelExC', start=21, end=22, kind='cuda_runtime'),
        _event('cudaGraphLaunch', start=23, end=24, kind='cuda_runtime'),
        _event('aten::_local_scalar_dense', start=25, end=29, kind='cpu_op'),  # .item()
        _event('cudaMemcpyAsync', start=26, end=27, kind='cuda_runtime'),
        _event('Memcpy DtoH (Device -> Pageable)', 'cuda', 26, 27, 'gpu_memcpy'),
        _event('cudaStreamSynchronize', start=27, end=28, kind='cuda_runtime'),
        _event('Stream Sync', 'cuda', 27, 28, 'cuda_sync'),
        _event('Memset (Device)', 'cuda', 31, 32, 'gpu_memset'),
        _event('cudaLaunchKernel', start=40, end=41, kind='cuda_runtime'),  # outside the stages
        _event('cudaDeviceSynchronize', start=50, end=60, kind='cuda_runtime'),  # the profiler stopping
    ]
    if not typed:
        for e in events:
            e.activity_type = None
    assert bm.count_cuda_events(events) == dict(
        kernel_launches=4,
        graph_launches=1,
        kernels=3,
        syncs=1,
        dtoh_copies=1,
        kernel_launches_by_stage={'backbone': 2, 'decoder': 1},
    )


def test_stages_split_one_test_step_and_change_nothing():
    """--profile's stages: each stage method of the detector is marked once per test_step, in the
    order mmdet runs them; the marks change no result and are gone afterwards; the stage times and
    the profile of one call (no CUDA counts on CPU; the stage and call ranges are not ops)."""
    model = bm.build_detector(str(TOY), cfg_options=ONE_LAYER)
    data = bm.make_sample(64, 96)
    step = lambda: model.test_step(data)  # noqa: E731
    with torch.no_grad():
        plain = bm.detections(step())
        with bm.stage_marks(model, profiling.Clock('cpu')) as spans:
            marked = bm.detections(step())
        assert [stage for stage, _, _ in spans] == [
            'preprocess',
            'backbone',
            *['neck + encoder'] * 3,
            'proposals',
            'decoder',
            'head + post-processing',
        ]
        assert all(end >= start for _, start, end in spans)
        assert all(torch.equal(a, b) for a, b in zip(plain, marked))
        patched = {
            model: ('pre_transformer', 'forward_encoder', 'pre_decoder', 'forward_decoder'),
            model.backbone: ('forward',),
            model.neck: ('forward',),
            model.bbox_head: ('predict',),
            model.data_preprocessor: ('forward',),
        }
        assert not any(name in vars(owner) for owner, names in patched.items() for name in names)
        stages = bm.stage_times(model, step, 'cpu', iters=2)
        assert list(stages) == [*bm.STAGES, 'other', 'total'] and all(stages[s] > 0 for s in bm.STAGES)
        profile = bm.profile_call(step, 'cpu', top=10_000, model=model)  # every op
    assert set(profile) == {'top_ops'} and len(profile['top_ops']) > 10
    assert not any(op['op'].startswith(('stage: ', profiling.CALL)) for op in profile['top_ops'])  # ranges, not ops
    assert sum(op['share'] for op in profile['top_ops']) == pytest.approx(1.0)


def test_a_failing_variant_becomes_a_failed_row_and_the_others_still_run(monkeypatch, tmp_path, capsys):
    real = ops.resolve

    def kernel(impl: str, device: str) -> str:
        if impl == 'stock':
            raise ValueError('no such kernel here')
        return real(impl, device)

    monkeypatch.setattr(ops, 'resolve', kernel)
    report = _benchmark_tool().main(
        [
            str(TOY),
            '--device',
            'cpu',
            '--shape',
            '64',
            '96',
            '--iters',
            '1',
            '--warmup',
            '0',
            '--no-flops',
            '--msda-impl',
            'stock',
            'fast',
            '--out',
            str(tmp_path / 'bench.json'),
            '--cfg-options',
            'model.encoder.num_layers=1',
            'model.decoder.num_layers=1',
        ]
    )
    assert [(r['impl'], r['error']) for r in report['failed']] == [('stock', 'ValueError: no such kernel here')]
    assert [(r['impl'], r['kernel']) for r in report['results']] == [('fast', 'cpp')]
    assert 'reference' not in report['results'][0]  # the first row measured is the one the others are held to
    assert 'stock fp32                    FAILED: ValueError: no such kernel here' in capsys.readouterr().out
    assert json.loads((tmp_path / 'bench.json').read_text())['failed'][0]['impl'] == 'stock'


def test_an_emulated_precision_is_timed_without_its_matmul_rate(monkeypatch, tmp_path, capsys):
    """bf16 emulated by request (PIT_DET_ALLOW_EMULATED=1, for numerics) is timed, but its 2048^3
    matmul rate is not measured: emulated, those matmuls take minutes to say nothing new."""
    tool = _benchmark_tool()
    measured = []
    monkeypatch.setattr(bm, 'matmul_rate', lambda device, dtype: measured.append((device, dtype)) or 1e11)
    monkeypatch.setattr(tool, 'native_dtypes', lambda device: ['fp32'])
    monkeypatch.setenv('PIT_DET_ALLOW_EMULATED', '1')
    report = tool.main(
        [
            str(TOY),
            '--device',
            'cpu',
            '--shape',
            '64',
            '96',
            '--iters',
            '1',
            '--warmup',
            '0',
            '--no-flops',
            '--msda-impl',
            'fast',
            '--dtype',
            'fp32',
            'bf16',
            '--out',
            str(tmp_path / 'bench.json'),
            '--cfg-options',
            'model.encoder.num_layers=1',
            'model.decoder.num_layers=1',
        ]
    )
    assert measured == [('cpu', 'fp32')] and report['environment']['matmul_tflops'] == {'fp32': 0.1}
    assert [r['dtype'] for r in report['results']] == ['fp32', 'bf16'] and report['failed'] == []
    assert '2048^3 matmul fp32 100 GFLOP/s, bf16 emulated, not measured' in capsys.readouterr().out


def test_synthetic_training_batches_go_through_the_configs_own_pipeline():
    """--train-throughput's data: photo-sized images with boxes through PiT-S's own training
    pipeline (half-resolution COCO: short side 240..400, long side <= 666, and the crop branch),
    in batches of the config's size, the same batches every time."""
    cfg = Config.fromfile(str(ROOT / 'configs/deformable_detr_pit_s.py'))
    np.random.seed(1)  # the transforms draw from numpy's global generator: seeded inside, left as it was
    before = np.random.get_state()[1].copy()
    batches = bm.synthetic_batches(cfg, 6)
    assert (np.random.get_state()[1] == before).all()
    assert all(len(b['inputs']) == len(b['data_samples']) == cfg.train_dataloader.batch_size == 2 for b in batches)
    shapes = []
    for batch in batches:
        for image, sample in zip(batch['inputs'], batch['data_samples']):
            h, w = image.shape[1:]
            assert image.dtype == torch.uint8 and image.shape[0] == 3 and sample.metainfo['img_shape'] == (h, w)
            assert 240 <= min(h, w) <= 400 and max(h, w) <= 666
            boxes, labels = sample.gt_instances.bboxes.tensor, sample.gt_instances.labels
            assert len(boxes) == len(labels) and bool((labels < 80).all())
            assert bool((boxes[:, 2:] <= torch.tensor([w, h])).all())
            shapes.append((h, w))
    assert len(set(shapes)) > 3  # multi-scale
    assert any(abs(h / w - 480 / 640) > 0.02 for h, w in shapes)  # the crop branch (the photos are 4:3)
    np.random.seed(2)
    assert [tuple(i.shape) for b in bm.synthetic_batches(cfg, 6) for i in b['inputs']] == [
        tuple(i.shape) for b in batches for i in b['inputs']
    ]


def test_coco_schedule_from_the_training_rate():
    """50 epochs on 8 GPUs at 2 images each per iteration: an epoch is what the config's loader
    iterates, every train2017 image with pit-det's configs (filter_empty_gt=False, as mmdet's
    Deformable DETR), the annotated ones with filter_empty_gt=True."""
    assert (
        Config.fromfile(str(ROOT / 'configs/deformable_detr_pit_s.py')).train_dataloader.dataset.filter_cfg[
            'filter_empty_gt'
        ]
        is False
    )
    every = bm.coco_schedule(10.0, 2, filter_empty_gt=False)
    assert (every['images_per_epoch'], every['iters_per_epoch']) == (118_287, 7393)  # ceil(118287 / 16)
    assert every['hours'] == pytest.approx(7393 * 50 * 2 / 10.0 / 3600)
    annotated = bm.coco_schedule(10.0, 2, filter_empty_gt=True, gpus=16)
    assert (annotated['images_per_epoch'], annotated['iters_per_epoch']) == (117_266, 3665)  # ceil(117266 / 32)


@pytest.mark.filterwarnings('ignore:`torch.cuda.amp.GradScaler', 'ignore:torch.cuda.amp.GradScaler is enabled')
def test_low_precision_training_wrappers(monkeypatch):
    """bf16 training: on CPU, where mmengine's AmpOptimWrapper refuses to run, the forward under
    autocast and the step with the config's clipping; on a GPU, AmpOptimWrapper in bf16, as
    tools/train.py --amp bfloat16 builds it."""
    model = torch.nn.Linear(4, 4)
    cfg = Config(
        dict(
            optim_wrapper=dict(
                type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3), clip_grad=dict(max_norm=0.1, norm_type=2)
            )
        )
    )
    x = torch.randn(2, 4)
    fp32 = training.optim_wrapper_for(model, cfg, 'cpu', 'fp32')
    with fp32.optim_context(model):
        assert model(x).dtype == torch.float32
    bf16 = training.optim_wrapper_for(model, cfg, 'cpu', 'bf16')
    assert bf16.clip_grad_kwargs == dict(max_norm=0.1, norm_type=2)
    before = model.weight.detach().clone()
    with bf16.optim_context(model):
        out = model(x)
    assert out.dtype == torch.bfloat16
    bf16.update_params(out.float().sum())
    assert not torch.equal(model.weight, before)
    monkeypatch.setattr('mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available', lambda: True)
    gpu = training.optim_wrapper_for(model, cfg, 'cuda', 'bf16')
    assert isinstance(gpu, AmpOptimWrapper) and gpu.cast_dtype == torch.bfloat16


@pytest.mark.slow
def test_profile_and_training_throughput_rows(tmp_path):
    """--profile (no N: 12 ops) gives the stage split; --train-throughput the training step's
    images/s from the config's batch size (here the toy config at 1 + 1 layers and batch 2, for a
    short CPU run) and the 50-epoch COCO estimate from that rate."""
    report, stdout = run_tool(
        tmp_path,
        '--iters',
        '2',
        '--warmup',
        '1',
        '--no-flops',
        '--msda-impl',
        'fast',
        '--profile',
        '--train-throughput',
        '--cfg-options',
        'model.encoder.num_layers=1',
        'model.decoder.num_layers=1',
        'train_dataloader.batch_size=2',
        config=str(TOY),
        shape=('64', '96'),
    )
    (row,) = report['results']
    assert row['kernel'] == 'cpp' and len(row['top_ops']) == 12 and 'cuda' not in row
    assert list(row['stages']) == [*bm.STAGES, 'other', 'total'] and all(row['stages'][s] > 0 for s in bm.STAGES)
    assert 'stages: preprocess' in stdout
    (train,) = report['training']
    assert (train['model'], train['dtype'], train['batch_size'], train['impl'], train['kernel']) == (
        'pit_s_toy',
        'fp32',
        2,
        'auto',  # the config's choice, as asked
        'cpp',  # what it runs here
    )
    assert train['step']['iters'] == 2 and train['peak_mib'] > 0 and math.isfinite(train['loss'])
    assert train['images_per_s'] == pytest.approx(2 * 1e3 / train['step']['mean_ms'])
    coco = train['coco_50e_8gpus']
    assert (coco['images_per_epoch'], coco['iters_per_epoch'], coco['gpus'], coco['epochs']) == (118_287, 7393, 8, 50)
    assert coco['hours'] == pytest.approx(7393 * 50 * 2 / train['images_per_s'] / 3600)
    assert 'training step on' in stdout and '50 COCO epochs on 8 GPUs' in stdout


def test_kernel_comparison_checks_each_kernel_against_fp64_then_times_it(monkeypatch, tmp_path):
    """tools/analysis/benchmark_msda.py on CPU at small shapes: every kernel's output and three gradients
    within fp32 rounding of the fp64 reference (3e-6 measured at the 400 x 667 shapes), positive latencies;
    mmcv's CUDA kernel, which needs a GPU and nvcc, a row that says why it did not run (no GPU
    here, also on a GPU machine)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    levels = ((6, 10), (3, 5))
    rows = kernels.compare_kernels(
        ['cpp', 'gather', kernels.MMCV_SOURCE],
        ['fp32'],
        {'decoder': 20},
        'cpu',
        levels=levels,
        batch=1,
        warmup=0,
        iters=2,
        mmcv_build_dir=tmp_path,
    )
    assert [(r['kernel'], r['dtype']) for r in rows] == [
        ('cpp', 'fp32'),
        ('gather', 'fp32'),
        (kernels.MMCV_SOURCE, 'fp32'),
    ]
    for r in rows[:2]:
        assert set(r['max_rel_diff']) == {'output', 'value grad', 'location grad', 'weight grad'}
        assert max(r['max_rel_diff'].values()) < 1e-5, r
        assert r['forward']['median_ms'] > 0 and r['forward_backward']['median_ms'] > 0
    assert 'CUDA GPU' in rows[2]['error']


def test_kernel_comparison_catches_a_wrong_kernel(monkeypatch):
    """A kernel whose attention weights are 1% off shows far beyond fp32 rounding, and its row fails."""
    original = kernels.kernel_fn
    monkeypatch.setattr(
        kernels,
        'kernel_fn',
        lambda name, module=None: lambda v, s, i, loc, a: original('gather')(v, s, i, loc, a * 1.01),
    )
    (row,) = kernels.compare_kernels(
        ['gather'], ['fp32'], {'decoder': 8}, 'cpu', levels=((4, 6),), batch=1, warmup=0, iters=1
    )
    assert row['max_rel_diff']['output'] > 5e-3 and 'from the fp64 reference' in row['error']
