"""Multi-scale deformable attention: which kernel runs (:func:`resolve`), running it, and its
FLOP count.

A config asks for an *impl* (``msda_impl``), which may depend on the device; :func:`resolve`
turns it into the *kernel* that runs there. Every kernel computes the same function (Deformable
DETR, arXiv 2010.04159, Eq. 3):

=============  ======================  ================================================
impl           kernel on CPU           kernel on CUDA
=============  ======================  ================================================
'fast'         'cpp'                   'mmcv-cuda' where mmcv has CUDA ops, else 'triton'
'stock'        'mmcv-pytorch'          'mmcv-cuda' (an error where mmcv has no CUDA ops)
'triton'       'triton' (interpreter)  'triton'
'grid_sample'  'grid_sample'           'grid_sample'
'gather'       'gather'                'gather'
'auto'         'fast', or 'stock' with a warning where the C++ kernel cannot be built
=============  ======================  ================================================

The kernels, and the one op through which each runs:

* ``'cpp'``: pit-det's C++ kernel (``torch.ops.pit_det.ms_deform_attn`` on CPU tensors): samples,
  weights and sums in one pass without mmcv's large intermediates.
* ``'mmcv-cuda'``: mmcv's CUDA kernel (the same op on CUDA tensors), which takes fp32 values only.
  Unlike mmcv's own ``autograd.Function``, the op stays inside ``torch.compile`` and
  ``torch.export`` graphs.
* ``'triton'``: pit-det's Triton kernel (``torch.ops.pit_det.ms_deform_attn_triton``), which needs
  no CUDA build and reads bf16 and fp16 values natively. On CPU tensors it runs in Triton's
  interpreter (``TRITON_INTERPRET=1``; slow, for tests).
* ``'mmcv-pytorch'``: mmcv's ``multi_scale_deformable_attn_pytorch`` (grid_sample per level, stack,
  multiply, sum).
* ``'grid_sample'`` and ``'gather'``: standard ops only, given the level shapes as Python ints
  (:mod:`.ms_deform_attn_export`): one ``grid_sample`` per level (ONNX GridSample), or one gather
  and arithmetic with no GridSample. For exported models; slow in PyTorch.

Where mmcv has CUDA ops, 'fast' takes them: on an NVIDIA H200 mmcv's CUDA kernel ran the forward of
PiT-S's decoder call 3.7x and of its encoder call 1.5x faster than the Triton kernel, calls timed
alone (docs/benchmark.md, "Deformable attention kernels"). Inside the whole detector they are not
yet compared on a GPU.
"""

import warnings
from typing import Dict, List, Optional, Tuple, Union

import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
from mmengine.logging import print_log
from torch import Tensor

from . import extension
from . import ms_deform_attn_triton as triton_kernel
from .mmcv_cuda import mmcv_has_cuda_ops
from .ms_deform_attn_export import ms_deform_attn_gather, ms_deform_attn_grid_sample
from .ms_deform_attn_op import ms_deform_attn
from .ms_deform_attn_triton import ms_deform_attn_triton

IMPLS = ('auto', 'fast', 'stock', 'triton', 'grid_sample', 'gather')
KERNELS = ('cpp', 'mmcv-cuda', 'triton', 'mmcv-pytorch', 'grid_sample', 'gather')

_resolved: Dict[Tuple[str, str], str] = {}  # (impl, device type) -> kernel, each logged once


def device_type(tensor: Tensor) -> str:
    """'cuda' for a tensor that reports ``is_cuda``, else its device type: the key of :func:`resolve`."""
    return 'cuda' if tensor.is_cuda else tensor.device.type


def resolve(impl: str, device: Union[str, torch.device]) -> str:
    """The kernel (one of :data:`KERNELS`) that ``impl`` runs on ``device`` (the table above).

    The first answer for each (impl, device type) is logged, so a training log says which kernel
    ran; later calls are a dict lookup. Inside a ``torch.compile`` trace a first answer is
    computed without being logged or kept. ``resolve.cache_clear()`` forgets the answers (for tests
    that change mmcv's build or the environment).

    Raises:
        ValueError: an unknown impl, a device other than CPU and CUDA, or 'stock' on CUDA where mmcv
            has no CUDA ops.
        ExtensionUnavailable: 'fast' on CPU when the C++ kernel cannot be built, with the reason.
        TritonUnavailable: 'triton' (or 'fast' on CUDA without mmcv's CUDA ops) where Triton
            cannot run, with the reason.
    """
    kind = torch.device(device).type
    kernel = _resolved.get((impl, kind))
    if kernel is None and torch.compiler.is_compiling():
        return _decide(impl, kind)  # traced: no logging (mmengine's logger takes a lock dynamo cannot trace)
    if kernel is None:
        kernel = _decide(impl, kind)
        _resolved[impl, kind] = kernel
        print_log(f'deformable attention: msda_impl {impl!r} runs the {kernel!r} kernel on {kind}', logger='current')
    return kernel


