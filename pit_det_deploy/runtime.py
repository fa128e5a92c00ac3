"""One interface over the two CPU runtimes an exported detector runs in: onnxruntime and OpenVINO.

Both read the same ``.onnx`` file as it is. OpenVINO's CPU plugin would run fp32 models in bf16
on CPUs with AMX or AVX-512 BF16 (its default ``INFERENCE_PRECISION_HINT`` there); pit-det asks
for fp32, so that both runtimes give PyTorch's detections. An INT8 model (``tools/deploy/quantize.py``)
carries its precision in the graph. A graph with pit-det's fused deformable attention
(``--msda fused``) loads the runtime's library for it (:mod:`.fused`).
"""

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

import numpy as np

from . import fused, metadata, trt_plugin
from .errors import DeployError, unloadable

RUNTIMES = ('onnxruntime', 'openvino')
T = TypeVar('T')


# Where a profiled graph's time went: per op kind, [summed milliseconds, nodes run], over the profiled calls.
OpTotals = Dict[str, List[float]]
# A profiled graph's profile: (feed, warm-up calls, profiled calls) -> OpTotals of the profiled calls.
Profile = Callable[[Dict[str, np.ndarray], int, int], OpTotals]


class Graph:
    """A loaded model: ``graph(feed) -> outputs`` (numpy, in the model's output order), with the
    model's ``pit_det`` metadata (``{}`` if it has none).

    Args:
        run: the runtime's call.
        metadata: the ``pit_det`` metadata entry, parsed.
        runtime: 'onnxruntime' or 'openvino'.
        profile: a graph loaded to be profiled (:func:`op_times`): its runtime's per-node times.
    """

    def __init__(
        self,
        run: Callable[[Dict[str, np.ndarray]], List[np.ndarray]],
        metadata: dict,
        runtime: str,
        profile: Optional[Profile] = None,
    ) -> None:
        self._run, self.metadata, self.runtime, self.profile = run, metadata, runtime, profile

    def __call__(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return self._run(feed)


def load_graph(path: str, runtime: str = 'onnxruntime', threads: int = 0) -> Graph:
    """``path`` compiled for the CPU by ``runtime`` with ``threads`` intra-op threads (0: the
    runtime's own choice).

    A model with pit-det's fused deformable attention (``--msda fused``) gets the runtime's library
    for it, built on first use (:mod:`.fused`).

    Raises:
        DeployError: an unknown runtime, one that is not installed (saying how to install it), a
            file the runtime cannot load as an ONNX model, or the TensorRT graph (``--msda trt_plugin``),
            which neither runtime has the op of.
        FusedUnavailable: a fused model, where the runtime's library for it cannot be built (a
            ``DeployError`` that names the reason and the portable graphs).
    """
    return _loaded(path, runtime, threads, profile=False)


def op_times(
    path: str, runtime: str, feed: Dict[str, np.ndarray], threads: int = 0, calls: int = 5, warmup: int = 1
) -> List[dict]:
    """Where ``runtime``'s time goes in ``path``: ``warmup`` calls of ``feed``, then ``calls`` calls
    timed node by node by the runtime's own profiler (onnxruntime's profile, OpenVINO's per-node
    counters). The profiler costs time itself: time latency with :func:`load_graph`.

    Args:
        path: the model file.
        runtime: 'onnxruntime' or 'openvino'.
        feed: the model's inputs by name, as for a :class:`Graph`.
        threads: intra-op threads (0: the runtime's own choice).
        calls: calls profiled.
        warmup: calls before them, not profiled.

    Returns:
        list: one dict per kind of op, the most time first: ``op`` (onnxruntime: the op type it
        ran, after its fusions, e.g. ``QLinearMatMul``; OpenVINO: its node type and, in brackets,
        the kernel it chose, e.g. ``FullyConnected (jit_gemm_i8)``), ``self_ms`` per call,
        ``share`` of the summed op time, ``calls``: nodes of that kind per call.

    Raises:
        DeployError: ``calls`` < 1, and whatever :func:`load_graph` raises.
    """
    if calls < 1:
        raise DeployError(f'op_times: calls={calls}: give at least one call')
    totals = _loaded(path, runtime, threads, profile=True).profile(feed, warmup, calls)
    whole = sum(ms for ms, _ in totals.values()) or 1.0
    return [
        dict(op=op, self_ms=ms / calls, share=ms / whole, calls=round(nodes / calls))
        for op, (ms, nodes) in sorted(totals.items(), key=lambda item: -item[1][0])
    ]


def _loaded(path: str, runtime: str, threads: int, profile: bool) -> Graph:
    if runtime not in RUNTIMES:
        raise DeployError(f'runtime {runtime!r}: choose one of {", ".join(RUNTIMES)}')
    try:
        return (_onnxruntime if runtime == 'onnxruntime' else _openvino)(str(path), threads, profile)
    except ImportError as e:
        raise DeployError(
            f'runtime {runtime} is not installed ({e}); '
            f'pip install {runtime} (the version of tools/setup/constraints.txt)'
        ) from None


def _onnxruntime(path: str, threads: int, profile: bool) -> Graph:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: not its notes on constants it cannot fold

    def open_model(library: Optional[Path]):
        if library is not None:
            options.register_custom_ops_library(str(library))
        return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])

    # onnxruntime's own errors (InvalidProtobuf, Fail, ...) have no public base class.
    inference = _load(open_model, fused.onnxruntime_library, path, Exception)
    meta = metadata.parse(inference.get_modelmeta().custom_metadata_map, path)
    if not profile:
        return Graph(lambda feed: inference.run(None, feed), meta, 'onnxruntime')

    def profiled(feed: Dict[str, np.ndarray], warmup: int, calls: int) -> OpTotals:
        # Loaded again, profiling every call (the load above may have failed once, on the fused op;
        # the options keep the library it registered). onnxruntime writes the profile to a file
        # when it ends: here, or when the model is freed.
        folder = tempfile.mkdtemp(prefix='pit_det_profile_')
        try:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(folder, 'profile'))
            profiled = open_model(None)
            try:
                for _ in range(warmup + calls):
                    profiled.run(None, feed)
            finally:
                written = profiled.end_profiling()
            events = json.loads(Path(written).read_text())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        # Only the last `calls` runs (not the warm-up): the nodes that start inside them.
        runs = sorted(e['ts'] for e in events if e.get('name') == 'model_run')
        if len(runs) < warmup + calls:  # its profile stops at 1,000,000 events
            raise DeployError(f'onnxruntime profiled {len(runs)} of {warmup + calls} calls: profile fewer calls')
        start = runs[-calls]
        totals: OpTotals = {}
        for e in events:
            if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time') and e['ts'] >= start:
                entry = totals.setdefault(e['args']['op_name'], [0.0, 0])
                entry[0] += e['dur'] / 1e3  # microseconds
                entry[1] += 1
        return totals

    return Graph(lambda feed: inference.run(None, feed), meta, 'onnxruntime', profiled)


