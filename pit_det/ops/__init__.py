"""Operators: multi-scale deformable attention (its kernels: C++ on CPU, mmcv's CUDA, Triton, standard
ops for export; one custom op per compiled kernel; :func:`resolve` picks the kernel) and its
analytic FLOP count."""

from .extension import ExtensionUnavailable, extension_available, load_extension
from .ms_deform_attn import IMPLS, KERNELS, device_type, msda_flops, multi_scale_deformable_attn, resolve, run_kernel
from .ms_deform_attn_export import ms_deform_attn_gather, ms_deform_attn_grid_sample
from .ms_deform_attn_op import ms_deform_attn
from .ms_deform_attn_triton import TritonUnavailable, ms_deform_attn_triton

__all__ = [
    'IMPLS',
    'KERNELS',
    'ExtensionUnavailable',
    'TritonUnavailable',
    'device_type',
    'extension_available',
    'load_extension',
    'ms_deform_attn',
    'ms_deform_attn_gather',
    'ms_deform_attn_grid_sample',
    'ms_deform_attn_triton',
    'msda_flops',
    'multi_scale_deformable_attn',
    'resolve',
    'run_kernel',
]
