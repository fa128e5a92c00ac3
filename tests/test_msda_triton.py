"""pit-det's Triton deformable-attention kernel, run on CPU tensors by Triton's interpreter
(TRITON_INTERPRET=1, set by conftest.py), against the C++ kernel and mmcv's pure-PyTorch function."""

import importlib

import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
from test_msda import LEVELS, random_inputs

from pit_det.ops import TritonUnavailable, ms_deform_attn_triton, multi_scale_deformable_attn

# Measured largest differences from the C++ kernel (outputs; gradients relative to their largest
# value), the same terms summed in another order: see test_fp32_and_fp64_equal_the_cpp_kernel.
TOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def grad_like(out):
    """A fixed, non-uniform output gradient, bf16-representable so every dtype gets the same."""
    return torch.cos(torch.arange(out.numel(), dtype=torch.float32)).view_as(out).bfloat16().to(out.dtype)


def run(impl, value, shapes, starts, loc, attn):
    """Output and the gradients of (value, locations, weights)."""
    inputs = [t.clone().requires_grad_() for t in (value, loc, attn)]
    if impl == 'triton':
        out = ms_deform_attn_triton(inputs[0], shapes, starts, inputs[1], inputs[2])
    elif impl == 'mmcv':
        out = multi_scale_deformable_attn_pytorch(inputs[0], shapes, inputs[1], inputs[2])
    else:
        out = multi_scale_deformable_attn(inputs[0], shapes, starts, inputs[1], inputs[2], impl=impl)
    out.backward(grad_like(out))
    return [out.detach(), *(t.grad for t in inputs)]


def assert_equal_within(a_run, b_run, tol):
    for name, a, b in zip(('output', 'value grad', 'location grad', 'weight grad'), a_run, b_run):
        scale = max(1.0, b.abs().max().item())  # location gradients scale with the map size
        assert a.shape == b.shape and a.dtype == b.dtype, name
        err = (a - b).abs().max().item()
        assert err <= tol * scale, f'{name}: {err:.2e} > {tol * scale:.2e}'


def special_locations(loc, shapes):
    """Samples exactly on pixel centres, on a map's edge and far off it, and a NaN, in place."""
    L = len(shapes)
    for lvl in range(L):
        H, W = shapes[lvl].tolist()
        loc[0, 0, 0, lvl, 0] = torch.tensor([(W - 1 + 0.5) / W, 0.5 / H])  # last column's centre, first row
        loc[0, 1, 0, lvl, 0] = torch.tensor([0.5 / W, (H - 1 + 0.5) / H])
        loc[0, 2, 0, lvl, 0] = torch.tensor([0.0, 1.0])  # on the map's border: half its corners read zero
        loc[0, 3, 0, lvl, 0] = torch.tensor([-0.7, 1.9])  # off the map: nothing read, zero gradient
    return loc


F32, F64 = torch.float32, torch.float64


# Every level set in fp32; head widths 32 (every shipped config) and 3 (channels masked to a block
# of 4); fp64 for the exact arithmetic.
@pytest.mark.parametrize(
    'levels, dtype, head_dim',
    [
        (LEVELS[0], F32, 8),
        (LEVELS[1], F32, 8),
        (LEVELS[2], F32, 8),
        (LEVELS[3], F32, 8),
        (LEVELS[0], F32, 32),
        (LEVELS[3], F32, 3),
        (LEVELS[0], F64, 8),
        (LEVELS[1], F64, 32),
    ],
)
def test_fp32_and_fp64_equal_the_cpp_kernel(levels, dtype, head_dim):
    """Non-square and 1 x 1 levels, padded (zero) values, pixel centres and off-map samples;
    3 images x 37 queries: more than one program in both grid dimensions (32 queries a block)."""
    value, shapes, starts, loc, attn = random_inputs(levels, B=3, D=head_dim, dtype=dtype)
    value[1, int(starts[-1]) :] = 0  # a padded image: its last level reads zero
    loc = special_locations(loc, shapes)
    triton_run = run('triton', value, shapes, starts, loc, attn)
    assert_equal_within(triton_run, run('fast', value, shapes, starts, loc, attn), TOL[dtype])
    # mmcv's pure-PyTorch function (grid_sample) differs from both kernels only in its gradient at
    # pixel centres (grid_sample's own one-sided convention), so it is held to the output only.
    torch.testing.assert_close(triton_run[0], run('mmcv', value, shapes, starts, loc, attn)[0], atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('head_dim', [8, 32])
def test_low_precision_values_are_read_natively_and_accumulated_in_fp32(dtype, head_dim):
    """bf16 / fp16 values: the output and value gradient are the fp32 kernel's on the same rounded
    values, rounded once; the location and weight gradients (fp32) equal the C++ kernel's on those
    values within fp32 rounding. One image and 5 queries: one program per head, each laid out as
    the fp32 test's second query block (32 query lanes, those past Q masked; the special locations
    are queries 0-3). The interpreter's time grows with the number of programs."""
    value, shapes, starts, loc, attn = random_inputs(LEVELS[0], B=1, Q=5, D=head_dim, dtype=torch.float32)
    loc = special_locations(loc, shapes)
    low = value.to(dtype)
    out, g_value, g_loc, g_attn = run('triton', low, shapes, starts, loc, attn)
    ref = run('triton', low.float(), shapes, starts, loc, attn)
    assert out.dtype == g_value.dtype == dtype and g_loc.dtype == g_attn.dtype == torch.float32
    # The output is the fp32 result rounded once: within one unit in the last place of each
    # element. (Not bit-equal to torch's rounding: the interpreter converts fp32 to bf16 by
    # truncation; a GPU rounds to nearest.)
    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).smallest_normal
    assert ((out.float() - ref[0]).abs() <= eps * ref[0].abs() + eps * tiny).all()  # + the subnormals' ulp
    # The value gradient is summed in the fp32 buffer and rounded by torch: exactly the fp32 run's.
    assert torch.equal(g_value, ref[1].to(dtype))
    assert torch.equal(g_loc, ref[2]) and torch.equal(g_attn, ref[3])
    cpp = run('fast', low, shapes, starts, loc, attn)
    assert (out.float() - cpp[0].float()).abs().max() <= eps * cpp[0].float().abs().max()
    for a, b in ((g_loc, cpp[2]), (g_attn, cpp[3])):
        assert (a - b).abs().max() <= TOL[torch.float32] * max(1.0, b.abs().max().item())


