"""Deformable-attention kernels side by side at a detector's real shapes: each kernel's output and
gradients checked against mmcv's pure-PyTorch function in fp64, then timed forward and forward +
backward (``tools/analysis/benchmark_msda.py``).

Kernels are ``pit_det.ops.KERNELS`` ('cpp', 'mmcv-cuda', 'triton', 'mmcv-pytorch', 'grid_sample',
'gather'; :mod:`pit_det.ops.ms_deform_attn`) plus 'mmcv-cuda-source': mmcv's own CUDA kernel compiled with nvcc from
the sources that ship with mmcv (``mmcv/ops/csrc``), for GPU machines whose mmcv was built without
CUDA ops. It is mmcv's code unchanged, with a two-function binding of its own; pit-det gives it
fp32 values (it dispatches fp32, fp64 and fp16, no bf16).

Latencies are per call from Python, each call synchronised: ``pit_det.ops.run_kernel``'s Python is in
them, and at 300 queries a call is near the cost of a launch.
"""

import math
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

from ..ops import run_kernel
from .measure import summarize, time_calls

# The deformable-attention levels of a 400 x 667 image at strides 8, 16, 32 and the neck's stride 64, as
# ResNet-50 Deformable DETR has them (5,600 tokens); PiT-S's first level is 49 x 83 (5,467 tokens).
# docs/benchmark.md's kernel table and the GPU tier's tolerances were measured at these.
LEVELS_400x667 = ((50, 84), (25, 42), (13, 21), (7, 11))
# The queries of its deformable attentions: the decoder's, and the encoder's (one per value token).
QUERIES_400x667 = dict(decoder=300, encoder=sum(h * w for h, w in LEVELS_400x667))
MMCV_SOURCE = 'mmcv-cuda-source'
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}
# Largest difference from the fp64 reference, relative to each tensor's largest magnitude, that a
# row may show. fp32: 3.0e-6 to 3.9e-6 measured (C++ kernel on CPU; every kernel on an H200 at 300
# queries); 1e-5 is 84 fp32 ulps. bf16: the output is rounded once to bf16, half a unit in the last
# place (2^-8) on a GPU, a whole one (2^-7) in Triton's interpreter, which truncates.
TOLERANCE = {'fp32': 1e-5, 'bf16': 2**-7}

_BINDING = r"""
#include <torch/extension.h>
// Defined in mmcv/ops/csrc/pytorch/cuda/ms_deform_attn_cuda.cu (mmcv 2.1.0), compiled beside this file.
at::Tensor ms_deform_attn_cuda_forward(const at::Tensor &value, const at::Tensor &spatial_shapes,
                                       const at::Tensor &level_start_index, const at::Tensor &sampling_loc,
                                       const at::Tensor &attn_weight, const int im2col_step);
void ms_deform_attn_cuda_backward(const at::Tensor &value, const at::Tensor &spatial_shapes,
                                  const at::Tensor &level_start_index, const at::Tensor &sampling_loc,
                                  const at::Tensor &attn_weight, const at::Tensor &grad_output,
                                  at::Tensor &grad_value, at::Tensor &grad_sampling_loc,
                                  at::Tensor &grad_attn_weight, const int im2col_step);
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_cuda_forward);
  m.def("backward", &ms_deform_attn_cuda_backward);
}
"""


def build_mmcv_cuda_kernel(build_dir: Optional[Path] = None):
    """mmcv's CUDA deformable-attention kernel compiled from mmcv's installed sources with nvcc,
    into ``build_dir`` (default: a folder named for it and the CUDA version in torch's extensions
    folder, ``TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``, where a second run finds it built;
    torch's own default folder is private API).

    Raises:
        RuntimeError: no CUDA GPU, no nvcc (``torch.utils.cpp_extension.CUDA_HOME`` unset), or
            mmcv's sources missing, each named.
    """
    import mmcv
    from torch.utils import cpp_extension

    if not torch.cuda.is_available():
        raise RuntimeError("mmcv's CUDA kernel needs a CUDA GPU")
    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError("building mmcv's CUDA kernel needs nvcc (a CUDA toolkit; set CUDA_HOME)")
    csrc = Path(mmcv.__file__).parent / 'ops' / 'csrc'
    source = csrc / 'pytorch' / 'cuda' / 'ms_deform_attn_cuda.cu'
    if not source.is_file():
        raise RuntimeError(f'{source} is missing: this mmcv install ships no CUDA sources')
    name = 'pit_det_mmcv_msda_cuda'
    root = Path(os.environ.get('TORCH_EXTENSIONS_DIR') or Path.home() / '.cache' / 'torch_extensions')
    python = f'py{sys.version_info[0]}{sys.version_info[1]}'  # one folder per Python and CUDA, as torch's own
    build_dir = Path(build_dir or root / f'{name}_{python}_cu{torch.version.cuda}')
    build_dir.mkdir(parents=True, exist_ok=True)
    binding = build_dir / 'binding.cpp'
    if not binding.is_file() or binding.read_text() != _BINDING:  # unchanged: ninja need not rebuild
        binding.write_text(_BINDING)
    return cpp_extension.load(
        name=name,
        sources=[str(binding), str(source)],
        extra_include_paths=[str(csrc / 'common'), str(csrc / 'common' / 'cuda')],
        extra_cuda_cflags=['-O3'],
        build_directory=str(build_dir),
        verbose=False,
    )


