"""Building and loading pit-det's C++ CPU kernel (``csrc/ms_deform_attn_cpu.cpp``).

Compiled on first use with ``torch.utils.cpp_extension.load`` (20 s on 2 Xeon cores, 45 s on 2
Zen 3 cores; the set-up's ``tools/setup/verify_install.py`` does it once) and cached under
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), rebuilt when its source or torch changes.
"""

import logging
import os.path as osp
import warnings
from functools import lru_cache
from types import ModuleType

import torch

import pit_det_deploy
from pit_det_deploy.hardware import ISA_COMPILE_FLAGS

_SOURCE = osp.join(osp.dirname(__file__), 'csrc', 'ms_deform_attn_cpu.cpp')
# The forward pass it shares with the runtime library of exported models (pit_det_deploy.fused);
# ninja's header dependencies rebuild the extension when it changes.
_SHARED_INCLUDE = osp.join(osp.dirname(pit_det_deploy.__file__), 'csrc')


class ExtensionUnavailable(RuntimeError):
    """The C++ kernel could not be compiled or loaded here."""


@lru_cache(maxsize=None)
def load_extension(verbose: bool = False) -> ModuleType:
    """Compiles (once, then cached on disk) and imports the CPU kernel.

    Raises:
        ExtensionUnavailable: with the compiler's reason, when there is no working toolchain.
    """
    # Importing cpp_extension on a machine without CUDA logs "No CUDA runtime is found";
    # this kernel is CPU-only, so that line is noise.
    logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    from torch.utils.cpp_extension import load

    # The capability is part of the extension's name, so a cache directory shared by different
    # machines never serves a build that the CPU cannot run.
    isa = torch.backends.cpu.get_cpu_capability().lower()
    # -fopenmp makes at::parallel_for use torch's OpenMP pool (libgomp is already loaded by
    # torch, so the extension shares it rather than starting a second runtime).
    flags = ['-O3', '-fopenmp'] + ISA_COMPILE_FLAGS.get(isa.upper(), [])
    try:
        return load(
            name=f'pit_det_ms_deform_attn_cpu_{isa}',
            sources=[_SOURCE],
            extra_include_paths=[_SHARED_INCLUDE],
            extra_cflags=flags,
            extra_ldflags=['-fopenmp'],
            verbose=verbose,
        )
    except Exception as e:  # no compiler, no headers, ...
        raise ExtensionUnavailable(f'could not build the pit-det CPU kernel from {_SOURCE}: {e}') from e


@lru_cache(maxsize=None)
def extension_available() -> bool:
    try:
        load_extension()
        return True
    except ExtensionUnavailable as e:
        warnings.warn(f'{e}\nFalling back to the stock (mmcv pure-PyTorch) deformable attention.')
        return False