def _openvino(path: str, threads: int, profile: bool) -> Graph:
    import openvino as ov

    core = ov.Core()
    config = {'INFERENCE_PRECISION_HINT': 'f32', 'PERFORMANCE_HINT': 'LATENCY', 'PERF_COUNT': profile}
    if threads:
        config['INFERENCE_NUM_THREADS'] = threads

    def read(extension: Optional[Path]):
        if extension is not None:
            core.add_extension(str(extension))
        return core.read_model(path)

    model = _load(read, fused.openvino_extension, path, RuntimeError)  # OpenVINO's errors on a file it cannot read
    try:
        compiled = core.compile_model(model, 'CPU', config)
    except RuntimeError as e:
        raise unloadable(path, e) from None
    request = compiled.create_infer_request()
    meta = metadata.from_openvino(model, path)

    def run(feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        result = request.infer(feed)
        return [np.array(result[output]) for output in compiled.outputs]  # copies: the request reuses its buffers

    return Graph(run, meta, 'openvino', _openvino_profile(model, request) if profile else None)


def _openvino_profile(model, request) -> Profile:
    """OpenVINO's per-node counters of ``request`` (compiled with ``PERF_COUNT``) as a :data:`Profile`."""
    # OpenVINO profiles an extension's op (pit-det's fused op) as node type 'Reference': named by its own type.
    op_types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}

    def profiled(feed: Dict[str, np.ndarray], warmup: int, calls: int) -> OpTotals:
        for _ in range(warmup):
            request.infer(feed)
        totals: OpTotals = {}
        for _ in range(calls):
            request.infer(feed)
            for node in request.profiling_info:  # the last call's, node by node
                if node.status == node.Status.EXECUTED:  # not the nodes fused into others
                    kind = node.node_type
                    if kind == 'Reference':
                        kind = op_types.get(node.node_name, kind)
                    entry = totals.setdefault(f'{kind} ({node.exec_type})', [0.0, 0])
                    entry[0] += node.real_time.total_seconds() * 1e3
                    entry[1] += 1
        return totals

    return profiled


def _load(load: Callable[[Optional[Path]], T], library: Callable[[], Path], path: str, errors: type) -> T:
    """``load(None)``; where that fails on pit-det's fused op (the runtime names the node's domain and
    op in its error), ``load(library())``: the op's library is built and registered only for the
    graphs that use it.

    Args:
        load: the runtime's load of ``path``, given the path of a library to register first, or None.
        library: builds (once) and returns the runtime's fused-op library (:mod:`.fused`).
        path: the model file, named in errors.
        errors: the runtime's errors on a file it cannot load.

    Raises:
        FusedUnavailable: the model has the fused op and its library cannot be built here.
        DeployError: a file the runtime cannot load, naming it.
    """
    try:
        return load(None)
    except errors as e:
        if trt_plugin.PLUGIN in str(e):
            raise trt_plugin.tensorrt_only(path) from None
        if fused.DOMAIN not in str(e) or fused.OP not in str(e):
            raise unloadable(path, e) from None
    built = library()  # outside the except clauses: a bug in the build keeps its traceback
    try:
        return load(built)
    except errors as e:
        raise unloadable(path, e) from None