class _MmcvSourceKernel(torch.autograd.Function):
    """mmcv's ``MultiScaleDeformableAttnFunction``, calling the separately built module."""

    @staticmethod
    def forward(ctx, module, value, shapes, starts, loc, attn, im2col_step):
        ctx.module, ctx.im2col_step = module, im2col_step
        ctx.save_for_backward(value, shapes, starts, loc, attn)
        return module.forward(value, shapes, starts, loc, attn, im2col_step)

    @staticmethod
    def backward(ctx, grad):
        value, shapes, starts, loc, attn = ctx.saved_tensors
        grads = [torch.zeros_like(t) for t in (value, loc, attn)]
        ctx.module.backward(value, shapes, starts, loc, attn, grad.contiguous(), *grads, ctx.im2col_step)
        return None, grads[0], None, None, grads[1], grads[2], None


def make_inputs(
    levels: Sequence[Tuple[int, int]],
    batch: int,
    queries: int,
    heads: int = 8,
    points: int = 4,
    channels: int = 32,
    device: str = 'cpu',
    seed: int = 0,
) -> List[torch.Tensor]:
    """fp32 (value, spatial_shapes, level_start_index, sampling_locations, attention_weights) on
    ``device``; weights softmaxed over each query's levels and points.

    Locations lie 0.01 to 0.99 px past an integer pixel coordinate (x = loc * W - 0.5), from two
    pixels before a map to two after it (so samples off the map and on its edge rows count too).
    Bilinear sampling has kinks at integer coordinates (pixel centres, map edges), where each kernel
    takes a one-sided derivative of its own and fp32 rounding of x may cross sides; that convention
    is tested on CPU (tests/test_msda_triton.py). Away from them every kernel computes one function.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    B, M, L, P, D = batch, heads, len(levels), points, channels
    value = torch.randn(B, int((shapes[:, 0] * shapes[:, 1]).sum()), M, D, generator=g)
    size = shapes.flip(-1).view(L, 1, 2)  # (W, H) per level
    pixel = (torch.rand(B, queries, M, L, P, 2, generator=g) * (size + 4)).floor() - 2  # -2 .. W + 1
    frac = 0.01 + 0.98 * torch.rand(B, queries, M, L, P, 2, generator=g)
    loc = (pixel + frac + 0.5) / size
    attn = torch.rand(B, queries, M, L * P, generator=g).softmax(-1).view(B, queries, M, L, P)
    return [t.to(device) for t in (value, shapes, starts, loc, attn)]


def kernel_fn(name: str, module=None) -> Callable:
    """``fn(value, shapes, starts, loc, attn) -> (B, Q, M * D)`` for a kernel name."""
    if name == MMCV_SOURCE:
        return lambda v, s, i, loc, a: _MmcvSourceKernel.apply(
            module, v.contiguous(), s, i, loc.contiguous(), a.contiguous(), 64
        )
    return lambda v, s, i, loc, a: run_kernel(name, v, s, i, loc, a)


def forward_backward(
    fn: Callable, value: torch.Tensor, loc: torch.Tensor, attn: torch.Tensor, grad: torch.Tensor
) -> List[torch.Tensor]:
    """``fn(value, loc, attn)`` and the gradients of (value, loc, attn) for output gradient ``grad``."""
    leaves = [t.detach().requires_grad_() for t in (value, loc, attn)]
    out = fn(*leaves)
    out.backward(grad.to(out.dtype))
    return [out.detach(), *(t.grad for t in leaves)]


def max_rel_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest difference relative to the reference's largest magnitude (location gradients scale
    with the map size, so every tensor is held to its own scale)."""
    return ((a.double() - ref).abs().max() / ref.abs().max()).item()


