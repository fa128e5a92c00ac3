"""``torch.ops.pit_det.ms_deform_attn`` as a PyTorch custom op: schema, kernels per device, fake
implementation, autograd, and the op inside torch.compile and torch.export graphs."""

import pytest
import torch
from mmcv.ops import MultiScaleDeformableAttention
from test_msda import LEVELS, random_inputs
from torch._subclasses.fake_tensor import FakeTensorMode

from pit_det.models import set_msda_impl
from pit_det.ops import ms_deform_attn

OPS = ('pit_det::ms_deform_attn', 'pit_det::ms_deform_attn_backward')


def test_schema_and_a_kernel_for_every_device():
    schema = str(torch.ops.pit_det.ms_deform_attn.default._schema)
    assert schema == (
        'pit_det::ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, '
        'Tensor sampling_locations, Tensor attention_weights, SymInt im2col_step) -> Tensor'
    )
    for op in OPS:
        for key in ('CPU', 'CUDA', 'Meta'):  # Meta: the fake implementation
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), (op, key)
    assert torch._C._dispatch_has_kernel_for_dispatch_key(OPS[0], 'Autograd')


def test_opcheck_schema_fake_and_autograd():
    """torch's own consistency checks of a custom op (schema, fake tensors, autograd registration,
    AOT dispatch), on float64 inputs that require gradients."""
    value, shapes, starts, loc, attn = random_inputs(LEVELS[0], B=1, Q=5, M=2, D=32, P=2)
    args = (value.requires_grad_(), shapes, starts, loc.requires_grad_(), attn.requires_grad_(), 64)
    torch.library.opcheck(torch.ops.pit_det.ms_deform_attn.default, args)


def test_cuda_path_shapes_with_fake_tensors():
    """The CUDA registration's shapes, forward and backward, without a GPU (fake CUDA tensors)."""
    with FakeTensorMode():
        value = torch.empty(2, 60, 4, 32, device='cuda')
        loc = torch.empty(2, 7, 4, 2, 3, 2, device='cuda')
        attn = torch.empty(2, 7, 4, 2, 3, device='cuda')
        shapes, starts = torch.tensor([[6, 8], [3, 4]], device='cuda'), torch.tensor([0, 48], device='cuda')
        out = ms_deform_attn(value, shapes, starts, loc, attn, 64)
        assert out.shape == (2, 7, 128) and out.device.type == 'cuda'
        grads = torch.ops.pit_det.ms_deform_attn_backward(value, shapes, starts, loc, attn, out, 64)
        assert [(g.shape, g.device.type) for g in grads] == [(t.shape, 'cuda') for t in (value, loc, attn)]


@pytest.fixture
def attention_layer():
    """mmdet's encoder attention as the detectors build it, switched to the op, with its inputs."""
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention(embed_dims=64, num_heads=2, num_levels=2, num_points=3, batch_first=True)
    set_msda_impl(layer, 'fast')
    shapes = torch.tensor([[6, 8], [3, 4]])
    inputs = dict(
        query=torch.randn(2, 7, 64),
        value=torch.randn(2, 60, 64),
        reference_points=torch.rand(2, 7, 2, 2),
        spatial_shapes=shapes,
        level_start_index=torch.tensor([0, 48]),
    )
    return layer.eval(), inputs


def test_compile_keeps_the_op_in_one_graph(attention_layer):
    layer, inputs = attention_layer
    explained = torch._dynamo.explain(layer)(**inputs)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    assert 'pit_det.ms_deform_attn' in explained.graphs[0].code
    grads = []  # AOT autograd through the op: gradients of the compiled layer equal eager ones
    for fn in (layer, torch.compile(layer, backend='aot_eager', fullgraph=True)):
        layer.zero_grad()
        out = fn(**inputs)
        out.square().sum().backward()
        grads.append([out.detach()] + [p.grad.clone() for p in layer.parameters()])
    for eager, compiled in zip(*grads):
        torch.testing.assert_close(compiled, eager, atol=0, rtol=0)


def test_export_traces_the_op(attention_layer):
    layer, inputs = attention_layer
    exported = torch.export.export(layer, (), kwargs=inputs)
    assert [n.target for n in exported.graph.nodes if 'pit_det' in str(n.target)] == [
        torch.ops.pit_det.ms_deform_attn.default
    ]
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(**inputs), layer(**inputs), atol=0, rtol=0)


@pytest.mark.slow
def test_whole_detector_predict_is_one_graph():
    """PiT-S Deformable DETR's predict path under torch.compile's tracer is a single graph with no
    break: all 12 deformable attention calls (6 encoder, 6 decoder layers) are the custom op in it,
    and the level shapes travel as ints (mmdet's tensor-valued shapes broke it 6 times)."""
    from pit_det import benchmark as bm

    model = bm.build_detector('configs/deformable_detr_pit_s.py', None).eval()
    data = model.data_preprocessor(bm.make_sample(160, 208), False)
    with torch.no_grad():
        explained = torch._dynamo.explain(model.predict)(data['inputs'], data['data_samples'])
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    assert explained.graphs[0].code.count('torch.ops.pit_det.ms_deform_attn.default') == 12
