"""pit-det's fused deformable attention inside the runtimes: the node
``pit_det::MultiScaleDeformableAttention`` that ``tools/deploy/export.py --msda fused`` writes.

Its kernel is the forward pass of pit-det's PyTorch extension (``csrc/ms_deform_attn_forward.h``,
one source for both), compiled here into two shared libraries on first use and cached:

* ``pit_det_msda``: the kernel behind a C function. onnxruntime runs the node through
  onnxruntime-extensions' Python custom ops (registered in the session's ``SessionOptions``), which
  call that function on the node's arrays without a copy;
* ``pit_det_msda_openvino``: an OpenVINO extension with the op and the ONNX frontend's mapping
  from the node (``Core.add_extension``).

The libraries are built by the C++ compiler the set-up already needs for mmcv (``$CXX``, default
``g++``) into ``$PIT_DET_CACHE/fused`` (default ``~/.cache/pit-det/fused``), one file per source,
compiler flags and OpenVINO version, so an edited source or another machine's ISA gets its own
build. Where there is no compiler, a fused graph cannot load, and :class:`FusedUnavailable` says so
and names the standard-op graphs (``--msda grid_sample`` or ``gather``), which need nothing.
"""

import ctypes
import hashlib
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import List

import numpy as np

from .errors import DeployError
from .hardware import _isa_from_flags, _read_cpuinfo

DOMAIN, OP = 'pit_det', 'MultiScaleDeformableAttention'
CSRC = Path(__file__).resolve().parent / 'csrc'
# The vector ISA per CPU, as the PyTorch extension is built (pit_det/ops/extension.py).
_ISA_FLAGS = {'AVX512': ['-march=x86-64-v4'], 'AVX2': ['-march=x86-64-v3']}


class FusedUnavailable(DeployError):
    """A graph with the fused node, where its library cannot be built or loaded here."""


def uses_fused_op(model) -> bool:
    """Whether an ``onnx.ModelProto`` (or its graph's nodes) has the fused node."""
    return any(node.domain == DOMAIN and node.op_type == OP for node in model.graph.node)


def _cache_dir() -> Path:
    return Path(os.environ.get('PIT_DET_CACHE') or Path.home() / '.cache' / 'pit-det') / 'fused'


def _compile(name: str, source: str, flags: List[str]) -> Path:
    """``source`` compiled with ``flags`` into ``<cache>/<name>-<hash>.so``, once; the file is whole
    or absent (written under another name, then renamed), so processes may build it at once."""
    cxx = os.environ.get('CXX', 'g++')
    _, cpu_flags = _read_cpuinfo()
    command = [cxx, '-O3', '-std=c++17', '-shared', '-fPIC', '-g0', *_ISA_FLAGS.get(_isa_from_flags(cpu_flags), [])]
    command += [f'-I{CSRC}', str(CSRC / source), *flags]
    key = hashlib.sha256(' '.join(command).encode())
    for path in sorted(CSRC.iterdir()):
        key.update(path.read_bytes())
    target = _cache_dir() / f'{name}-{key.hexdigest()[:16]}.so'
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix='.so', dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([*command, '-o', partial], capture_output=True, text=True)
    except OSError as e:  # no compiler at all
        os.unlink(partial)
        raise FusedUnavailable(_unavailable(f'{cxx} cannot run ({e})')) from None
    if proc.returncode != 0:
        os.unlink(partial)
        raise FusedUnavailable(_unavailable(f'{cxx} failed on {CSRC / source}:\n{proc.stderr[-2000:]}'))
    os.replace(partial, target)
    return target


def _unavailable(reason: str) -> str:
    return (
        f"this model's deformable attention is pit-det's fused op ({DOMAIN}::{OP}), whose runtime "
        f'library could not be built: {reason}\nExport with --msda grid_sample or --msda gather for a '
        'graph of standard ops that any runtime loads, or install a C++ compiler (g++, or $CXX).'
    )


@lru_cache(maxsize=None)
def kernel_library() -> Path:
    """The C library (``pit_det_msda_forward_f32``), built once."""
    return _compile('pit_det_msda', 'msda_c_api.cpp', ['-pthread'])


