"""The latency benchmark's method (``tools/analysis/benchmark.py`` keeps its arguments and its
printing): detectors built from configs with seeded random weights, each timed per precision x
deformable-attention kernel x eager / compiled (and onnxruntime), side by side in one run, each
row's detections compared with the detector's first row. Each row names the deformable attention
asked for (``impl``, a config's ``msda_impl``), the kernel that ran (``kernel``,
:func:`pit_det.ops.resolve`) and what ran the model (``runtime``: 'torch', or for the deployed
rows 'onnxruntime' or 'openvino', which run the file ``tools/deploy/export.py`` writes: fused,
GridSample and gather graphs, INT8). A variant
that fails (a kernel this device lacks, ...) becomes a row with its ``error``, and the others
still run. Conventions: :mod:`.measure`; ``--profile``: :mod:`.profiling`; training: :mod:`.training`."""

import os.path as osp
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch._dynamo.utils import counters

from pit_det_deploy.quantize import DEFAULT_KEEP
from pit_det_deploy.runtime import RUNTIMES

from .. import ops
from ..models import set_msda_impl
from . import measure as bm
from .profiling import profile_call, stage_times


@dataclass
class Settings:
    """What one benchmark run measures, and how.

    Args:
        dtypes: precisions, in order: 'fp32', 'bf16', 'fp16' (autocast).
        impls: deformable-attention choices, in order (``pit_det.ops.IMPLS``; each row also names
            the kernel it resolves to on ``device``).
        shape: input image (H, W).
        device: 'cpu' or 'cuda'.
        warmup, iters: untimed and timed calls.
        compile: also a ``torch.compile(test_step)`` row beside each eager one.
        compile_mode: torch.compile's mode ('default', 'reduce-overhead', 'max-autotune').
        runtimes: also the exported graph in these CPU runtimes ('onnxruntime', 'openvino').
        graphs: the exported graphs to time there ('fused', 'grid_sample', 'gather'; ``tools/deploy/export.py --msda``).
        int8: INT8 rows of the first graph (``tools/deploy/quantize.py``), one per set of matmul
            groups left fp32 (``--keep-fp32``; ``pit_det_deploy.quantize.KEEP_FP32``), calibrated on
            noise images like the one timed: speed only, not accuracy.
        flops: count FLOPs.
        profile: profile each row (0: not): the N ops taking most time, on CUDA the kernel launches
            and synchronisations of one call, and for eager rows the wall time per stage, over
            ``iters`` more calls (:mod:`.profiling`); for the runtimes' rows, the N kinds of op
            taking most time over ``iters`` calls, by the runtime's own profiler
            (:func:`pit_det_deploy.runtime.op_times`).
        train: also the training throughput of each detector in each precision (:mod:`.training`).
        cfg_options: config overrides for every detector.
    """

    dtypes: Sequence[str] = ('fp32',)
    impls: Sequence[str] = ('stock', 'fast')
    shape: Tuple[int, int] = (400, 667)
    device: str = 'cpu'
    warmup: int = 3
    iters: int = 20
    compile: bool = False
    compile_mode: str = 'default'
    runtimes: Sequence[str] = ()
    graphs: Sequence[str] = ('grid_sample',)
    int8: Sequence[Tuple[str, ...]] = ()
    flops: bool = True
    profile: int = 0
    train: bool = False
    cfg_options: dict = field(default_factory=dict)

    def calls(self, num_configs: int) -> int:
        """Timed calls in all (for a progress bar)."""
        modes = [False, True] if self.compile else [False]
        eager = 2 + bool(self.profile)  # test_step, backbone and the stages
        return num_configs * (
            len(self.impls) * len(self.dtypes) * sum(self.iters * (1 if c else eager) for c in modes)
            + self.iters * len(self.runtimes) * (len(self.graphs) + len(self.int8))
            + self.iters * len(self.dtypes) * self.train
        )


def label(config: str) -> str:
    return osp.splitext(osp.basename(config))[0].replace('deformable_detr_', '')


