"""Operators: multi-scale deformable attention (custom ops, C++ CPU kernel, Triton GPU kernel,
standard-op kernels for export, dispatcher) and its analytic FLOP count."""

from .extension import ExtensionUnavailable, extension_available, load_extension
from .ms_deform_attn import IMPLS, kernel_on, msda_flops, multi_scale_deformable_attn, resolve_impl
from .ms_deform_attn_export import ms_deform_attn_gather, ms_deform_attn_grid_sample
from .ms_deform_attn_op import cuda_kernel, ms_deform_attn
from .ms_deform_attn_triton import TritonUnavailable, ms_deform_attn_triton

__all__ = [
    'IMPLS',
    'ExtensionUnavailable',
    'TritonUnavailable',
    'cuda_kernel',
    'extension_available',
    'kernel_on',
    'load_extension',
    'ms_deform_attn',
    'ms_deform_attn_gather',
    'ms_deform_attn_grid_sample',
    'ms_deform_attn_triton',
    'msda_flops',
    'multi_scale_deformable_attn',
    'resolve_impl',
]
