"""The standard-op kernels that exported graphs carry ('gather' and 'grid_sample') against
pit-det's C++ kernel: the same function, edge cases included, and the ops each graph holds."""

import pytest
import torch
from test_msda import LEVELS, TOL, random_inputs

from pit_det.ops import multi_scale_deformable_attn
from pit_det.ops.ms_deform_attn_export import ms_deform_attn_gather, ms_deform_attn_grid_sample, pair_table


@pytest.mark.parametrize('levels', LEVELS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('impl', ['gather', 'grid_sample'])
def test_export_kernels_equal_the_cpp_kernel(levels, dtype, impl):
    """Non-square, 1 x 1, single and tall levels; locations up to 0.15 outside the map; 2 images."""
    value, shapes, starts, loc, attn = random_inputs(levels, dtype=dtype)
    inputs = [t.clone().requires_grad_() for t in (value, loc, attn)]
    out = multi_scale_deformable_attn(inputs[0], shapes, starts, inputs[1], inputs[2], impl=impl, level_shapes=levels)
    ref = multi_scale_deformable_attn(value, shapes, starts, loc, attn, impl='fast')
    assert out.shape == ref.shape and out.dtype == dtype
    torch.testing.assert_close(out, ref, **TOL[dtype])


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_grid_sample_kernel_takes_low_precision_values_with_fp32_locations(dtype):
    """Autocast's case: bf16 / fp16 values beside fp32 locations and weights (grid_sample itself
    takes one dtype for both). Computed in fp32: output and value gradient are the fp32 run's on
    the same rounded values, rounded once; location and weight gradients stay fp32, the same."""
    value, shapes, starts, loc, attn = random_inputs(LEVELS[0], dtype=torch.float32)
    low = value.to(dtype)
    runs = []
    for v in (low, low.float()):
        inputs = [t.clone().requires_grad_() for t in (v, loc, attn)]
        out = multi_scale_deformable_attn(inputs[0], shapes, starts, inputs[1], inputs[2], impl='grid_sample')
        grad = torch.cos(torch.arange(out.numel(), dtype=torch.float32)).view_as(out).to(dtype)  # same for both
        out.backward(grad.to(out.dtype))
        runs.append([out.detach(), *(t.grad for t in inputs)])
    (out, g_value, g_loc, g_attn), ref = runs
    assert out.dtype == g_value.dtype == dtype and g_loc.dtype == g_attn.dtype == torch.float32
    assert torch.equal(out, ref[0].to(dtype)) and torch.equal(g_value, ref[1].to(dtype))
    assert torch.equal(g_loc, ref[2]) and torch.equal(g_attn, ref[3])


@pytest.mark.parametrize('impl', ['gather', 'grid_sample'])
def test_corners_on_borders_and_points_far_off_the_map(impl):
    """Pixel centres, the map's edges (x = 0, x = 1 exactly), points half a pixel outside (one
    corner row on the map) and far outside (nothing on it; the gather graph's clamped row 0)."""
    levels = [(5, 7), (3, 2)]
    value, shapes, starts, _, attn = random_inputs(levels, B=1, Q=10, M=2, D=4, P=2)
    xs = torch.tensor([0.0, 1.0, 0.5 / 7, 6.5 / 7, -0.5 / 7, 1 + 0.4 / 7, -3.0, 7.0, 0.3, 1e6], dtype=value.dtype)
    ys = torch.tensor([0.0, 1.0, 0.1, 0.9, 0.5, 0.5, 0.5, -2.0, -0.1, 0.2], dtype=value.dtype)
    loc = torch.stack([xs, ys], -1).view(1, 10, 1, 1, 1, 2).expand(1, 10, 2, 2, 2, 2).contiguous()
    out = multi_scale_deformable_attn(value, shapes, starts, loc, attn, impl=impl, level_shapes=levels)
    ref = multi_scale_deformable_attn(value, shapes, starts, loc, attn, impl='fast')
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    assert ref[0, 6:8].abs().max() == 0 and ref[0, 9].abs().max() == 0  # truly off the map: zero
    assert ref[0, 4].abs().max() > 0  # half a pixel out: the inner corners count


@pytest.mark.parametrize('impl', ['gather', 'grid_sample', 'triton'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), float('-inf'), 1e30])
def test_non_finite_and_huge_locations_read_zero_in_every_kernel(impl, bad):
    """A NaN, infinite or huge sampling location (a diverged offset) samples nothing in every
    kernel, as in the C++ one: its term is 0, never NaN, and the other points are unchanged."""
    levels = [(5, 7), (3, 2)]
    value, shapes, starts, loc, attn = random_inputs(levels, B=1, Q=4, M=2, D=4, P=2, dtype=torch.float32)
    loc[0, 1, :, :, 0, 0] = bad  # query 1's first point: x
    loc[0, 2, :, :, 1] = bad  # query 2's second point: x and y
    out = multi_scale_deformable_attn(value, shapes, starts, loc, attn, impl=impl, level_shapes=levels)
    ref = multi_scale_deformable_attn(value, shapes, starts, loc, attn, impl='fast')
    assert torch.isfinite(ref).all() and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
    off = attn.clone()
    off[0, 1, :, :, 0] = 0  # the same result as those points having no weight
    off[0, 2, :, :, 1] = 0
    torch.testing.assert_close(
        ref,
        multi_scale_deformable_attn(value, shapes, starts, loc.nan_to_num(0.0, 0.0, 0.0), off, impl='fast'),
        **TOL[torch.float32],
    )


