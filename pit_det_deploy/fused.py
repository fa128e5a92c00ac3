"""pit-det's fused deformable attention inside the runtimes: the node
``pit_det::MultiScaleDeformableAttention`` that ``tools/deploy/export.py --msda fused`` writes.

Its kernel is the forward pass of pit-det's PyTorch extension (``csrc/ms_deform_attn_forward.h``,
one source for both), compiled here into one shared library per runtime on first use, and cached:

* ``msda_onnxruntime.cpp``: an onnxruntime custom-op library (``SessionOptions.register_custom_ops_library``),
  run on onnxruntime's intra-op threads. onnxruntime's wheel ships no C headers; they come from
  Debian's ``libonnxruntime-dev`` package (headers only, 85 KB, checked against its SHA-256), or
  from ``$ONNXRUNTIME_INCLUDE_DIR`` where a machine has them;
* ``msda_openvino.cpp``: an OpenVINO extension with the op and the ONNX frontend's mapping from the
  node (``Core.add_extension``), built against the installed OpenVINO's own headers.

Both are built by the C++ compiler the set-up already needs for mmcv (``$CXX``, default ``g++``) into
``$PIT_DET_CACHE/fused`` (default ``~/.cache/pit-det/fused``), one file per source, flags and runtime
version, so an edited source or another machine's ISA gets its own build (``tools/setup/verify_install.py``
builds both). Where a library cannot be built, a fused graph does not load and
:class:`FusedUnavailable` says why and names the standard-op graphs (``--msda grid_sample`` or
``gather``), which need nothing.
"""

import functools
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

from .errors import DeployError
from .hardware import ISA_COMPILE_FLAGS, isa_from_flags, read_cpuinfo

DOMAIN, OP = 'pit_det', 'MultiScaleDeformableAttention'
# The node's inputs, in order (those of torch.ops.pit_det.ms_deform_attn, less im2col_step).
INPUTS = ('value', 'spatial_shapes', 'level_start_index', 'sampling_locations', 'attention_weights')
CSRC = Path(__file__).resolve().parent / 'csrc'
# onnxruntime's C API headers, version 21 (onnxruntime 1.21; later releases run libraries built
# against an older API): Debian 13's package of them. Where the archive has moved on, or offline,
# $ONNXRUNTIME_INCLUDE_DIR names a folder of them.
ORT_HEADERS = dict(
    url='https://deb.debian.org/debian/pool/main/o/onnxruntime/libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb',
    sha256='14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08',
    folder='usr/include/onnxruntime',
)


class FusedUnavailable(DeployError):
    """A graph with the fused node, where the runtime's library for it cannot be built here."""


def _unavailable(reason: str) -> FusedUnavailable:
    return FusedUnavailable(
        f"this model's deformable attention is pit-det's fused op ({DOMAIN}::{OP}), and its runtime library "
        f'could not be built: {reason}\nExport with --msda grid_sample or --msda gather for a graph of '
        'standard ops that any runtime loads.'
    )


def uses_fused_op(model: Any) -> bool:
    """Whether an ``onnx.ModelProto`` has the fused node."""
    return any(node.domain == DOMAIN and node.op_type == OP for node in model.graph.node)


def node_model() -> Any:
    """An ``onnx.ModelProto`` of the fused node alone, inputs named as :data:`INPUTS` and of any
    size: how the set-up and the tests run a runtime's library on given arrays."""
    from onnx import TensorProto, helper

    dtypes = (TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT64, TensorProto.FLOAT, TensorProto.FLOAT)
    inputs = [
        helper.make_tensor_value_info(name, dtype, [f'{name}_{i}' for i in range(rank)])
        for name, dtype, rank in zip(INPUTS, dtypes, (4, 2, 1, 6, 5))
    ]
    node = helper.make_node(OP, list(INPUTS), ['output'], domain=DOMAIN)
    output = helper.make_tensor_value_info('output', TensorProto.FLOAT, ['B', 'Q', 'channels'])
    graph = helper.make_graph([node], 'fused_msda', inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13), helper.make_opsetid(DOMAIN, 1)])


def _once(build: Callable[[], Path]) -> Callable[[], Path]:
    """``build`` run at most once per process: its path, or the :class:`FusedUnavailable` it raised,
    given again to every later call (offline, a second load does not wait on a second download).
    ``.cache_clear()`` forgets it."""
    memo: Dict[str, object] = {}

    @functools.wraps(build)
    def once() -> Path:
        if 'done' not in memo:
            try:
                memo['done'] = build()
            except FusedUnavailable as e:
                memo['done'] = e
        if isinstance(memo['done'], FusedUnavailable):
            raise memo['done']
        return memo['done']

    once.cache_clear = memo.clear
    return once


def _cache_dir() -> Path:
    return Path(os.environ.get('PIT_DET_CACHE') or Path.home() / '.cache' / 'pit-det') / 'fused'


