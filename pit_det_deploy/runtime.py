"""One interface over the two CPU runtimes an exported detector runs in: onnxruntime and OpenVINO.

Both read the same ``.onnx`` file as it is. OpenVINO's CPU plugin would run fp32 models in bf16
on CPUs with AMX or AVX-512 BF16 (its default ``INFERENCE_PRECISION_HINT`` there); pit-det asks
for fp32, so that both runtimes give PyTorch's detections. An INT8 model (``tools/deploy/quantize.py``)
carries its precision in the graph. A graph with pit-det's fused deformable attention
(``--msda fused``) loads the runtime's library for it (:mod:`.fused`).
"""

from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

import numpy as np

from . import fused, metadata, trt_plugin
from .errors import DeployError, unloadable

RUNTIMES = ('onnxruntime', 'openvino')
T = TypeVar('T')


class Graph:
    """A loaded model: ``graph(feed) -> outputs`` (numpy, in the model's output order), with the
    model's ``pit_det`` metadata (``{}`` if it has none).

    Args:
        run: the runtime's call.
        metadata: the ``pit_det`` metadata entry, parsed.
        runtime: 'onnxruntime' or 'openvino'.
    """

    def __init__(self, run: Callable[[Dict[str, np.ndarray]], List[np.ndarray]], metadata: dict, runtime: str) -> None:
        self._run, self.metadata, self.runtime = run, metadata, runtime

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
    if runtime not in RUNTIMES:
        raise DeployError(f'runtime {runtime!r}: choose one of {", ".join(RUNTIMES)}')
    try:
        return (_onnxruntime if runtime == 'onnxruntime' else _openvino)(str(path), threads)
    except ImportError as e:
        raise DeployError(
            f'runtime {runtime} is not installed ({e}); '
            f'pip install {runtime} (the version of tools/setup/constraints.txt)'
        ) from None


def _onnxruntime(path: str, threads: int) -> Graph:
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
    meta = metadata.parse(inference.get_modelmeta().custom_metadata_map)
    return Graph(lambda feed: inference.run(None, feed), meta, 'onnxruntime')


def _openvino(path: str, threads: int) -> Graph:
    import openvino as ov

    core = ov.Core()
    config = {'INFERENCE_PRECISION_HINT': 'f32', 'PERFORMANCE_HINT': 'LATENCY'}
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
    meta = metadata.from_openvino(model)

    def run(feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        result = request.infer(feed)
        return [np.array(result[output]) for output in compiled.outputs]  # copies: the request reuses its buffers

    return Graph(run, meta, 'openvino')


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
