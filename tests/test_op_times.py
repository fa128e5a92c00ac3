"""Where a runtime's time goes (``pit_det_deploy.op_times``; the benchmark's ``--profile`` for the
runtimes' rows): each kind of op the runtime ran, named as it ran it, with its time per call over
the profiled calls only, in onnxruntime and OpenVINO."""

import tempfile

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from test_msda import LEVELS, random_inputs

from pit_det import benchmark as bm
from pit_det_deploy import RUNTIMES, DeployError, fused, load_graph, op_times

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
def test_each_kind_of_op_with_its_time_per_call_over_the_profiled_calls_only(matmuls, runtime, tmp_path, monkeypatch):
    feed = {'x': np.random.default_rng(0).standard_normal((SIDE, SIDE), dtype=np.float32)}
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # where onnxruntime's profile file goes
    ops = op_times(str(matmuls), runtime, feed, threads=1, calls=3, warmup=2)
    assert not list(tmp_path.iterdir())  # the profile read and removed
    kinds = {op['op'].split(' (')[0]: op for op in ops}  # OpenVINO adds its kernel: 'MatMul (brgemm_...)'
    # Per call, not summed over the calls nor counting the warm-up: 2 products (3 with the warm-up).
    assert kinds['MatMul']['calls'] == 2
    assert set(kinds) <= {'MatMul', 'Relu', 'Eltwise'}  # OpenVINO may run the Relu inside the MatMul
    assert ops == sorted(ops, key=lambda op: -op['self_ms'])
    assert sum(op['share'] for op in ops) == pytest.approx(1.0, abs=1e-12)
    assert kinds['MatMul']['share'] > 0.8  # the products, not the Relu, take the time
    # In milliseconds per call: the nodes' sum is the call's time, give or take the runtime's own
    # work and timing noise (a microsecond or a second read as a millisecond is 1000x off).
    graph = load_graph(str(matmuls), runtime, threads=1)
    wall_ms = min(bm.time_calls(lambda: graph(feed), warmup=1, iters=3, device='cpu')) * 1e3
    assert 0.1 * wall_ms < sum(op['self_ms'] for op in ops) < 10 * wall_ms
    with pytest.raises(DeployError, match='op_times: calls=0: give at least one call'):
        op_times(str(matmuls), runtime, feed, calls=0)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_pit_dets_fused_op_is_named_as_such(tmp_path, runtime):
    """OpenVINO runs an extension's op as a node of type 'Reference': it is listed under its own type."""
    path = tmp_path / 'node.onnx'
    onnx.save(fused.node_model(), str(path))
    inputs = random_inputs(LEVELS[0], Q=150, D=32, dtype=torch.float32)
    feed = dict(zip(fused.INPUTS, (t.numpy() for t in inputs)))
    # OpenVINO lists a Convert of the indices too.
    ops = {op['op'].split(' (')[0]: op for op in op_times(str(path), runtime, feed, threads=1, calls=2)}
    assert 'Reference' not in ops and fused.OP == 'MultiScaleDeformableAttention'
    assert ops[fused.OP]['calls'] == 1 and ops[fused.OP]['share'] > 0.9