@lru_cache(maxsize=None)
def openvino_extension() -> Path:
    """The OpenVINO extension, built once against the installed OpenVINO."""
    import openvino

    root = Path(openvino.__file__).resolve().parent
    runtime = sorted((root / 'libs').glob('libopenvino.so.*'))
    if not runtime:
        raise FusedUnavailable(_unavailable(f'no libopenvino.so in {root / "libs"} to link against'))
    flags = [f'-I{root / "include"}', f'-l:{runtime[0].name}', f'-L{root / "libs"}', f'-Wl,-rpath,{root / "libs"}']
    return _compile(f'pit_det_msda_openvino-{openvino.__version__.split("-")[0]}', 'msda_openvino.cpp', flags)


@lru_cache(maxsize=None)
def _c_function():
    fn = ctypes.CDLL(str(kernel_library())).pit_det_msda_forward_f32
    fn.restype = ctypes.c_int
    return fn


_threads = {'onnxruntime': 1}  # the fused op's threads in onnxruntime: those of the last session loaded


def forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, threads: int = 1):
    """The fused kernel on numpy arrays (fp32 and int64, the layouts of ``csrc/ms_deform_attn_forward.h``)
    -> (B, Q, M * D) fp32.

    Raises:
        DeployError: arrays whose shapes or dtypes do not fit together, naming them.
    """
    value, sampling_locations, attention_weights = (
        np.ascontiguousarray(a, dtype=np.float32) for a in (value, sampling_locations, attention_weights)
    )
    spatial_shapes, level_start_index = (np.ascontiguousarray(a, dtype=np.int64) for a in (spatial_shapes, level_start_index))
    B, S, M, D = value.shape
    Q, L, P = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    if (
        sampling_locations.shape != (B, Q, M, L, P, 2)
        or attention_weights.shape != (B, Q, M, L, P)
        or spatial_shapes.shape != (L, 2)
        or level_start_index.shape != (L,)
    ):
        raise DeployError(
            f'{DOMAIN}::{OP}: value {value.shape}, spatial_shapes {spatial_shapes.shape}, level_start_index '
            f'{level_start_index.shape}, sampling_locations {sampling_locations.shape} and attention_weights '
            f'{attention_weights.shape} do not fit (B, S, M, D), (L, 2), (L,), (B, Q, M, L, P, 2), (B, Q, M, L, P)'
        )
    out = np.empty((B, Q, M * D), np.float32)
    scratch = np.empty_like(value)
    dims = np.array([B, S, M, D, Q, L, P], np.int64)
    error = ctypes.create_string_buffer(256)
    pointer = ctypes.c_void_p
    arrays = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights, out, scratch, dims)
    status = _c_function()(*(pointer(a.ctypes.data) for a in arrays), int(threads), error, len(error))
    if status:
        raise DeployError(f'{DOMAIN}::{OP}: {error.value.decode()}')
    return out


@lru_cache(maxsize=None)
def onnxruntime_library() -> str:
    """onnxruntime-extensions' custom-op library, with the fused op registered as one of its Python
    ops; ``SessionOptions.register_custom_ops_library`` takes the path."""
    kernel_library()  # built (or its error raised) before a session ever runs the node
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as e:
        raise FusedUnavailable(
            f'{DOMAIN}::{OP} runs in onnxruntime through onnxruntime-extensions, which is not installed '
            f'({e}): pip install onnxruntime-extensions (the version of tools/setup/constraints.txt), or '
            'export with --msda grid_sample or --msda gather'
        ) from None
    f32, i64 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64

    @onnx_op(op_type=f'{DOMAIN}::{OP}', inputs=[f32, i64, i64, f32, f32], outputs=[f32])
    def _fused(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        return forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, _threads['onnxruntime']
        )

    return get_library_path()


def set_onnxruntime_threads(threads: int) -> None:
    """The fused op's threads in onnxruntime (its Python op cannot read the session's)."""
    _threads['onnxruntime'] = threads if threads > 0 else (os.cpu_count() or 1)
