"""Latency, memory, parameters and FLOPs of detectors built from configs (tools/analysis/benchmark.py).

Conventions:
* Latency is ``model.test_step`` on a prepared batch-1 sample (preprocessing, backbone, neck,
  encoder, decoder, post-processing; no data loading), median and p90 over timed iterations
  after warm-up, with CUDA synchronised around each one.
* FLOPs are 2 per multiply-add (``torch.utils.flop_counter``: matmuls, convolutions, attention).
  Two kinds of op the counter sees as 0 are added analytically: multi-scale deformable attention
  (``pit_det.ops.msda_flops``, from each module's query count and levels) and CPU
  ``scaled_dot_product_attention`` (torch's own SDPA formula, which it only registers for the
  GPU kernels). Elementwise ops, softmax and normalisation are not counted.
* Efficiency is FLOPs / latency against the measured rate of a large matmul on the same device,
  dtype and threads: how far the model is from the hardware's practical limit.
"""

import platform
import statistics
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.structures import DetDataSample
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from pit_det_deploy.hardware import cpu_info, describe_cpu, device_name

from ..models.build import build_detector  # noqa: F401  the benchmark's detectors: seeded random weights
from ..ops import msda_flops
from ..ops.mmcv_cuda import mmcv_has_cuda_ops

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def make_sample(height: int, width: int, seed: int = 0) -> dict:
    """A ``test_step`` batch of one random-noise uint8 image, as the data loader would give."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
    meta = dict(img_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0), img_id=0)
    return dict(inputs=[image], data_samples=[DetDataSample(metainfo=meta)])


def to_device(data: dict, device: str) -> dict:
    return dict(inputs=[t.to(device) for t in data['inputs']], data_samples=data['data_samples'])


def synchronize(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize(device)  # that device's queue (cuda:1 need not be the current one)


def ieee_fp32(device: str) -> None:
    """fp32 as IEEE fp32 on CUDA: matmuls (torch's default) and cuDNN's convolutions (TF32 by
    torch's default: the backbones' patch embeddings, PiT's pooling, ResNet-50, the neck)."""
    if device.startswith('cuda'):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def autocast(device: str, dtype: str):
    """fp32: nothing; fp16 / bf16: autocast on the device (mmdet's own AMP mechanism)."""
    if dtype == 'fp32':
        return nullcontext()
    return torch.autocast(device_type=device.split(':')[0], dtype=DTYPES[dtype])


def time_calls(
    fn: Callable[[], object], warmup: int, iters: int, device: str, progress: Optional[Callable[[], None]] = None
) -> List[float]:
    """Seconds per call of ``fn`` over ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if progress is not None:
            progress()
    return times


def summarize(times: List[float]) -> Dict[str, float]:
    """Median, p90 and mean in ms, and images/s at the median (batch 1)."""
    ms = sorted(t * 1e3 for t in times)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    median = statistics.median(ms)
    return dict(median_ms=median, p90_ms=p90, mean_ms=statistics.fmean(ms), images_per_s=1e3 / median, iters=len(ms))


@contextmanager
def peak_memory(device: str) -> Iterator[dict]:
    """Peak memory of the enclosed code, in MiB, into the yielded dict's ``peak_mib``.

    CUDA: ``max_memory_allocated`` (tensors only). CPU on Linux: the process's peak resident set
    (VmHWM), reset on entry by writing 5 to /proc/self/clear_refs, so it covers the enclosed code
    only (weights included: they are resident). Elsewhere: ``ru_maxrss``, a process-wide peak.
    """
    result = {}
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        result['peak_mib'] = torch.cuda.max_memory_allocated(device) / 2**20
        result['peak_kind'] = 'cuda max_memory_allocated'
        return
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        reset = True
    except OSError:
        reset = False
    yield result
    if reset:
        with open('/proc/self/status') as f:
            hwm = next(line for line in f if line.startswith('VmHWM:'))
        result['peak_mib'] = int(hwm.split()[1]) / 1024
        result['peak_kind'] = 'process peak RSS (VmHWM, reset before the run)'
    else:
        import resource

        scale = 1 if platform.system() == 'Darwin' else 1024  # bytes on macOS, KiB on Linux
        result['peak_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
        result['peak_kind'] = 'process peak RSS since start (ru_maxrss)'


def keep_freed_memory() -> bool:
    """glibc: keep freed memory for reuse instead of handing it back to the OS at once.

    By default glibc serves blocks above 32 MiB with mmap and unmaps them on free, so every
    large temporary tensor is page-faulted in afresh (the kernel zeroes each page). This sets
    ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` as jemalloc / tcmalloc users get by default.
    Process-wide; returns False where it does not apply (not glibc).
    """
    import ctypes

    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 2**30) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


@contextmanager
def _msda_counter(model: nn.Module) -> Iterator[List[int]]:
    """Adds ``msda_flops`` of every deformable-attention call made inside, into ``counts``."""
    counts: List[int] = []

    def hook(module, args, kwargs, output):
        query = kwargs.get('query', args[0] if args else None)
        batch, queries = (query.shape[0], query.shape[1]) if module.batch_first else (query.shape[1], query.shape[0])
        counts.append(
            msda_flops(queries, module.num_heads, module.num_levels, module.num_points, module.embed_dims, batch)
        )

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, MultiScaleDeformableAttention)
    ]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def count_flops(model: nn.Module, fn: Callable[[], object]) -> Dict[str, float]:
    """FLOPs of one call of ``fn`` (which runs ``model``), split as the module docstring says.

    Returns:
        dict with ``total``, ``counted`` (by torch's counter, CPU SDPA included) and
        ``msda_analytic`` (deformable attention in ``model``), in FLOPs.
    """
    mapping = {}
    cpu_sdpa = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _cpu_sdpa_flops
    requires_grad = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # the counter's module tracker wants no autograd under no_grad
    try:
        with (
            torch.no_grad(),
            _msda_counter(model) as msda,
            FlopCounterMode(display=False, custom_mapping=mapping) as counter,
        ):
            fn()
    finally:
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
    counted = counter.get_total_flops()
    return dict(total=counted + sum(msda), counted=counted, msda_analytic=sum(msda))


def count_params(model: nn.Module) -> Dict[str, int]:
    return dict(
        total=sum(p.numel() for p in model.parameters()), backbone=sum(p.numel() for p in model.backbone.parameters())
    )


def matmul_rate(device: str, dtype: str = 'fp32', size: int = 2048, iters: int = 10) -> float:
    """Measured FLOP/s of a ``size``-cubed matmul: the practical peak the models are held to."""
    a = torch.randn(size, size, device=device, dtype=DTYPES[dtype])
    b = torch.randn(size, size, device=device, dtype=DTYPES[dtype])
    times = time_calls(lambda: a @ b, warmup=3, iters=iters, device=device)
    return 2 * size**3 / statistics.median(times)


def detections(result) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pred = result[0].pred_instances
    return pred.bboxes.float().cpu(), pred.scores.float().cpu(), pred.labels.cpu()


def compare_detections(a, b) -> Dict[str, float]:
    """Largest box (pixels) and score differences of two ``detections`` results, same order."""
    return dict(
        max_box_diff=(a[0] - b[0]).abs().max().item(),
        max_score_diff=(a[1] - b[1]).abs().max().item(),
        labels_equal=bool(torch.equal(a[2], b[2])),
    )


def environment(device: str) -> Dict[str, object]:
    """Device, threads and versions: what a latency figure means nothing without.

    On CPU: the model, the vector ISA torch's kernels use, and whether bf16 / fp16 are native
    (``pit_det.precision``); a figure holds for that processor class and thread count only.
    """
    import mmcv
    import mmdet

    cpu = cpu_info()
    info = dict(
        device=device,
        torch=torch.__version__,
        mmcv=mmcv.__version__,
        mmdet=mmdet.__version__,
        onnxruntime=_version('onnxruntime'),
        openvino=_version('openvino'),
        threads=torch.get_num_threads(),
        cpu=cpu.model,
        cpu_isa=cpu.isa,
        cpu_cores=cpu.cores,
        cpu_native_bf16=cpu.native('bf16'),
        cpu_native_fp16=cpu.native('fp16'),
        cpu_native_int8=cpu.native('int8'),  # int8 dot products (VNNI, AMX, i8mm): what INT8 rows depend on
        cpu_family=cpu.family,
        python=platform.python_version(),
        date=time.strftime('%Y-%m-%d %H:%M %Z'),
    )
    if device.startswith('cuda'):
        info['gpu'] = device_name(device)
        info['cuda'] = torch.version.cuda
        # fp32 rows are IEEE fp32 where both are False (ieee_fp32()); torch's defaults leave cuDNN's
        # convolutions in TF32.
        info['tf32_matmul'] = torch.backends.cuda.matmul.allow_tf32
        info['tf32_conv'] = torch.backends.cudnn.allow_tf32
        info['mmcv_cuda_ops'] = mmcv_has_cuda_ops()  # else 'fast' runs Triton and 'stock' cannot run
    return info


def describe_environment(env: Dict[str, object]) -> str:
    """One header line naming the hardware and versions of ``environment(...)``."""
    native = {d: env[f'cpu_native_{d}'] for d in ('bf16', 'fp16', 'int8')}
    cpu = describe_cpu(env['cpu'], env['cpu_isa'], native, env['cpu_cores'], env['cpu_family'])
    where = f'{env["gpu"]}, host {cpu}' if env.get('gpu') else cpu
    names = {k: f'{k} {env[k]}' for k in ('torch', 'cuda', 'mmcv', 'onnxruntime', 'openvino') if env.get(k)}
    if 'mmcv_cuda_ops' in env:
        names['mmcv'] += f' ({"with" if env["mmcv_cuda_ops"] else "without"} CUDA ops)'
    versions = ', '.join(names.values())
    return f'{env["device"]}: {where}; {env["threads"]} threads; {versions}'


def _version(package: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
