"""Multi-scale deformable attention in Triton, forward and backward: pit-det's GPU kernel that
needs no CUDA build.

``pit_det.ops.ms_deform_attn_triton`` is a ``torch.library`` custom op with a fake kernel and
autograd, so it stays inside ``torch.compile`` graphs. It runs on CUDA tensors, and on CPU tensors
under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the test suite checks it on
machines without a GPU.

Semantics are those of the C++ CPU kernel (``csrc/ms_deform_attn_cpu.cpp``) and of mmcv's CUDA
kernel: ``grid_sample(align_corners=False, padding_mode='zeros')`` sampling, pixel centres at
``(i + 0.5) / size``, and at a pixel centre the one-sided derivative towards the next pixel.

Precision: values are read as fp32, bf16 or fp16 (fp64 too) and converted on the fly; sampling
locations and attention weights come in fp32 (fp64 for fp64 values), every sum is in that type,
and the value gradient is accumulated in an fp32 buffer with atomics (bf16 atomics would drop
most of thousands of queries' contributions), then cast to the value's dtype.

Layout per program: ``BLOCK_Q`` queries x the channels of one (batch, head). For each level and
point it computes the four bilinear corners of every query at once and gathers ``BLOCK_Q`` rows
of ``D`` channels per corner.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Callable, Tuple

import torch
from torch import Tensor

from ..errors import PitDetError

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch without Triton (e.g. the CPU-only wheel)
    triton = tl = None

# Triton chooses between the GPU compiler and its interpreter when ``triton.jit`` decorates: set
# TRITON_INTERPRET=1 before Python starts to run these kernels on CPU tensors.
_jit = triton.jit if triton is not None else (lambda fn: fn)
BLOCK_Q = 32  # queries per program: a (32, D) accumulator; large enough for the interpreter too


class TritonUnavailable(PitDetError):
    """Triton cannot run these tensors here; the message says why and what to do."""


@_jit
def _program(Q, M: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's image b and head m, its BLOCK queries and BLOCK_D channels, and their masks."""
    bm = tl.program_id(1).to(tl.int64)
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ch = tl.arange(0, BLOCK_D)
    return bm // M, bm % M, q, ch, q < Q, ch < D


@_jit
def _sample(shapes, starts, loc, attn, first, q_ok, lvl: tl.constexpr, pt: tl.constexpr, P: tl.constexpr):
    """Point ``pt`` on level ``lvl`` of each query: the level's (H, W) and first token, the sample's
    index, its attention weight, whether it lies on the map, the top-left corner (x0, y0) of its
    bilinear neighbourhood in pixel units and its fractions (fx, fy)."""
    H = tl.load(shapes + 2 * lvl)
    W = tl.load(shapes + 2 * lvl + 1)
    start = tl.load(starts + lvl)
    s = first + lvl * P + pt
    a = tl.load(attn + s, mask=q_ok, other=0.0)
    x = tl.load(loc + 2 * s, mask=q_ok, other=0.0) * W - 0.5  # pixel units, centres on integers
    y = tl.load(loc + 2 * s + 1, mask=q_ok, other=0.0) * H - 0.5
    inside = q_ok & (x > -1) & (y > -1) & (x < W) & (y < H)  # False for NaN too
    x = tl.where(inside, x, 0.0)  # keeps the integer conversion of the corners defined
    y = tl.where(inside, y, 0.0)
    x0, y0 = tl.floor(x), tl.floor(y)
    return H, W, start, s, a, inside, x0, y0, x - x0, y - y0


