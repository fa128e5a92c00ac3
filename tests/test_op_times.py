"""Where a runtime's time goes (``load_graph(..., profile=True)``, ``Graph.op_times``; the
benchmark's ``--profile`` for the runtimes' rows): each kind of op the runtime ran, named as it ran
it, with its time per call over the profiled calls only, in onnxruntime and OpenVINO."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from test_msda import LEVELS, random_inputs

from pit_det_deploy import RUNTIMES, DeployError, fused, load_graph

SIDE = 384  # a matmul of 384^3 multiply-adds takes about 100 times a 384^2 Relu


@pytest.fixture(scope='module')
def matmuls(tmp_path_factory):
    """x @ x, Relu, then @ x: two products of activations (neither runtime folds or fuses them
    away) around an op that costs almost nothing."""
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [SIDE, SIDE])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [SIDE, SIDE])
    nodes = [
        helper.make_node('MatMul', ['x', 'x'], ['a']),
        helper.make_node('Relu', ['a'], ['b']),
        helper.make_node('MatMul', ['b', 'x'], ['y']),
    ]
    graph = helper.make_graph(nodes, 'matmuls', [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    path = tmp_path_factory.mktemp('op_times') / 'matmuls.onnx'
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_each_kind_of_op_with_its_time_per_call_over_the_profiled_calls_only(matmuls, runtime):
    feed = {'x': np.random.default_rng(0).standard_normal((SIDE, SIDE), dtype=np.float32)}
    graph = load_graph(str(matmuls), runtime, threads=1, profile=True)
    graph(feed)  # a warm-up call: not counted
    ops = graph.op_times(feed, calls=3)
    kinds = {op['op'].split(' (')[0]: op for op in ops}  # OpenVINO adds its kernel: 'MatMul (brgemm_...)'
    # Per call, not summed over the calls nor counting the warm-up: 2 products (4 with the warm-up).
    assert kinds['MatMul']['calls'] == 2
    assert set(kinds) <= {'MatMul', 'Relu', 'Eltwise'}  # OpenVINO may run the Relu inside the MatMul
    assert ops == sorted(ops, key=lambda op: -op['self_ms'])
    assert sum(op['share'] for op in ops) == pytest.approx(1.0, abs=1e-12)
    assert kinds['MatMul']['share'] > 0.8  # the products, not the Relu, take the time
    assert all(op['self_ms'] > 0 for op in ops)
    # onnxruntime's profile ends when read: once per load, in both runtimes alike.
    with pytest.raises(DeployError, match=r'once per load_graph\(\.\.\., profile=True\)'):
        graph.op_times(feed)
    with pytest.raises(DeployError, match='once per load_graph'):
        load_graph(str(matmuls), runtime).op_times(feed)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_pit_dets_fused_op_is_named_as_such(tmp_path, runtime):
    """OpenVINO runs an extension's op as a node of type 'Reference': it is listed under its own type."""
    path = tmp_path / 'node.onnx'
    onnx.save(fused.node_model(), str(path))
    inputs = random_inputs(LEVELS[0], Q=150, D=32, dtype=torch.float32)
    feed = dict(zip(fused.INPUTS, (t.numpy() for t in inputs)))
    graph = load_graph(str(path), runtime, threads=1, profile=True)
    graph(feed)
    # OpenVINO lists a Convert of the indices too.
    ops = {op['op'].split(' (')[0]: op for op in graph.op_times(feed, calls=2)}
    assert 'Reference' not in ops and fused.OP == 'MultiScaleDeformableAttention'
    assert ops[fused.OP]['calls'] == 1 and ops[fused.OP]['share'] > 0.9