def variant(row: dict) -> str:
    """'fast bf16 compiled' or 'onnxruntime gather int8': what a result row measured (impl,
    precision and eager / compiled; for a deployed row its runtime, graph and precision, and for an
    INT8 row whose fp32 groups are not the quantizer's default, those: 'int8 fp32:head+attention')."""
    if row.get('runtime', 'torch') in RUNTIMES:
        groups = row.get('int8_fp32')
        kept = '' if groups is None or tuple(groups) == DEFAULT_KEEP else f' fp32:{"+".join(groups) or "none"}'
        return f'{row["runtime"]} {row["impl"]} {row["dtype"]}{kept}'
    return f'{row["impl"]} {row["dtype"]}' + (' compiled' if row['compiled'] else '')


def benchmark(
    configs: Sequence[str], settings: Settings, env: dict, progress: Optional[Callable[[str, int], None]] = None
) -> List[dict]:
    """Result rows of every detector in ``configs``; ``env`` is :func:`.measure.environment`'s,
    with ``matmul_tflops`` per dtype. ``progress(what, calls_done)`` is called as calls are timed."""
    unknown = [i for i in settings.impls if i not in ops.IMPLS]
    if unknown:
        raise ValueError(f'msda_impl must be one of {ops.IMPLS}, got {unknown}')
    impls = list(settings.impls)
    rows = []
    for config in configs:
        rows += benchmark_config(config, impls, settings, env, progress or (lambda what, n: None))
    return rows


def benchmark_config(
    config: str, impls: List[str], settings: Settings, env: dict, progress: Callable[[str, int], None]
) -> List[dict]:
    """One result row per precision x kernel x eager / compiled (and onnxruntime) of one detector."""
    device = settings.device
    model = bm.build_detector(config, cfg_options=settings.cfg_options).to(device)
    data = bm.to_device(bm.make_sample(*settings.shape), device)
    image = model.data_preprocessor(data, False)['inputs']
    params = bm.count_params(model)
    flops = None
    if settings.flops:
        flops = bm.count_flops(model, lambda: model.test_step(data))
        flops['backbone'] = bm.count_flops(model.backbone, lambda: model.backbone(image))['total']
    rows = []
    for dtype in settings.dtypes:
        for impl in impls:
            for compiled in [False, True] if settings.compile else [False]:
                row = dict(
                    config=config,
                    model=label(config),
                    runtime='torch',
                    impl=impl,
                    dtype=dtype,
                    compiled=compiled,
                    params=params,
                    flops=flops,
                )
                what = f'{label(config)} {variant(row)}'
                try:
                    set_msda_impl(model, impl)
                    row['kernel'] = ops.resolve(impl, device)
                    row.update(measure(model, data, image, dtype, compiled, settings, lambda: progress(what, 1)))
                except Exception as err:  # one variant failing must not cost the run its other rows
                    row['error'] = f'{type(err).__name__}: {err}'
                rows.append(row)
    if settings.runtimes:
        for row, measured in measure_deployed(model, image, settings, label(config), progress):
            row.update(
                config=config,
                model=label(config),
                compiled=False,
                kernel=row['impl'],  # the exported graph: its standard ops, or pit-det's fused op
                params=params,
                flops=flops,
                **measured,
            )
            rows.append(row)
    _compare(rows, flops, env)
    return rows


def _compare(rows: List[dict], flops: Optional[dict], env: dict) -> None:
    """Achieved FLOP/s of each measured row, and its detections and latency against the first one."""
    reference = None
    for row in rows:
        if 'error' in row:
            continue
        dets = row.pop('detections')
        if flops:
            rate = flops['total'] / (row['latency']['median_ms'] / 1e3)
            row['achieved_tflops'] = rate / 1e12
            if row['dtype'] in env['matmul_tflops']:
                row['share_of_matmul_rate'] = rate / (env['matmul_tflops'][row['dtype']] * 1e12)
        if reference is None:  # the model's first variant is what the others are held to
            reference = (row, dets)
        else:
            ref_row, ref_dets = reference
            row['reference'] = variant(ref_row)
            row['vs_reference'] = bm.compare_detections(dets, ref_dets)
            row['speedup'] = ref_row['latency']['median_ms'] / row['latency']['median_ms']


