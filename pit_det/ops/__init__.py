"""Operators: multi-scale deformable attention kernels and their analytic FLOP count."""
from .ms_deform_attn import (IMPLS, ExtensionUnavailable, extension_available, load_extension,
                             msda_flops, multi_scale_deformable_attn, resolve_impl)

__all__ = ['IMPLS', 'ExtensionUnavailable', 'extension_available', 'load_extension', 'msda_flops',
           'multi_scale_deformable_attn', 'resolve_impl']
