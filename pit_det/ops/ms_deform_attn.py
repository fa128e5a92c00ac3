"""Multi-scale deformable attention: which kernel runs (the dispatcher), and its FLOP count.

Four implementations compute the same function (Deformable DETR, arXiv 2010.04159, Eq. 3):

* ``'stock'``: what mmcv 2.1 runs, its CUDA kernel on GPU and the pure-PyTorch
  ``multi_scale_deformable_attn_pytorch`` (grid_sample per level, stack, multiply, sum) on CPU.
  On a GPU it needs an mmcv built with CUDA ops (:mod:`.mmcv_cuda`).
* ``'fast'``: the custom op ``torch.ops.pit_det.ms_deform_attn`` (:mod:`.ms_deform_attn_op`):
  on CPU pit-det's C++ kernel, which samples, weights and sums in one pass without the large
  intermediates; on GPU mmcv's CUDA kernel when mmcv was built with CUDA ops, else pit-det's
  Triton kernel. Unlike mmcv's, it stays inside ``torch.compile`` and ``torch.export`` graphs.
* ``'triton'``: pit-det's Triton kernel (:mod:`.ms_deform_attn_triton`) on every device: CUDA,
  or CPU under Triton's interpreter (``TRITON_INTERPRET=1``; slow, for tests). It reads bf16 and
  fp16 values natively, where mmcv's CUDA kernel needs fp32.
* ``'grid_sample'`` and ``'gather'``: standard ops only, on every device, given the level
  shapes as Python ints (:mod:`.ms_deform_attn_export`): one ``grid_sample`` per level (ONNX
  GridSample), or one gather and arithmetic with no GridSample. For exported models; slow in
  PyTorch.
* ``'auto'``: ``'fast'`` when the C++ kernel can be built here (:mod:`.extension`), else
  ``'stock'`` with a warning.
"""

import warnings
from typing import List, Optional, Tuple

import torch
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction, multi_scale_deformable_attn_pytorch
from torch import Tensor

from . import extension
from .ms_deform_attn_export import ms_deform_attn_gather, ms_deform_attn_grid_sample
from .ms_deform_attn_op import cuda_kernel, ms_deform_attn
from .ms_deform_attn_triton import ms_deform_attn_triton

IMPLS = ('auto', 'fast', 'stock', 'grid_sample', 'gather', 'triton')


def resolve_impl(impl: str) -> str:
    """``'auto'`` becomes ``'fast'`` or ``'stock'``; ``'fast'`` must build here.

    Raises:
        ValueError: for an unknown name.
        ExtensionUnavailable: for ``'fast'`` when the kernel cannot be built, with the reason.
    """
    if impl not in IMPLS:
        raise ValueError(f'msda_impl must be one of {IMPLS}, got {impl!r}')
    if impl == 'auto':
        return 'fast' if extension.extension_available() else 'stock'
    if impl == 'fast':
        extension.load_extension()  # fail now, not at the first forward
    return impl


def kernel_on(impl: str, device: str) -> str:
    """The kernel that ``impl`` (resolved by :func:`resolve_impl`: not 'auto') runs on ``device``,
    named apart from the choice: 'fast' is 'cpp' on CPU and 'triton' or 'mmcv-cuda' on a GPU
    (:func:`.ms_deform_attn_op.cuda_kernel`); 'stock' is mmcv's pure-PyTorch code on CPU
    ('mmcv-pytorch') and its CUDA kernel on a GPU; 'triton' runs in Triton's interpreter on CPU
    ('triton-interpreter'); 'grid_sample' and 'gather' are themselves everywhere.

    Raises:
        ValueError: 'stock' on a GPU when mmcv has no CUDA ops, where mmcv's module cannot run.
    """
    if not device.startswith('cuda'):
        return {'fast': 'cpp', 'stock': 'mmcv-pytorch', 'triton': 'triton-interpreter'}.get(impl, impl)
    mmcv_cuda = cuda_kernel() == 'mmcv'
    if impl == 'stock' and not mmcv_cuda:
        raise ValueError(
            "'stock' runs mmcv's CUDA kernel on a GPU, and this mmcv was built without CUDA ops; "
            "'fast' and 'triton' run pit-det's Triton kernel"
        )
    return {'fast': 'mmcv-cuda' if mmcv_cuda else 'triton', 'stock': 'mmcv-cuda'}.get(impl, impl)