def _write_whole(target: Path, write: Callable[[Path], None]) -> None:
    """``write(path)`` under a temporary name beside ``target``, then renamed to it: ``target`` (a
    file or a folder) is whole or absent, so processes may build it at once."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        write(staging / target.name)
        try:
            os.replace(staging / target.name, target)
        except OSError:
            if not target.exists():
                raise  # not a folder another process put there first
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _compile(name: str, source: str, flags: List[str]) -> Path:
    """``csrc/<source>`` compiled with ``flags`` into ``<cache>/<name>-<hash>.so``, once."""
    cxx = os.environ.get('CXX', 'g++')
    isa = ISA_COMPILE_FLAGS.get(isa_from_flags(read_cpuinfo()[1]), [])
    command = [cxx, '-O3', '-std=c++17', '-shared', '-fPIC', '-g0', *isa, f'-I{CSRC}', str(CSRC / source), *flags]
    try:
        version = subprocess.run([cxx, '--version'], capture_output=True, text=True).stdout
    except OSError as e:  # no compiler at all
        raise _unavailable(f'{cxx} cannot run ({e}); install a C++ compiler (g++, or set $CXX)') from None
    key = hashlib.sha256(' '.join(command + [version]).encode())
    for path in sorted(CSRC.glob('*.*')):
        key.update(path.read_bytes())
    target = _cache_dir() / f'{name}-{key.hexdigest()[:16]}.so'
    if target.is_file():
        return target

    def build(path: Path) -> None:
        proc = subprocess.run([*command, '-o', str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise _unavailable(f'{cxx} failed on {CSRC / source}:\n{proc.stderr[-2000:]}')

    _write_whole(target, build)
    return target


@_once
def onnxruntime_headers() -> Path:
    """The folder of onnxruntime's C API headers: ``$ONNXRUNTIME_INCLUDE_DIR``, or Debian's
    package of them, downloaded once into the cache.

    Raises:
        FusedUnavailable: neither is at hand (offline, or a download that fails its checksum).
    """
    given = os.environ.get('ONNXRUNTIME_INCLUDE_DIR')
    if given:
        if not (Path(given) / 'onnxruntime_lite_custom_op.h').is_file():
            raise _unavailable(f'$ONNXRUNTIME_INCLUDE_DIR={given} has no onnxruntime_lite_custom_op.h')
        return Path(given)
    folder = _cache_dir() / f'onnxruntime-headers-{ORT_HEADERS["sha256"][:16]}'
    if folder.is_dir():
        return folder
    try:
        with urllib.request.urlopen(ORT_HEADERS['url'], timeout=60) as response:
            package = response.read()
    except OSError as e:
        raise _unavailable(
            f"onnxruntime's C headers (which its wheel does not ship) could not be downloaded from "
            f'{ORT_HEADERS["url"]} ({e}); set $ONNXRUNTIME_INCLUDE_DIR to a folder with them'
        ) from None
    if hashlib.sha256(package).hexdigest() != ORT_HEADERS['sha256']:
        raise _unavailable(f'{ORT_HEADERS["url"]} does not have the SHA-256 it should')
    headers = _deb_files(package, ORT_HEADERS['folder'])

    def write(path: Path) -> None:
        for relative, data in headers.items():
            (path / relative).parent.mkdir(parents=True, exist_ok=True)
            (path / relative).write_bytes(data)

    _write_whole(folder, write)
    return folder


def _deb_files(package: bytes, folder: str) -> Dict[str, bytes]:
    """The files under ``folder`` in a Debian package (an ``ar`` archive holding ``data.tar.*``),
    by their path relative to it.

    Raises:
        FusedUnavailable: ``package`` is no Debian package.
    """
    magic, data, offset = b'!<arch>\n', None, 8
    while package.startswith(magic) and offset + 60 <= len(package):  # 60-byte member headers
        name, size = package[offset : offset + 16].decode().strip(), int(package[offset + 48 : offset + 58])
        if name.rstrip('/').startswith('data.tar'):
            data = package[offset + 60 : offset + 60 + size]
        offset += 60 + size + size % 2
    if data is None:
        raise _unavailable(f'{ORT_HEADERS["url"]} is no Debian package with a data.tar member')
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            path = member.name.removeprefix('./')
            if member.isfile() and path.startswith(folder + '/'):
                files[path[len(folder) + 1 :]] = tar.extractfile(member).read()
    return files


@_once
def onnxruntime_library() -> Path:
    """The onnxruntime custom-op library, built once (per onnxruntime version: a library is loaded
    by the release it was built beside)."""
    import onnxruntime

    name = f'pit_det_msda_onnxruntime-{onnxruntime.__version__}'
    return _compile(name, 'msda_onnxruntime.cpp', [f'-I{onnxruntime_headers()}'])


@_once
def openvino_extension() -> Path:
    """The OpenVINO extension, built once against the installed OpenVINO."""
    import openvino

    root = Path(openvino.__file__).resolve().parent
    runtime = sorted((root / 'libs').glob('libopenvino.so.*'))
    if not runtime:
        raise _unavailable(f'no libopenvino.so in {root / "libs"} to link against')
    flags = [f'-I{root / "include"}', f'-L{root / "libs"}', f'-l:{runtime[0].name}', f'-Wl,-rpath,{root / "libs"}']
    return _compile(f'pit_det_msda_openvino-{openvino.__version__.split("-")[0]}', 'msda_openvino.cpp', flags)


@contextmanager
def registered_in_every_onnxruntime_model() -> Iterator[None]:
    """Within the block, every ``onnxruntime.SessionOptions()`` registers the fused op.

    For INT8 calibration of a fused graph: onnxruntime 1.32's static quantization runs the graph in an
    ``InferenceSession`` it builds from a ``SessionOptions`` of its own, with no way to add a custom-op library
    (``onnxruntime/quantization/calibrate.py``, ``create_inference_session``). It looks the class up
    on the module at each call, so the block swaps in a subclass that registers the library.
    """
    import onnxruntime

    library, plain = str(onnxruntime_library()), onnxruntime.SessionOptions

    class WithFusedOp(plain):
        def __init__(self) -> None:
            super().__init__()
            self.register_custom_ops_library(library)

    onnxruntime.SessionOptions = WithFusedOp
    try:
        yield
    finally:
        onnxruntime.SessionOptions = plain