resolve.cache_clear = _resolved.clear


def _decide(impl: str, kind: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f'msda_impl must be one of {IMPLS}, got {impl!r}')
    if kind not in ('cpu', 'cuda'):
        raise ValueError(f'deformable attention runs on CPU and CUDA tensors, not on {kind}')
    if impl in ('grid_sample', 'gather'):
        return impl
    if impl == 'auto':
        if kind == 'cuda' or extension.extension_available():  # warns with the reason when not
            return _decide('fast', kind)
        return 'mmcv-pytorch'
    if kind == 'cpu':
        if impl == 'fast':
            extension.load_extension()  # fail now, not at the first forward
            return 'cpp'
        if impl == 'triton':
            triton_kernel.check_runs_on(kind)
        return {'stock': 'mmcv-pytorch', 'triton': 'triton'}[impl]
    if impl == 'stock' and not mmcv_has_cuda_ops():
        raise ValueError(
            "msda_impl 'stock' runs mmcv's CUDA kernel on a GPU, and this mmcv was built without CUDA ops; "
            "'fast' and 'triton' run pit-det's Triton kernel"
        )
    if impl == 'triton' or not mmcv_has_cuda_ops():
        triton_kernel.check_runs_on(kind)
        return 'triton'
    return 'mmcv-cuda'


def run_kernel(
    kernel: str,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int = 64,
    level_shapes: Optional[List[Tuple[int, int]]] = None,
) -> Tensor:
    """Runs one of :data:`KERNELS` (what :func:`resolve` returns); arguments and result as
    :func:`multi_scale_deformable_attn`. Pure tensor code (no lookups, no logging), so that
    ``torch.compile`` traces it whole."""
    if kernel == 'grid_sample':
        return ms_deform_attn_grid_sample(value, spatial_shapes, sampling_locations, attention_weights, level_shapes)
    if kernel == 'mmcv-pytorch':
        return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)
    dtype = value.dtype
    if kernel == 'mmcv-cuda' and dtype not in (torch.float32, torch.float64):
        # Said once per process (Python's warning filter).
        warnings.warn(
            f"mmcv's CUDA deformable-attention kernel takes fp32 values only: {dtype} values are cast to "
            "fp32 for it (msda_impl='triton' reads them as they are)",
            stacklevel=3,
        )
        value = value.float()
    # The kernels accumulate in fp32 (fp64 for fp64 values) and take locations and weights in it;
    # 'cpp' and 'triton' read bf16 / fp16 values as they are.
    compute = torch.promote_types(value.dtype, torch.float32)
    sampling_locations, attention_weights = sampling_locations.to(compute), attention_weights.to(compute)
    if kernel == 'gather':
        return ms_deform_attn_gather(value, spatial_shapes, sampling_locations, attention_weights, level_shapes)
    if kernel == 'triton':
        return ms_deform_attn_triton(
            value, spatial_shapes.long(), level_start_index.long(), sampling_locations, attention_weights
        )
    if kernel not in ('cpp', 'mmcv-cuda'):
        raise ValueError(f'kernel must be one of {KERNELS}, got {kernel!r}')
    if (kernel == 'mmcv-cuda') != value.is_cuda:  # the op would run the other device's kernel
        where = 'CUDA' if kernel == 'mmcv-cuda' else 'CPU'
        raise ValueError(f'the {kernel!r} kernel runs on {where} tensors, not on {value.device}')
    out = ms_deform_attn(
        value.contiguous(),
        spatial_shapes.long().contiguous(),
        level_start_index.long().contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
        im2col_step,
    )
    return out.to(dtype)


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
    """Samples each level at the given locations and sums the samples with attention weights, by
    the kernel that ``impl`` resolves to on ``value``'s device.

    Args:
        value: (B, S, M, D) values of M heads, S = sum of H_l * W_l over the L levels.
        spatial_shapes: (L, 2) int64, (H_l, W_l) of each level.
        level_start_index: (L,) int64, where each level starts in S.
        sampling_locations: (B, Q, M, L, P, 2) normalised (x, y); pixel centres at (i + 0.5) / W.
        attention_weights: (B, Q, M, L, P), already normalised over L * P.
        impl: one of :data:`IMPLS` (the module docstring's table).
        im2col_step: batch chunk of mmcv's CUDA kernel.
        level_shapes: ``spatial_shapes`` as Python ints, [(H_l, W_l)]; 'grid_sample' and 'gather' read these
            (taken from ``spatial_shapes`` when not given), the other kernels the tensor.

    Returns:
        (B, Q, M * D) in value's dtype; samples outside a map read zero (grid_sample's zero padding).
    """
    kernel = resolve(impl, device_type(value))
    inputs = value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    return run_kernel(kernel, *inputs, im2col_step=im2col_step, level_shapes=level_shapes)


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