@_jit
def _corner(
    b, m, S, H, W, start, inside, x0, y0, fx, fy, dx: tl.constexpr, dy: tl.constexpr, M: tl.constexpr, D: tl.constexpr
):
    """Corner (x0 + dx, y0 + dy): whether it lies on the map, its bilinear weights along x and y,
    and the offset of its D channels in value, (B, S, M, D)."""
    xi = x0.to(tl.int64) + dx
    yi = y0.to(tl.int64) + dy
    ok = inside & (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
    wx = fx * dx + (1 - fx) * (1 - dx)
    wy = fy * dy + (1 - fy) * (1 - dy)
    return ok, wx, wy, ((b * S + start + yi * W + xi) * M + m) * D


@_jit
def _forward_kernel(
    value,
    shapes,
    starts,
    loc,
    attn,
    out,
    S,
    Q,
    M: tl.constexpr,
    D: tl.constexpr,
    L: tl.constexpr,
    P: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    b, m, q, ch, q_ok, ch_ok = _program(Q, M, D, BLOCK, BLOCK_D)
    acc = tl.zeros((BLOCK, BLOCK_D), ACC)
    first = ((b * Q + q) * M + m) * (L * P)  # (BLOCK,) first sample of each (query, head)
    for lvl in tl.static_range(L):
        for pt in tl.static_range(P):
            H, W, start, s, a, inside, x0, y0, fx, fy = _sample(shapes, starts, loc, attn, first, q_ok, lvl, pt, P)
            for dy in tl.static_range(2):
                for dx in tl.static_range(2):
                    ok, wx, wy, row = _corner(b, m, S, H, W, start, inside, x0, y0, fx, fy, dx, dy, M, D)
                    v = tl.load(value + row[:, None] + ch[None, :], mask=ok[:, None] & ch_ok[None, :], other=0.0)
                    acc += (a * wx * wy)[:, None] * v.to(ACC)
    dst = ((b * Q + q) * M + m) * D  # out is (B, Q, M * D)
    tl.store(out + dst[:, None] + ch[None, :], acc.to(out.dtype.element_ty), mask=q_ok[:, None] & ch_ok[None, :])


@_jit
def _backward_kernel(
    value,
    shapes,
    starts,
    loc,
    attn,
    grad_out,
    grad_value,
    grad_loc,
    grad_attn,
    S,
    Q,
    M: tl.constexpr,
    D: tl.constexpr,
    L: tl.constexpr,
    P: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    b, m, q, ch, q_ok, ch_ok = _program(Q, M, D, BLOCK, BLOCK_D)
    src = ((b * Q + q) * M + m) * D
    g = tl.load(grad_out + src[:, None] + ch[None, :], mask=q_ok[:, None] & ch_ok[None, :], other=0.0).to(ACC)
    first = ((b * Q + q) * M + m) * (L * P)
    for lvl in tl.static_range(L):
        for pt in tl.static_range(P):
            H, W, start, s, a, inside, x0, y0, fx, fy = _sample(shapes, starts, loc, attn, first, q_ok, lvl, pt, P)
            grad_a = tl.zeros((BLOCK,), ACC)
            grad_x = tl.zeros((BLOCK,), ACC)
            grad_y = tl.zeros((BLOCK,), ACC)
            for dy in tl.static_range(2):
                for dx in tl.static_range(2):
                    ok, wx, wy, row = _corner(b, m, S, H, W, start, inside, x0, y0, fx, fy, dx, dy, M, D)
                    mask = ok[:, None] & ch_ok[None, :]
                    v = tl.load(value + row[:, None] + ch[None, :], mask=mask, other=0.0).to(ACC)
                    dot = tl.sum(g * v, axis=1)  # d loss / d (this corner's weight)
                    grad_a += wx * wy * dot
                    grad_x += (2 * dx - 1) * wy * dot  # d wx / dx is -1 for the left corner, +1 right
                    grad_y += (2 * dy - 1) * wx * dot
                    tl.atomic_add(grad_value + row[:, None] + ch[None, :], (a * wx * wy)[:, None] * g, mask=mask)
            tl.store(grad_attn + s, grad_a, mask=q_ok)
            tl.store(grad_loc + 2 * s, a * grad_x * W, mask=q_ok)  # x = loc_x * W - 0.5
            tl.store(grad_loc + 2 * s + 1, a * grad_y * H, mask=q_ok)


def check_runs_on(device_type: str) -> None:
    """Raises :class:`TritonUnavailable` unless the kernel can run on ``device_type`` here: CUDA,
    or CPU under ``TRITON_INTERPRET=1`` (Triton's interpreter)."""
    if triton is None:
        raise TritonUnavailable('Triton is not installed (it ships with the CUDA builds of torch)')
    if device_type == 'cuda' or (device_type == 'cpu' and os.environ.get('TRITON_INTERPRET') == '1'):
        return
    raise TritonUnavailable(
        f'the Triton deformable-attention kernel runs on CUDA tensors, or on CPU tensors under '
        f"Triton's interpreter (TRITON_INTERPRET=1 set before Python starts; slow, for tests), "
        f'not on {device_type}'
    )


def _launch(
    fn: Callable, value: Tensor, shapes: Tensor, starts: Tensor, loc: Tensor, attn: Tensor, *tensors: Tensor
) -> None:
    """``fn`` over (query blocks, batch x heads) programs; ``tensors`` are its other arguments."""
    check_runs_on('cuda' if value.is_cuda else value.device.type)
    batch, num_value, heads, channels = value.shape
    _, num_query, _, levels, points, _ = loc.shape
    acc = tl.float64 if value.dtype == torch.float64 else tl.float32
    grid = (triton.cdiv(num_query, BLOCK_Q), batch * heads)
    # Triton launches on the current device: make it the values' (cuda:1 while cuda:0 is current).
    with torch.cuda.device(value.device) if value.device.type == 'cuda' else nullcontext():
        fn[grid](
            value,
            shapes.contiguous(),
            starts.contiguous(),
            loc,
            attn,
            *tensors,
            num_value,
            num_query,
            M=heads,
            D=channels,
            L=levels,
            P=points,
            BLOCK=BLOCK_Q,
            BLOCK_D=triton.next_power_of_2(channels),
            ACC=acc,
        )


def _check(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    levels_inside: bool = True,
) -> None:
    """The C++ kernel's refusals. ``levels_inside=False`` skips the one that reads tensor values (a
    few kernel launches on CUDA): the backward of the op takes the inputs its forward checked."""
    compute = torch.promote_types(value.dtype, torch.float32)
    if value.dim() != 4 or sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f'value must be (B, S, M, D) and sampling_locations (B, Q, M, L, P, 2), got '
            f'{tuple(value.shape)} and {tuple(sampling_locations.shape)}'
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f'attention_weights {tuple(attention_weights.shape)} do not match sampling_locations '
            f'{tuple(sampling_locations.shape)}'
        )
    if sampling_locations.dtype != compute or attention_weights.dtype != compute:
        raise ValueError(
            f'sampling_locations and attention_weights must be {compute} for {value.dtype} values, '
            f'got {sampling_locations.dtype} and {attention_weights.dtype}'
        )
    if spatial_shapes.dtype != torch.int64 or level_start_index.dtype != torch.int64:
        raise ValueError('spatial_shapes and level_start_index must be int64')
    # The checks of the C++ kernel (csrc/ms_deform_attn_cpu.cpp, check()): on CUDA each gap would be
    # an out-of-bounds read, not an error.
    batch, num_value, heads, _ = value.shape
    levels = sampling_locations.shape[3]
    if sampling_locations.shape[0] != batch or sampling_locations.shape[2] != heads:
        raise ValueError(
            f'sampling_locations {tuple(sampling_locations.shape)} do not match value {tuple(value.shape)}'
        )
    if tuple(spatial_shapes.shape) != (levels, 2) or tuple(level_start_index.shape) != (levels,):
        raise ValueError(
            f'spatial_shapes must be (L, 2) and level_start_index (L,) with L = {levels}, got '
            f'{tuple(spatial_shapes.shape)} and {tuple(level_start_index.shape)}'
        )
    devices = {t.device for t in (spatial_shapes, level_start_index, sampling_locations, attention_weights)}
    if devices != {value.device}:
        raise ValueError(
            f'every tensor must be on {value.device} (the device of value), got {sorted(map(str, devices))}'
        )
    if not levels_inside:
        return
    # Levels inside value, checked on the device without a host sync (an asynchronous assert on CUDA).
    inside = (
        (spatial_shapes > 0).all(1)
        & (level_start_index >= 0)
        & (level_start_index + spatial_shapes.prod(1) <= num_value)
    ).all()
    torch._assert_async(inside, 'a level of spatial_shapes / level_start_index lies outside value')


def forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The kernel itself (no autograd); contract of :func:`ms_deform_attn_triton`."""
    _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    value, sampling_locations, attention_weights = (
        t.contiguous() for t in (value, sampling_locations, attention_weights)
    )
    batch, _, heads, channels = value.shape
    out = value.new_empty(batch, sampling_locations.shape[1], heads * channels)
    _launch(_forward_kernel, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, out)
    return out


def backward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    grad_output: Tensor,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients for value, sampling_locations and attention_weights (no autograd)."""
    # The op's forward checked these tensors; the shapes are checked again (cheap, on the host).
    _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, levels_inside=False)
    value, sampling_locations, attention_weights, grad_output = (
        t.contiguous() for t in (value, sampling_locations, attention_weights, grad_output)
    )
    grad_value = torch.zeros_like(value, dtype=torch.promote_types(value.dtype, torch.float32))
    grad_loc = torch.empty_like(sampling_locations)
    grad_attn = torch.empty_like(attention_weights)
    _launch(
        _backward_kernel,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        grad_output,
        grad_value,
        grad_loc,
        grad_attn,
    )
    return grad_value.to(value.dtype), grad_loc, grad_attn


@torch.library.custom_op('pit_det::ms_deform_attn_triton', mutates_args=())
def ms_deform_attn_triton(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention by the Triton kernel.

    Args:
        value: (B, S, M, D) fp32, bf16, fp16 or fp64; S = sum of H_l * W_l.
        spatial_shapes: (L, 2) int64, (H_l, W_l).
        level_start_index: (L,) int64.
        sampling_locations: (B, Q, M, L, P, 2) normalised (x, y), fp32 (fp64 for fp64 values).
        attention_weights: (B, Q, M, L, P), same dtype as the locations.

    Returns:
        (B, Q, M * D) in value's dtype. CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
    """
    return forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


@ms_deform_attn_triton.register_fake
def _forward_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    batch, _, heads, channels = value.shape
    return value.new_empty(batch, sampling_locations.shape[1], heads * channels)


@torch.library.custom_op('pit_det::ms_deform_attn_triton_backward', mutates_args=())
def ms_deform_attn_triton_backward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    grad_output: Tensor,
) -> Tuple[Tensor, Tensor, Tensor]:
    return backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output)


@ms_deform_attn_triton_backward.register_fake
def _backward_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output):
    return torch.empty_like(value), torch.empty_like(sampling_locations), torch.empty_like(attention_weights)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output: Tensor):
    grad_value, grad_loc, grad_attn = ms_deform_attn_triton_backward(*ctx.saved_tensors, grad_output)
    return grad_value, None, None, grad_loc, grad_attn


ms_deform_attn_triton.register_autograd(_backward, setup_context=_setup_context)