def measure(model, data: dict, image, dtype: str, compiled: bool, settings: Settings, progress) -> dict:
    """Latency (and, eager, the backbone's), peak memory and detections of one variant."""
    device = settings.device
    step = lambda: model.test_step(data)  # noqa: E731
    result = {}
    with torch.no_grad(), bm.autocast(device, dtype):
        if compiled:
            torch._dynamo.reset()  # a fresh compile per variant: its time is measured, no cache limit hit
            counters.clear()
            mode = None if settings.compile_mode == 'default' else settings.compile_mode
            fn = torch.compile(model.test_step, mode=mode)
            step = lambda: fn(data)  # noqa: E731
            # The first call traces, generates and compiles the kernels, then runs once.
            result['compile_s'] = bm.time_calls(step, 0, 1, device)[0]
            result['graphs'] = counters['stats']['unique_graphs']
            result['graph_breaks'] = sum(counters['graph_break'].values())
            if settings.compile_mode == 'reduce-overhead':
                # Inductor compiles a graph without CUDA graphs when it cannot capture it (CPU
                # tensors, dynamic shapes, ...), and says so only in this counter and its log; read
                # after the compile, it counts those graphs (later calls add re-recording skips).
                result['cudagraph_skips'] = counters['inductor']['cudagraph_skips']
        with bm.peak_memory(device) as memory:
            latency = bm.time_calls(step, settings.warmup, settings.iters, device, progress)
        result.update(latency=bm.summarize(latency), **memory)
        result['backbone_latency'] = (
            None
            if compiled
            else bm.summarize(
                bm.time_calls(lambda: model.backbone(image), settings.warmup, settings.iters, device, progress)
            )
        )
        result['detections'] = bm.detections(step())
        if settings.profile:
            if not compiled:  # a compiled call is whole graphs: no stage boundaries in it
                result['stages'] = stage_times(model, step, device, settings.iters, progress)
            result.update(profile_call(step, device, settings.profile, None if compiled else model))
    return result


def measure_deployed(
    model, image, settings: Settings, name: str, progress: Callable[[str, int], None]
) -> Iterator[Tuple[dict, dict]]:
    """The detector exported as ``tools/deploy/export.py`` does (static, at this input size) for each of
    ``settings.graphs`` (and INT8 of the first, per ``settings.int8``), run in each of ``settings.runtimes`` on CPU with
    as many threads as torch: latency (from the normalised image: the normalisation, about 1 ms,
    is outside the graph), export time (``export_s``; for INT8 the quantization's), detections,
    and with ``settings.profile`` the ops taking most time (``top_ops``).
    Yields (row keys, measurements)."""
    from pit_det.export import export_onnx
    from pit_det_deploy import load_graph, op_times
    from pit_det_deploy.quantize import quantize

    threads = torch.get_num_threads()
    x = image.cpu()
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for graph in settings.graphs:
            path = osp.join(tmp, f'{graph}.onnx')
            start = time.perf_counter()
            export_onnx(model, x, path, msda=graph)
            files.append((dict(impl=graph, dtype='fp32'), path, time.perf_counter() - start))
        for k, keep in enumerate(settings.int8):  # each calibrated on the same 4 noise images
            graph, fp32, path = settings.graphs[0], files[0][1], osp.join(tmp, f'int8_{k}.onnx')
            noise = (torch.randn(x.shape, generator=torch.Generator().manual_seed(i)).numpy() for i in range(4))
            start = time.perf_counter()
            quantize(fp32, path, ({'image': n} for n in noise), keep=keep)
            files.append((dict(impl=graph, dtype='int8', int8_fp32=list(keep)), path, time.perf_counter() - start))
        for runtime in settings.runtimes:
            for kind, path, prepare_s in files:
                run = load_graph(path, runtime, threads)
                feed = {'image': x.numpy()}
                step = lambda: run(feed)  # noqa: E731
                what = f'{name} {variant(dict(runtime=runtime, **kind))}'
                with bm.peak_memory('cpu') as memory:
                    latency = bm.time_calls(step, settings.warmup, settings.iters, 'cpu', lambda: progress(what, 1))
                boxes, scores, labels = step()
                profile = {}
                if settings.profile:  # apart from the timed calls: the profiler costs time itself
                    ops = op_times(path, runtime, feed, threads, calls=settings.iters, warmup=settings.warmup)
                    profile['top_ops'] = ops[: settings.profile]
                yield (
                    dict(runtime=runtime, **kind),
                    dict(
                        latency=bm.summarize(latency),
                        backbone_latency=None,
                        export_s=prepare_s,
                        **memory,
                        detections=tuple(torch.from_numpy(a[0]) for a in (boxes, scores, labels)),
                        **profile,
                    ),
                )