def multi_scale_deformable_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    impl: str = 'fast',
    im2col_step: int = 64,
    level_shapes: Optional[List[Tuple[int, int]]] = None,
) -> Tensor:
    """Samples each level at the given locations and sums the samples with attention weights.

    Args:
        value: (B, S, M, D) values of M heads, S = sum of H_l * W_l over the L levels.
        spatial_shapes: (L, 2) int64, (H_l, W_l) of each level.
        level_start_index: (L,) int64, where each level starts in S.
        sampling_locations: (B, Q, M, L, P, 2) normalised (x, y); pixel centres at (i + 0.5) / W.
        attention_weights: (B, Q, M, L, P), already normalised over L * P.
        impl: 'fast', 'stock', 'grid_sample', 'gather', 'triton' or 'auto' (see the module docstring).
        im2col_step: batch chunk of mmcv's CUDA kernel.
        level_shapes: ``spatial_shapes`` as Python ints, [(H_l, W_l)]; 'grid_sample' and 'gather' read these
            (taken from ``spatial_shapes`` when not given), the other kernels the tensor.

    Returns:
        (B, Q, M * D); samples outside a map read zero (grid_sample's zero padding).
    """
    if impl == 'auto' or impl not in IMPLS:  # resolved, or named in the error; 'fast' / 'triton' check themselves
        impl = resolve_impl(impl)
    if impl == 'grid_sample':
        if level_shapes is None:
            level_shapes = [tuple(hw) for hw in spatial_shapes.tolist()]
        return ms_deform_attn_grid_sample(value, level_shapes, sampling_locations, attention_weights)
    if impl == 'stock':
        if value.is_cuda:
            return MultiScaleDeformableAttnFunction.apply(
                value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
            )
        return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
    dtype = value.dtype
    if impl == 'fast' and value.is_cuda and cuda_kernel() == 'mmcv' and dtype not in (torch.float32, torch.float64):
        # mmcv's CUDA kernel takes fp32 / fp64 only; said once per process (Python's warning filter).
        warnings.warn(
            f"mmcv's CUDA deformable-attention kernel takes fp32 values only: {dtype} values are cast to "
            "fp32 for it (msda_impl='triton' reads them as they are)",
            stacklevel=2,
        )
        value = value.float()
    # The kernels accumulate in fp32 (fp64 for fp64 values) and take locations and weights in it;
    # on CPU and in Triton bf16 / fp16 values are read as they are.
    compute = torch.promote_types(value.dtype, torch.float32)
    sampling_locations, attention_weights = sampling_locations.to(compute), attention_weights.to(compute)
    if impl == 'gather':
        return ms_deform_attn_gather(value, spatial_shapes, sampling_locations, attention_weights, level_shapes)
    if impl == 'triton':
        return ms_deform_attn_triton(
            value, spatial_shapes.long(), level_start_index.long(), sampling_locations, attention_weights
        )
    out = ms_deform_attn(
        value.contiguous(),
        spatial_shapes.long().contiguous(),
        level_start_index.long().contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
        im2col_step,
    )
    return out.to(dtype)


def msda_flops(
    num_queries: int, num_heads: int, num_levels: int, num_points: int, embed_dims: int, batch_size: int = 1
) -> int:
    """FLOPs of the sampling core, which FLOP counters (fvcore, mmengine, torch) count as 0.

    Per sample and channel: 4 bilinear corner products + 1 attention product, each a
    multiply-add of 2 FLOPs, so ``2 * 5 * B * Q * L * P * C`` with C = M * D = embed_dims.
    The corner weights and the softmax (O(B * Q * M * L * P), no channel factor) are left out, as
    counters leave out elementwise ops. The four linear layers around it are counted by the
    counters as usual.
    """
    del num_heads  # the heads split the channels: M * D = embed_dims
    return 2 * 5 * batch_size * num_queries * num_levels * num_points * embed_dims