def test_pair_table_holds_each_position_and_its_right_neighbour():
    levels = [(2, 3), (1, 1)]
    value = torch.arange(7, dtype=torch.float32).view(1, 7, 1, 1)  # one head, one channel: the token index
    table = pair_table(value, levels)[0, 0]  # (S', 2)
    # Level 0 padded to 4 x 5, level 1 to 3 x 3: 29 rows. Token t sits at padded row
    # (y + 1) * (W + 2) + (x + 1) of its level.
    assert table.shape == (20 + 9, 2)
    assert table[1 * 5 + 1].tolist() == [0.0, 1.0] and table[1 * 5 + 3].tolist() == [2.0, 0.0]  # right edge pads
    assert table[2 * 5 + 1].tolist() == [3.0, 4.0] and table[0].tolist() == [0.0, 0.0]
    assert table[20 + 4].tolist() == [6.0, 0.0] and table[20 + 3].tolist() == [0.0, 6.0]


def test_gather_kernel_gradients_equal_the_cpp_kernel():
    """Not needed for export, but the kernel is differentiable: the same gradients where no
    sample sits on a pixel centre (random locations)."""
    value, shapes, starts, loc, attn = random_inputs(LEVELS[0], dtype=torch.float64)
    grads = []
    for impl in ('gather', 'fast'):
        inputs = [t.clone().requires_grad_() for t in (value, loc, attn)]
        out = multi_scale_deformable_attn(inputs[0], shapes, starts, inputs[1], inputs[2], impl=impl)
        out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
        grads.append([t.grad for t in inputs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-12 * max(1.0, b.abs().max().item()), rtol=0)


def test_exported_graphs_hold_the_ops_they_promise(tmp_path):
    """The gather graph has no GridSample; the other has one per level."""
    levels = [(6, 8), (3, 4)]
    value, shapes, starts, loc, attn = random_inputs(levels, B=1, Q=5, dtype=torch.float32)

    class Gather(torch.nn.Module):
        def forward(self, v, loc, a):
            return ms_deform_attn_gather(v, shapes, loc, a, levels)

    class GridSample(torch.nn.Module):
        def forward(self, v, loc, a):
            return ms_deform_attn_grid_sample(v, shapes, loc, a, levels)

    ops = {}
    for module in (Gather(), GridSample()):
        program = torch.onnx.export(module.eval(), (value, loc, attn), dynamo=True, opset_version=18, verbose=False)
        ops[type(module).__name__] = [n.op_type for n in program.model_proto.graph.node]
    assert 'GridSample' not in ops['Gather'] and ops['Gather'].count('MatMul') == 1
    assert ops['GridSample'].count('GridSample') == len(levels)
