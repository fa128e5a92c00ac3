"""The Triton deformable-attention kernel (impl 'triton' through ``pit_det.ops.multi_scale_deformable_attn``),
compiled, at a 400 x 667 image's shapes on the GPU (``LEVELS_400x667``): fp32 and bf16 values, forward
and the gradients of values, locations and weights, against mmcv's pure-PyTorch function in fp64 on the
same device."""

import json

import pytest
import torch
from gpu_tier import current, msda_inputs
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

from pit_det.benchmark.kernels import forward_backward, max_rel_diff
from pit_det.ops import multi_scale_deformable_attn

TIER = current()
# fp32 against exact arithmetic: the sums and the pixel coordinate x = loc * W - 0.5 are rounded in
# fp32 (eps 1.2e-7). Measured on an NVIDIA H200 at these shapes: 1.4e-6 against mmcv's function in
# fp32, forward and all three gradients; the C++ kernel (the same arithmetic) against this fp64
# reference on these inputs: 3.0e-6 at most (2-core AMD EPYC with AVX2, 2026-12-04). 1e-5 (84 eps)
# holds both with room; TF32-like arithmetic (a 10-bit mantissa) would show as 1e-3.
FP32_TOL = 1e-5
# bf16 values: the output is the fp32 result rounded once by the kernel, within half a unit in the
# last place on a GPU (round to nearest: 2^-8 of the element); Triton's interpreter truncates (a
# whole unit, 2^-7). The value gradient is summed in fp32 and rounded by torch (2^-8). Measured on
# an NVIDIA H200: 3.6e-3 against mmcv's function, under 2^-8 = 3.9e-3; the C++ kernel's bf16 output
# reaches 0.99 of this bound on the CPU above: it is the rounding's own, no looser. The location and
# weight gradients are fp32 sums of numbers bf16 represents exactly: FP32_TOL.
OUTPUT_RTOL = {torch.float32: 0.0, torch.bfloat16: 2**-7 if TIER.dry_run else 2**-8}
VALUE_GRAD_RTOL = {torch.float32: 0.0, torch.bfloat16: 2**-8}


def assert_within(name: str, a: torch.Tensor, ref: torch.Tensor, rtol: float) -> None:
    """|a - ref| <= rtol * |ref| + FP32_TOL * max |ref|, element by element."""
    err = (a.double() - ref).abs()
    bound = rtol * ref.abs() + FP32_TOL * ref.abs().max()
    worst = int((err - bound).argmax())
    within = bool((err <= bound).all())
    assert within, (
        f'{name}: {err.flatten()[worst]:.3e} off at element {worst} (reference '
        f'{ref.flatten()[worst]:.4e}, allowed {bound.flatten()[worst]:.3e})'
    )


@pytest.mark.parametrize('queries', ['decoder', 'encoder'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=['fp32', 'bf16'])
def test_triton_kernel_equals_the_fp64_reference(dtype, queries, record_property):
    """Decoder (300 queries) and encoder (one query per value token, 5,600) of 2 images; samples
    inside, on the edge rows of and off every level."""
    value, shapes, starts, loc, attn = (t.to(TIER.device) for t in msda_inputs(TIER, TIER.queries[queries]))
    value = value.to(dtype)  # what the kernel reads; the reference gets the same numbers in fp64
    B, Q, M, D = loc.shape[0], loc.shape[1], value.shape[2], value.shape[3]
    grad = torch.cos(torch.arange(B * Q * M * D, device=value.device, dtype=torch.float32)).view(B, Q, M * D).to(dtype)

    def triton(v, lo, a):
        return multi_scale_deformable_attn(v, shapes, starts, lo, a, impl='triton')

    def reference(v, lo, a):
        return multi_scale_deformable_attn_pytorch(v, shapes, lo, a)

    out, g_value, g_loc, g_attn = forward_backward(triton, value, loc, attn, grad)
    ref = forward_backward(reference, value.double(), loc.double(), attn.double(), grad.double())
    assert out.device.type == TIER.device and out.shape == ref[0].shape
    assert out.dtype == g_value.dtype == dtype and g_loc.dtype == g_attn.dtype == torch.float32
    names = ('output', 'value grad', 'location grad', 'weight grad')
    record_property(
        'max_rel_diff',
        json.dumps({n: max_rel_diff(a, r) for n, a, r in zip(names, (out, g_value, g_loc, g_attn), ref)}),
    )
    for name, a, r, rtol in zip(
        names, (out, g_value, g_loc, g_attn), ref, (OUTPUT_RTOL[dtype], VALUE_GRAD_RTOL[dtype], 0.0, 0.0)
    ):
        assert_within(name, a, r, rtol)
