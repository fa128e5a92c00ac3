"""pit-det's C++ deformable-attention kernel against mmcv's pure-PyTorch one (the stock path)."""

import importlib

import pytest
import torch
from mmcv.ops import MultiScaleDeformableAttention

from pit_det.models import MSDeformAttn, set_msda_impl
from pit_det.ops import multi_scale_deformable_attn

# Level shapes: non-square maps, 1 x 1 levels, a single level, a tall one.
LEVELS = [
    [(13, 21), (7, 11), (4, 6), (2, 3)],
    [(1, 1), (3, 2)],
    [(9, 9)],
    [(17, 3), (9, 2), (5, 1)],
]


def level_index(shapes):
    shapes = torch.tensor(shapes)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return shapes, starts, int((shapes[:, 0] * shapes[:, 1]).sum())


def random_inputs(shapes, B=2, Q=37, M=4, D=8, P=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes, starts, S = level_index(shapes)
    L = len(shapes)
    value = torch.randn(B, S, M, D, generator=g, dtype=dtype)
    # Locations a little outside [0, 1] too, so corners off the map (zero padding) are exercised.
    loc = torch.rand(B, Q, M, L, P, 2, generator=g, dtype=dtype) * 1.3 - 0.15
    attn = torch.rand(B, Q, M, L * P, generator=g, dtype=dtype).softmax(-1).view(B, Q, M, L, P)
    return value, shapes, starts, loc, attn


# Tolerances of the dtypes: the two kernels sum the same terms in another order. Measured largest
# differences (outputs, and gradients relative to their largest value): 4.4e-7 in float32 (eps
# 1.2e-7), 1.1e-15 in float64 (eps 2.2e-16).
TOL = {torch.float32: dict(atol=2e-6, rtol=0), torch.float64: dict(atol=1e-12, rtol=0)}


@pytest.mark.parametrize('levels', LEVELS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('head_dim', [8, 32])  # 32: every shipped config, its own compiled path
def test_fast_equals_stock_forward_and_gradients(levels, dtype, head_dim):
    value, shapes, starts, loc, attn = random_inputs(levels, D=head_dim, dtype=dtype)
    # Padded value tokens read zero after mmcv's masked_fill: blank the last level of image 1.
    value[1, int(starts[-1]) :] = 0
    outs, grads = {}, {}
    for impl in ('stock', 'fast'):
        inputs = [t.clone().requires_grad_() for t in (value, loc, attn)]
        out = multi_scale_deformable_attn(inputs[0], shapes, starts, inputs[1], inputs[2], impl=impl)
        g = torch.cos(torch.arange(out.numel(), dtype=dtype)).view_as(out)  # fixed, not all-ones
        (out * g).sum().backward()
        outs[impl], grads[impl] = out.detach(), [t.grad for t in inputs]
    assert outs['fast'].shape == (value.shape[0], loc.shape[1], value.shape[2] * value.shape[3])
    torch.testing.assert_close(outs['fast'], outs['stock'], **TOL[dtype])
    for name, a, b in zip(('value', 'locations', 'weights'), grads['fast'], grads['stock']):
        # Location gradients scale with the map size (d x / d loc = W), so compare relatively.
        scale = max(1.0, b.abs().max().item())
        assert (a - b).abs().max().item() <= TOL[dtype]['atol'] * scale, name


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('head_dim', [8, 32])
def test_low_precision_values_are_read_natively_and_accumulated_in_fp32(dtype, head_dim):
    """bf16 / fp16 values in, the same dtype out, fp32 inside: the output and value gradient equal
    the fp32 kernel's on the same (rounded) values, rounded once; the location and weight gradients
    (fp32) equal it exactly. Against fp32 inputs, the error is bounded by bf16 rounding."""
    value, shapes, starts, loc, attn = random_inputs(LEVELS[0], D=head_dim, dtype=torch.float32)
    low = value.to(dtype)
    runs = {}
    for name, v in (('low', low), ('fp32_of_low', low.float()), ('fp32', value)):
        inputs = [v.clone().requires_grad_(), loc.clone().requires_grad_(), attn.clone().requires_grad_()]
        out = multi_scale_deformable_attn(inputs[0], shapes, starts, inputs[1], inputs[2], impl='fast')
        grad = torch.cos(torch.arange(out.numel(), dtype=torch.float32)).view_as(out).to(dtype)  # as bf16 arrives
        out.backward(grad.to(out.dtype))
        runs[name] = [out.detach()] + [t.grad for t in inputs]
    (out, g_value, g_loc, g_attn), (ref, r_value, r_loc, r_attn) = runs['low'], runs['fp32_of_low']
    assert out.dtype == g_value.dtype == dtype and g_loc.dtype == g_attn.dtype == torch.float32
    assert torch.equal(out, ref.to(dtype)) and torch.equal(g_value, r_value.to(dtype))
    assert torch.equal(g_loc, r_loc) and torch.equal(g_attn, r_attn)
    # Rounding the values (half an ulp each) and the output: weights sum to 1 over the samples.
    eps = torch.finfo(dtype).eps
    assert (out.float() - runs['fp32'][0]).abs().max() <= eps * value.abs().max()


@pytest.mark.parametrize('head_dim', [8, 32])
def test_fast_kernel_is_identical_across_thread_counts(head_dim):
    """Forward splits queries, backward splits (batch, head): no sum depends on the thread count."""
    value, shapes, starts, loc, attn = random_inputs(LEVELS[0], D=head_dim, Q=300, dtype=torch.float32)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            inputs = [t.clone().requires_grad_() for t in (value, loc, attn)]
            out = multi_scale_deformable_attn(inputs[0], shapes, starts, inputs[1], inputs[2], impl='fast')
            out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
            runs.append([out.detach(), *(t.grad for t in inputs)])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize('head_dim', [3, 32])
def test_fast_kernel_gradcheck(head_dim):
    value, shapes, starts, loc, attn = random_inputs([(4, 5), (2, 3)], B=1, Q=3, M=2, D=head_dim, P=2)
    inputs = [t.requires_grad_() for t in (value, loc, attn)]
    fn = lambda v, loc, a: multi_scale_deformable_attn(v, shapes, starts, loc, a, impl='fast')  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_fast_kernel_rejects_bad_shapes():
    value, shapes, starts, loc, attn = random_inputs(LEVELS[0])
    with pytest.raises(RuntimeError, match='attention_weights'):
        multi_scale_deformable_attn(value, shapes, starts, loc, attn[..., :1], impl='fast')
    with pytest.raises(RuntimeError, match='outside value'):
        multi_scale_deformable_attn(value[:, :10], shapes, starts, loc, attn, impl='fast')
    with pytest.raises(ValueError, match='msda_impl'):
        multi_scale_deformable_attn(value, shapes, starts, loc, attn, impl='fastest')


@pytest.mark.parametrize('batch_first', [True, False])
@pytest.mark.parametrize('ref_dims', [2, 4])
def test_module_fast_equals_mmcv_module(batch_first, ref_dims):
    """The whole attention module, as mmdet's encoder (2-d points) and decoder (4-d boxes) use it,
    with a padding mask and query positions; parameter gradients too."""
    torch.manual_seed(0)
    shapes, starts, S = level_index(LEVELS[0])
    stock = MultiScaleDeformableAttention(
        embed_dims=64, num_heads=4, num_levels=4, num_points=3, batch_first=batch_first
    ).eval()
    # mmcv initialises the attention weights to zero; random ones make the test sensitive.
    torch.nn.init.normal_(stock.attention_weights.weight, std=0.5)
    fast = MultiScaleDeformableAttention(
        embed_dims=64, num_heads=4, num_levels=4, num_points=3, batch_first=batch_first
    ).eval()
    fast.load_state_dict(stock.state_dict())
    assert set_msda_impl(fast, 'fast') == 1 and type(fast) is MSDeformAttn
    B, Q = 2, 11
    query, query_pos = torch.randn(B, Q, 64), torch.randn(B, Q, 64)
    value = torch.randn(B, S, 64)
    mask = torch.zeros(B, S, dtype=torch.bool)
    mask[1, -20:] = True  # image 1 is padded
    ref = torch.rand(B, Q, 4, ref_dims) * (0.5 if ref_dims == 4 else 1.0)
    if not batch_first:
        query, query_pos, value = (t.transpose(0, 1) for t in (query, query_pos, value))
    outs = []
    for module in (stock, fast):
        module.zero_grad()
        out = module(
            query,
            value=value,
            query_pos=query_pos,
            key_padding_mask=mask,
            reference_points=ref,
            spatial_shapes=shapes,
            level_start_index=starts,
        )
        (out * torch.cos(out)).sum().backward()
        outs.append(out.detach())
    assert outs[0].shape == query.shape
    # fp32 through the projections around the kernel: measured 7.2e-7 on outputs of magnitude 3.7
    # (a few ulps), gradients within 5.6e-7 of each parameter's largest.
    torch.testing.assert_close(outs[1], outs[0], **TOL[torch.float32])
    for (name, p_stock), p_fast in zip(stock.named_parameters(), fast.parameters()):
        scale = max(1.0, p_stock.grad.abs().max().item())
        assert (p_fast.grad - p_stock.grad).abs().max().item() <= TOL[torch.float32]['atol'] * scale, name


def test_set_msda_impl_round_trip_and_errors():
    module = MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=1, num_points=2)
    container = torch.nn.Sequential(module, torch.nn.Linear(2, 2))
    assert set_msda_impl(container, 'fast') == 1 and type(module) is MSDeformAttn
    assert set_msda_impl(container, 'stock') == 1 and type(module) is MultiScaleDeformableAttention
    assert set_msda_impl(container, 'auto') == 1 and module.kernels['cpu'] == 'cpp'  # the kernel builds here
    with pytest.raises(ValueError, match='msda_impl'):
        set_msda_impl(container, 'cuda')


def test_detector_fast_equals_stock_predict_and_training_gradients():
    """PiT-S Deformable DETR (refine + two-stage), same weights: boxes within 1e-4 px, scores within
    1e-6 and the training gradients of every parameter within 2e-4 of the largest."""
    from test_detectors import build_detector, load, make_batch

    torch.manual_seed(0)
    model = build_detector(load('pit_s'))
    for m in model.modules():
        # No dropout (modules, and the decoder self-attention's internal one): the two runs
        # would draw different random masks otherwise.
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(m, torch.nn.MultiheadAttention):
            m.dropout = 0.0
    # mmdet initialises the sampling offsets so that every encoder sample falls exactly on a
    # pixel centre, where bilinear sampling has a kink: grid_sample and the kernel (which rounds
    # like mmcv's CUDA kernel) may take different one-sided derivatives there. Move off that
    # lattice, as any trained model is.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'sampling_offsets' in name:
                p.add_(torch.randn_like(p) * 0.05)
    data = make_batch(model, [1, 1])
    model.eval()
    preds, grads = {}, {}
    for impl in ('stock', 'fast', 'grid_sample', 'gather'):
        assert set_msda_impl(model, impl) == 12  # 6 encoder + 6 decoder layers
        with torch.no_grad():
            pred = model.predict(data['inputs'], data['data_samples'])[0].pred_instances
        preds[impl] = (pred.bboxes, pred.scores, pred.labels)
        model.train()
        model.zero_grad()
        losses = model.loss(data['inputs'], data['data_samples'])
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.eval()
    # Measured ('fast'): boxes (up to 208 px) equal, scores within 4.8e-8; gradients within 9.7e-5
    # of the largest (the decoder FFN's, after 6 layers of fp32 rounding from the kernels' different
    # sums). The export kernels sum in other orders too, within the same bounds.
    assert grads['stock'].keys() == grads['fast'].keys() and len(grads['stock']) > 100
    scale = max(g.abs().max().item() for g in grads['stock'].values())
    for impl in ('fast', 'grid_sample', 'gather'):
        torch.testing.assert_close(preds[impl][0], preds['stock'][0], atol=1e-4, rtol=0)  # ~7 ulps at 208 px
        torch.testing.assert_close(preds[impl][1], preds['stock'][1], atol=1e-6, rtol=0)
        assert torch.equal(preds[impl][2], preds['stock'][2]), impl
        for name, g in grads['stock'].items():
            assert (grads[impl][name] - g).abs().max().item() <= 2e-4 * scale, (impl, name)


@pytest.fixture
def fresh_resolve():
    """:func:`pit_det.ops.resolve` answers again for what a test changes, and the real answers after it."""
    from pit_det import ops
    from pit_det.ops import mmcv_cuda

    ops.resolve.cache_clear()
    yield ops
    ops.resolve.cache_clear()
    ops.extension_available.cache_clear()
    mmcv_cuda.mmcv_has_cuda_ops.cache_clear()


def test_resolve_names_the_kernel_of_each_impl_on_each_device(monkeypatch, fresh_resolve):
    """The table of pit_det/ops/ms_deform_attn.py: on CUDA 'fast' follows how mmcv was built, and
    'stock' without mmcv's CUDA ops is an error that names the way out."""
    ops, dispatcher = fresh_resolve, importlib.import_module('pit_det.ops.ms_deform_attn')
    impls = ('auto', 'fast', 'stock', 'triton', 'grid_sample', 'gather')
    assert [ops.resolve(i, 'cpu') for i in impls] == ['cpp', 'cpp', 'mmcv-pytorch', 'triton', 'grid_sample', 'gather']
    monkeypatch.setattr(dispatcher, 'mmcv_has_cuda_ops', lambda: True)
    cuda = ['mmcv-cuda', 'mmcv-cuda', 'mmcv-cuda', 'triton', 'grid_sample', 'gather']
    assert [ops.resolve(i, torch.device('cuda', 0)) for i in impls] == cuda
    ops.resolve.cache_clear()
    monkeypatch.setattr(dispatcher, 'mmcv_has_cuda_ops', lambda: False)
    assert [ops.resolve(i, 'cuda:1') for i in ('auto', 'fast', 'triton')] == ['triton'] * 3
    with pytest.raises(ValueError, match="'fast' and 'triton' run pit-det's Triton kernel"):
        ops.resolve('stock', 'cuda')
    with pytest.raises(ValueError, match='not on mps'):
        ops.resolve('fast', 'mps')
    with pytest.raises(ValueError, match='msda_impl must be one of'):
        ops.resolve('cpp', 'cpu')  # a kernel's name is not a choice
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    with pytest.raises(ops.TritonUnavailable, match='TRITON_INTERPRET=1'):
        ops.resolve('triton', 'cpu')


def test_resolve_logs_each_answer_once(monkeypatch, fresh_resolve):
    """A training log says which kernel ran; a forward does not log again."""
    ops, dispatcher = fresh_resolve, importlib.import_module('pit_det.ops.ms_deform_attn')
    said = []
    monkeypatch.setattr(dispatcher, 'print_log', lambda msg, **kw: said.append(msg))
    for _ in range(3):
        assert ops.resolve('fast', 'cpu') == 'cpp' and ops.resolve('gather', 'cpu') == 'gather'
    assert said == [
        "deformable attention: msda_impl 'fast' runs the 'cpp' kernel on cpu",
        "deformable attention: msda_impl 'gather' runs the 'gather' kernel on cpu",
    ]


def test_run_kernel_refuses_a_kernel_of_the_other_device():
    """'mmcv-cuda' and 'cpp' are one op's CUDA and CPU kernels: naming one for the other device's
    tensors is an error, not the other kernel."""
    from pit_det.ops import run_kernel

    value, shapes, starts, loc, attn = random_inputs(LEVELS[1])
    with pytest.raises(ValueError, match="'mmcv-cuda' kernel runs on CUDA tensors, not on cpu"):
        run_kernel('mmcv-cuda', value, shapes, starts, loc, attn)
    with pytest.raises(ValueError, match='kernel must be one of'):
        run_kernel('fast', value, shapes, starts, loc, attn)


def test_without_a_compiler_auto_falls_back_and_fast_says_why(monkeypatch, fresh_resolve):
    from pit_det.ops import extension

    ops = fresh_resolve

    def no_compiler(verbose=False):
        raise ops.ExtensionUnavailable('could not build the pit-det CPU kernel: g++ not found')

    monkeypatch.setattr(extension, 'load_extension', no_compiler)
    ops.extension_available.cache_clear()
    with pytest.warns(UserWarning, match='g\\+\\+ not found'):
        assert ops.resolve('auto', 'cpu') == 'mmcv-pytorch'
    with pytest.raises(ops.ExtensionUnavailable, match='g\\+\\+ not found'):
        ops.resolve('fast', 'cpu')
    assert ops.resolve('stock', 'cpu') == 'mmcv-pytorch'
    # A model switched to 'fast' on a machine without a GPU fails at once, not at its first forward.
    module = MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=1, num_points=2)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ops.ExtensionUnavailable, match='g\\+\\+ not found'):
        set_msda_impl(module, 'fast')
