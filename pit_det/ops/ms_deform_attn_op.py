"""``torch.ops.pit_det.ms_deform_attn``: multi-scale deformable attention by compiled kernels, as a
PyTorch custom op.

mmcv's deformable attention is a pybind function inside an ``autograd.Function``: ``torch.compile``
breaks the graph there (mmcv#3290) and ``torch.export`` cannot trace it. Registered with
``torch.library`` instead, with a schema, a kernel per device, a fake implementation (shapes only,
for tracing) and autograd, the op stays inside compiled and exported graphs:

* CPU: pit-det's C++ kernel (:mod:`pit_det.ops.extension`), the kernel ``'cpp'``;
* CUDA: mmcv's CUDA kernel (``mmcv._ext.ms_deform_attn_forward`` / ``_backward``), the kernel
  ``'mmcv-cuda'``, where mmcv was built with CUDA ops. Elsewhere :func:`pit_det.ops.resolve` picks
  the Triton kernel, which has its own op (:mod:`.ms_deform_attn_triton`);
* backward: the op ``pit_det::ms_deform_attn_backward``, registered the same way.
"""

from typing import Tuple

import torch
from torch import Tensor

from .extension import load_extension
from .mmcv_cuda import mmcv_has_cuda_ops


def _mmcv_ext():
    if not mmcv_has_cuda_ops():  # mmcv's own message would name a missing "_impl" for cuda:0
        raise RuntimeError(
            "pit_det::ms_deform_attn runs mmcv's CUDA kernel on CUDA tensors, and this mmcv was built "
            "without CUDA ops; msda_impl 'fast' or 'triton' runs pit-det's Triton kernel there"
        )
    from mmcv.utils import ext_loader

    return ext_loader.load_ext('_ext', ['ms_deform_attn_forward', 'ms_deform_attn_backward'])


@torch.library.custom_op('pit_det::ms_deform_attn', mutates_args=())
def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int,
) -> Tensor:
    """(B, S, M, D) values sampled at (B, Q, M, L, P, 2) locations and summed with (B, Q, M, L, P)
    weights -> (B, Q, M * D); see :func:`pit_det.ops.multi_scale_deformable_attn` for the contract.
    ``im2col_step`` is the batch chunk of mmcv's CUDA kernel."""
    raise NotImplementedError(f'pit_det::ms_deform_attn has CPU and CUDA kernels, not {value.device.type}')


@ms_deform_attn.register_kernel('cpu')
def _forward_cpu(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    return load_extension().forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


@ms_deform_attn.register_kernel('cuda')
def _forward_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    # mmcv's kernel launches on the current device (no device guard in mmcv 2.1.0's
    # ms_deform_attn_cuda.cu): run it on the values' device, e.g. cuda:1 while cuda:0 is current.
    with torch.cuda.device(value.device):
        return _mmcv_ext().ms_deform_attn_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step=im2col_step
        )


@ms_deform_attn.register_fake
def _forward_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    batch, _, heads, channels = value.shape
    return value.new_empty(batch, sampling_locations.shape[1], heads * channels)


@torch.library.custom_op('pit_det::ms_deform_attn_backward', mutates_args=())
def ms_deform_attn_backward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    grad_output: Tensor,
    im2col_step: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`ms_deform_attn` for ``value``, ``sampling_locations`` and
    ``attention_weights``."""
    raise NotImplementedError(f'pit_det::ms_deform_attn_backward has CPU and CUDA kernels, not {value.device.type}')


@ms_deform_attn_backward.register_kernel('cpu')
def _backward_cpu(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output, im2col_step
):
    grad_value, grad_loc, grad_attn = load_extension().backward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
    )
    return grad_value, grad_loc, grad_attn


@ms_deform_attn_backward.register_kernel('cuda')
def _backward_cuda(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output, im2col_step
):
    grads = torch.zeros_like(value), torch.zeros_like(sampling_locations), torch.zeros_like(attention_weights)
    with torch.cuda.device(value.device):  # as in _forward_cuda
        _mmcv_ext().ms_deform_attn_backward(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            grad_output,
            *grads,
            im2col_step=im2col_step,
        )
    return grads


@ms_deform_attn_backward.register_fake
def _backward_fake(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output, im2col_step
):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _setup_context(ctx, inputs, output) -> None:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    ctx.im2col_step = im2col_step


def _backward(ctx, grad_output: Tensor):
    grad_value, grad_loc, grad_attn = ms_deform_attn_backward(
        *ctx.saved_tensors, grad_output.contiguous(), ctx.im2col_step
    )
    return grad_value, None, None, grad_loc, grad_attn, None


ms_deform_attn.register_autograd(_backward, setup_context=_setup_context)