def check_and_time(
    fn: Callable,
    inputs: List[torch.Tensor],
    dtype: torch.dtype,
    device: str,
    warmup: int,
    iters: int,
    reference: Optional[List[torch.Tensor]] = None,
) -> Dict[str, object]:
    """Output and value / location / weight gradients against ``reference`` (:func:`max_rel_diff`),
    then the forward and forward + backward latency."""
    value, shapes, starts, loc, attn = inputs
    value = value.to(dtype)
    g = torch.Generator().manual_seed(1)
    grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3], generator=g).to(device, dtype)

    def fwd_bwd():
        return forward_backward(lambda v, lo, a: fn(v, shapes, starts, lo, a), value, loc, attn, grad)

    row: Dict[str, object] = {}
    if reference is not None:
        row['max_rel_diff'] = {
            name: max_rel_diff(a, r)
            for name, a, r in zip(('output', 'value grad', 'location grad', 'weight grad'), fwd_bwd(), reference)
        }
    with torch.no_grad():
        row['forward'] = summarize(time_calls(lambda: fn(value, shapes, starts, loc, attn), warmup, iters, device))
    row['forward_backward'] = summarize(time_calls(fwd_bwd, warmup, iters, device))
    return row


def reference(inputs: List[torch.Tensor], device: str) -> List[torch.Tensor]:
    """mmcv's pure-PyTorch function in fp64: output and the three gradients (the same output gradient
    as :func:`check_and_time`)."""
    value, shapes, starts, loc, attn = inputs
    leaves = [t.detach().double().requires_grad_() for t in (value, loc, attn)]
    out = multi_scale_deformable_attn_pytorch(leaves[0], shapes, leaves[1], leaves[2])
    g = torch.Generator().manual_seed(1)
    out.backward(torch.randn(out.shape, generator=g).to(device, torch.float64))
    return [out.detach(), *(t.grad for t in leaves)]


def compare_kernels(
    kernels: Sequence[str],
    dtypes: Sequence[str],
    cases: Dict[str, int],
    device: str,
    levels: Sequence[Tuple[int, int]] = LEVELS_400x667,
    batch: int = 2,
    warmup: int = 10,
    iters: int = 50,
    mmcv_build_dir: Optional[Path] = None,
) -> List[Dict[str, object]]:
    """One row per case (name -> queries) x kernel x precision: errors against fp64 and latencies.
    A kernel that cannot run (mmcv's CUDA kernel without nvcc; bf16 for it) gets a row with its
    error instead, and so does one further from the reference than ``TOLERANCE``."""
    module, build_error, rows = None, None, []
    if MMCV_SOURCE in kernels:
        try:
            module = build_mmcv_cuda_kernel(mmcv_build_dir)
        except Exception as err:  # a row that says why, beside the kernels that ran
            build_error = f'{type(err).__name__}: {err}'
    for case, queries in cases.items():
        inputs = make_inputs(levels, batch, queries, device=device)
        ref = reference(inputs, device)
        for dtype in dtypes:
            for name in kernels:
                row = dict(case=case, queries=queries, kernel=name, dtype=dtype)
                if name == MMCV_SOURCE and (build_error or dtype != 'fp32'):
                    rows.append(dict(row, error=build_error or "mmcv's CUDA kernel takes no bf16 values"))
                    continue
                try:
                    row.update(
                        check_and_time(kernel_fn(name, module), inputs, DTYPES[dtype], device, warmup, iters, ref)
                    )
                except Exception as err:
                    row['error'] = f'{type(err).__name__}: {err}'
                rows.append(row)
    for row in rows:
        if 'forward' not in row:
            continue
        worst = max(row['max_rel_diff'].values())
        if not worst <= TOLERANCE[row['dtype']]:  # NaN fails too
            row['error'] = f'{worst:.1e} from the fp64 reference (tolerance {TOLERANCE[row["dtype"]]:.1e})'
        elif not math.isfinite(row['forward']['median_ms']):
            row['error'] = 'no finite latency'
    return rows