def test_module_path_and_compiled_graph_without_break():
    """msda_impl='triton' through the dispatcher, and the op inside one torch.compile graph
    (fullgraph=True fails on any break), forward and backward, equal to eager."""
    value, shapes, starts, loc, attn = random_inputs(LEVELS[1], D=8, dtype=torch.float32)
    eager = run('triton', value, shapes, starts, loc, attn)
    assert_equal_within(run('fast', value, shapes, starts, loc, attn), eager, TOL[torch.float32])

    @torch.compile(fullgraph=True, backend='aot_eager')
    def step(v, loc, a):
        return multi_scale_deformable_attn(v * 1.0, shapes, starts, loc, a, impl='triton')

    inputs = [t.clone().requires_grad_() for t in (value, loc, attn)]
    out = step(*inputs)
    out.backward(grad_like(out))
    for a, b in zip([out.detach(), *(t.grad for t in inputs)], eager):
        assert torch.equal(a, b)


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET')
    value, shapes, starts, loc, attn = random_inputs(LEVELS[2], dtype=torch.float32)
    with pytest.raises(TritonUnavailable, match=r'CUDA tensors, or on CPU tensors under .*TRITON_INTERPRET=1'):
        ms_deform_attn_triton(value, shapes, starts, loc, attn)
    with pytest.raises(ValueError, match='must be torch.float32 for torch.float32 values'):
        ms_deform_attn_triton(value, shapes, starts, loc.double(), attn)


def _bad_inputs():
    """Inputs the C++ kernel refuses, and what the Triton kernel must say about each (on CUDA it
    would read out of bounds instead)."""

    def batch(v, s, i, loc, a):
        return v[:1], s, i, loc, a

    def heads(v, s, i, loc, a):
        return v[:, :, :1].contiguous(), s, i, loc, a

    def shapes_rows(v, s, i, loc, a):
        return v, s[:1], i, loc, a

    def starts_len(v, s, i, loc, a):
        return v, s, i[:1], loc, a

    def outside(v, s, i, loc, a):
        return v, s, i + 1, loc, a  # the last level ends one token past value

    def empty_level(v, s, i, loc, a):
        return v, s * torch.tensor([[0], [1]] + [[1]] * (len(s) - 2)), i, loc, a

    def device(v, s, i, loc, a):
        return v, s.to('meta'), i, loc, a

    return [
        (batch, 'do not match value'),
        (heads, 'do not match value'),
        (shapes_rows, r'spatial_shapes must be \(L, 2\) and level_start_index \(L,\)'),
        (starts_len, r'spatial_shapes must be \(L, 2\) and level_start_index \(L,\)'),
        (outside, 'lies outside value'),
        (empty_level, 'lies outside value'),
        (device, 'every tensor must be on cpu'),
    ]


@pytest.mark.parametrize('mutate, message', _bad_inputs(), ids=lambda x: getattr(x, '__name__', ''))
def test_inputs_the_cpp_kernel_refuses_are_refused(mutate, message):
    from pit_det.ops import load_extension

    triton_kernel = importlib.import_module('pit_det.ops.ms_deform_attn_triton')  # the module, not the op
    value, shapes, starts, loc, attn = random_inputs(LEVELS[0], dtype=torch.float32)
    bad = mutate(value, shapes, starts, loc, attn)
    with pytest.raises((ValueError, RuntimeError), match=message):  # the kernel behind the op, on every device
        triton_kernel.forward(*bad)
    if mutate.__name__ != 'device':  # the C++ kernel refuses it too (a meta tensor has no data to check)
        with pytest.raises(RuntimeError):
            load_extension().forward(*bad)
