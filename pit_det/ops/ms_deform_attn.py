"""Multi-scale deformable attention kernels: pit-det's CPU kernel beside mmcv's.

Three implementations compute the same function (Deformable DETR, arXiv 2010.04159, Eq. 3):

* ``'stock'``: what mmcv 2.1 runs, its CUDA kernel on GPU and the pure-PyTorch
  ``multi_scale_deformable_attn_pytorch`` (grid_sample per level, stack, multiply, sum) on CPU.
* ``'fast'``: on CPU, pit-det's C++ kernel (``csrc/ms_deform_attn_cpu.cpp``), which samples,
  weights and sums in one pass without the large intermediates; on GPU, mmcv's CUDA kernel.
* ``'auto'``: ``'fast'`` when the C++ kernel can be built here, else ``'stock'`` with a warning.

The C++ kernel is compiled on first use with ``torch.utils.cpp_extension.load`` (about 20 s on
2 cores; the set-up's ``tools/self_check.py`` does it once) and cached under
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), rebuilt when its source or
torch changes.
"""
import logging
import os.path as osp
import warnings
from functools import lru_cache
from types import ModuleType

import torch
from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                              multi_scale_deformable_attn_pytorch)
from torch import Tensor
from torch.autograd.function import once_differentiable

IMPLS = ('auto', 'fast', 'stock')
_SOURCE = osp.join(osp.dirname(__file__), 'csrc', 'ms_deform_attn_cpu.cpp')


class ExtensionUnavailable(RuntimeError):
    """The C++ kernel could not be compiled or loaded here."""


# Vector ISA flags per torch's own CPU capability. The capability is part of the extension's
# name, so a cache directory shared by different machines never serves a build that the CPU
# cannot run.
_ISA_FLAGS = {'avx512': ['-march=x86-64-v4'], 'avx2': ['-march=x86-64-v3']}


@lru_cache(maxsize=None)
def load_extension(verbose: bool = False) -> ModuleType:
    """Compiles (once, then cached on disk) and imports the CPU kernel.

    Raises:
        ExtensionUnavailable: with the compiler's reason, when there is no working toolchain.
    """
    # Importing cpp_extension on a machine without CUDA logs "No CUDA runtime is found";
    # this kernel is CPU-only, so that line is noise.
    logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    from torch.utils.cpp_extension import load
    isa = torch.backends.cpu.get_cpu_capability().lower()
    # -fopenmp makes at::parallel_for use torch's OpenMP pool (libgomp is already loaded by
    # torch, so the extension shares it rather than starting a second runtime).
    flags = ['-O3', '-fopenmp'] + _ISA_FLAGS.get(isa, [])
    try:
        return load(name=f'pit_det_ms_deform_attn_cpu_{isa}', sources=[_SOURCE], extra_cflags=flags,
                    extra_ldflags=['-fopenmp'], verbose=verbose)
    except Exception as e:  # no compiler, no headers, ...
        raise ExtensionUnavailable(f'could not build the pit-det CPU kernel from {_SOURCE}: {e}') from e


@lru_cache(maxsize=None)
def extension_available() -> bool:
    try:
        load_extension()
        return True
    except ExtensionUnavailable as e:
        warnings.warn(f'{e}\nFalling back to the stock (mmcv pure-PyTorch) deformable attention.')
        return False


class _MSDeformAttnCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights)
        return load_extension().forward(value, spatial_shapes, level_start_index,
                                        sampling_locations, attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        grad_value, grad_loc, grad_attn = load_extension().backward(*ctx.saved_tensors,
                                                                    grad_output.contiguous())
        return grad_value, None, None, grad_loc, grad_attn


def resolve_impl(impl: str) -> str:
    """``'auto'`` becomes ``'fast'`` or ``'stock'``; ``'fast'`` must build here.

    Raises:
        ValueError: for an unknown name.
        ExtensionUnavailable: for ``'fast'`` when the kernel cannot be built, with the reason.
    """
    if impl not in IMPLS:
        raise ValueError(f'msda_impl must be one of {IMPLS}, got {impl!r}')
    if impl == 'auto':
        return 'fast' if extension_available() else 'stock'
    if impl == 'fast':
        load_extension()  # fail now, not at the first forward
    return impl


def multi_scale_deformable_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                                sampling_locations: Tensor, attention_weights: Tensor,
                                impl: str = 'fast', im2col_step: int = 64) -> Tensor:
    """Samples each level at the given locations and sums the samples with attention weights.

    Args:
        value: (B, S, M, D) values of M heads, S = sum of H_l * W_l over the L levels.
        spatial_shapes: (L, 2) int64, (H_l, W_l) of each level.
        level_start_index: (L,) int64, where each level starts in S.
        sampling_locations: (B, Q, M, L, P, 2) normalised (x, y); pixel centres at (i + 0.5) / W.
        attention_weights: (B, Q, M, L, P), already normalised over L * P.
        impl: 'fast', 'stock' or 'auto' (see the module docstring).
        im2col_step: batch chunk of mmcv's CUDA kernel.

    Returns:
        (B, Q, M * D); samples outside a map read zero (grid_sample's zero padding).
    """
    impl = resolve_impl(impl)
    if value.is_cuda:  # both name mmcv's CUDA kernel: the fast CPU kernel has no GPU twin
        return MultiScaleDeformableAttnFunction.apply(value, spatial_shapes, level_start_index,
                                                      sampling_locations, attention_weights,
                                                      im2col_step)
    if impl == 'stock':
        return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                                   attention_weights)
    dtype = value.dtype
    if dtype not in (torch.float32, torch.float64):  # bf16 / fp16 under autocast: compute in fp32
        value, sampling_locations, attention_weights = (
            t.float() for t in (value, sampling_locations, attention_weights))
    else:
        sampling_locations = sampling_locations.to(dtype)
        attention_weights = attention_weights.to(dtype)
    out = _MSDeformAttnCPU.apply(value.contiguous(), spatial_shapes.long().contiguous(),
                                 level_start_index.long().contiguous(),
                                 sampling_locations.contiguous(), attention_weights.contiguous())
    return out.to(dtype)


def msda_flops(num_queries: int, num_heads: int, num_levels: int, num_points: int,
               embed_dims: int, batch_size: int = 1) -> int:
    """FLOPs of the sampling core, which FLOP counters (fvcore, mmengine, torch) count as 0.

    Per sample and channel: 4 bilinear corner products + 1 attention product, each a
    multiply-add of 2 FLOPs, so ``2 * 5 * B * Q * L * P * C`` with C = M * D = embed_dims.
    The corner weights and the softmax (O(B * Q * M * L * P), no channel factor) are left out, as
    counters leave out elementwise ops. The four linear layers around it are counted by the
    counters as usual.
    """
    del num_heads  # the heads split the channels: M * D = embed_dims
    return 2 * 5 * batch_size * num_queries * num_levels * num_points * embed_dims
