"""Operators: multi-scale deformable attention (custom op, C++ CPU kernel, dispatcher) and its
analytic FLOP count."""
from .extension import ExtensionUnavailable, extension_available, load_extension
from .ms_deform_attn import IMPLS, msda_flops, multi_scale_deformable_attn, resolve_impl
from .ms_deform_attn_op import ms_deform_attn

__all__ = ['IMPLS', 'ExtensionUnavailable', 'extension_available', 'load_extension', 'ms_deform_attn', 'msda_flops',
           'multi_scale_deformable_attn', 'resolve_impl']
