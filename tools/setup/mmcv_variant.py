"""Which mmcv ops variant `tools/setup/setup_env.sh` builds on this machine, and the cache key of its wheel.

mmcv 2.1.0 ships no wheel for torch 2.13, so the set-up compiles it. mmdet needs mmcv's compiled
ops to import; Deformable DETR runs none of them but deformable attention, which pit-det brings
itself (a C++ CPU kernel, and on GPUs a Triton kernel or mmcv's CUDA one). So:

* no GPU: mmcv's CPU ops;
* GPUs and ``nvcc``: mmcv's CUDA ops too, compiled for the visible GPUs' architectures only (a
  build for every architecture takes hours). A Slurm login node without GPU can ask for the
  compute nodes' architectures with ``PIT_DET_CUDA_ARCHS="8.0;9.0"``;
* GPUs without ``nvcc``: mmcv's CPU ops (built with the GPUs hidden, so mmcv's setup.py does not
  try CUDA), and deformable attention runs in pit-det's Triton kernel.

Run by the set-up inside the new venv (after torch is installed); prints bash assignments to eval:

    MMCV_TAG=py311-torch2.13.0-cuda9.0     # or py311-torch2.13.0-cpu
    MMCV_BUILD_ENV=(MMCV_WITH_OPS=1 FORCE_CUDA=1 'TORCH_CUDA_ARCH_LIST=8.0;9.0' CUDA_HOME=/usr/local/cuda)
    MMCV_NOTE='...'                        # what the set-up tells the user about its choice

Exit code 2 with a message naming the fix when torch cannot run the GPUs asked for.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Optional, Sequence

PCH_CXX = Path(__file__).resolve().parent / 'pch_cxx.py'


class VariantError(RuntimeError):
    pass


def find_nvcc() -> Optional[str]:
    """nvcc as torch's cpp_extension finds it: $CUDA_HOME/bin, then PATH, then /usr/local/cuda.

    ``PIT_DET_NVCC=none`` ignores any nvcc (mmcv's CPU ops and the Triton kernel: no CUDA build,
    minutes instead of up to an hour); ``PIT_DET_NVCC=/path/to/nvcc`` names one.
    """
    chosen = os.environ.get('PIT_DET_NVCC')
    if chosen:
        return None if chosen == 'none' else chosen
    for home in (os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH')):
        if home and os.path.isfile(os.path.join(home, 'bin', 'nvcc')):
            return os.path.join(home, 'bin', 'nvcc')
    found = shutil.which('nvcc')
    if found:
        return found
    default = '/usr/local/cuda/bin/nvcc'
    return default if os.path.isfile(default) else None


def no_debug_info(cflags: str) -> str:
    """Python's compile flags with ``-g`` replaced by ``-g0``.

    Debug info doubles the compile time of mmcv's ops (nms.cpp: 11.8 s with -g, 6.6 s with -g0 on
    a Xeon with AVX-512, 53.9 s / 21.8 s on an AMD EPYC Zen 3). The optimisation level stays -O3:
    -O1 and -O0 were within 5-10% (nms.cpp 6.3 s / 6.4 s), parsing torch's headers dominates, and
    mmcv's CPU ops keep their speed for other mmdet models in the same environment (pit-det's own
    hot path does not use them: its deformable attention is its own kernel). A CFLAGS variable
    replaces Python's flags, hence the whole list.
    """
    flags = [f for f in cflags.split() if not (f.startswith('-g') and f not in ('-g0',))]
    return ' '.join([*flags, '-g0'])


def plan(
    python_tag: str,
    torch_version: str,
    torch_cuda: Optional[str],
    cuda_archs: Sequence[str],
    nvcc: Optional[str],
    cflags: str = '-O3',
    compiler: str = 'c++',
) -> dict:
    """The build of mmcv's ops for these inputs.

    Args:
        python_tag: e.g. ``'py311'``.
        torch_version: ``torch.__version__``.
        torch_cuda: ``torch.version.cuda`` (None for a CPU-only torch).
        cuda_archs: compute capabilities to build for, e.g. ``['9.0']``; empty for a CPU build.
        nvcc: path of the CUDA compiler, or None.
        cflags: Python's compile flags (``sysconfig.get_config_var('CFLAGS')``), built without -g.
        compiler: the C++ compiler (``CXX``, default ``c++``) that tools/setup/pch_cxx.py runs.

    Returns:
        ``{'tag': cache key of the wheel, 'env': build environment, 'note': what to tell the user}``.
    """
    archs = sorted(set(cuda_archs), key=lambda a: tuple(int(x) for x in a.split('.')))
    tag = f'{python_tag}-torch{torch_version.replace("+", "_")}'
    fast = no_debug_info(cflags)
    # CXX: tools/setup/pch_cxx.py, the compiler CXX named before (PIT_DET_CXX) with the torch headers every
    # op includes first precompiled once (nms.cpp 10.9 s -> 2.3 s, the same object file; 2-core AMD
    # EPYC Zen 3). The set-up gives it PIT_DET_PCH_DIR, a folder for that one build.
    env = {'MMCV_WITH_OPS': '1', 'CFLAGS': fast, 'CXXFLAGS': fast, 'CXX': str(PCH_CXX), 'PIT_DET_CXX': compiler}
    if not archs:
        return {'tag': f'{tag}-cpu', 'env': env, 'note': ''}
    if torch_cuda is None:
        raise VariantError(
            f'CUDA architectures {";".join(archs)} were asked for, but torch {torch_version} is a '
            'CPU-only build. Install the registry torch (tools/setup/constraints.txt), or unset PIT_DET_CUDA_ARCHS.'
        )
    if nvcc is None:
        # mmcv's setup.py builds CUDA ops whenever torch sees a GPU: hide them from the build.
        return {
            'tag': f'{tag}-cpu',
            'env': {'CUDA_VISIBLE_DEVICES': '', **env},
            'note': (
                f'GPUs of compute capability {";".join(archs)} but no nvcc (CUDA_HOME, PATH, /usr/local/cuda): '
                "building mmcv's CPU ops only; on the GPU deformable attention runs in pit-det's Triton kernel. "
                f"For mmcv's CUDA kernel instead, install the CUDA {torch_cuda} toolkit, set CUDA_HOME and run the "
                'set-up again.'
            ),
        }
    env.update(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST=';'.join(archs), CUDA_HOME=os.path.dirname(os.path.dirname(nvcc)))
    return {
        'tag': f'{tag}-cuda{"_".join(archs)}',
        'env': env,
        'note': f'GPUs of compute capability '
        f'{";".join(archs)} and nvcc at {nvcc}: building mmcv with its CUDA ops for them',
    }


def visible_archs() -> list:
    import torch

    if not torch.cuda.is_available():
        return []
    return ['%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]


def user_compiler() -> str:
    """The C++ compiler that ``CXX`` names (``c++`` when unset, or when it is tools/setup/pch_cxx.py itself)."""
    cxx = os.environ.get('CXX', '').strip()
    return cxx if cxx and Path(cxx).resolve() != PCH_CXX else 'c++'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--cuda-archs',
        default=os.environ.get('PIT_DET_CUDA_ARCHS'),
        help='";"-separated compute capabilities (default: $PIT_DET_CUDA_ARCHS, else the visible GPUs)',
    )
    args = parser.parse_args(argv)
    import torch

    archs = [a for a in args.cuda_archs.replace(',', ';').split(';') if a] if args.cuda_archs else visible_archs()
    try:
        result = plan(
            f'py{sys.version_info[0]}{sys.version_info[1]}',
            torch.__version__,
            torch.version.cuda,
            archs,
            find_nvcc() if archs else None,
            sysconfig.get_config_var('CFLAGS') or '-O3',
            user_compiler(),
        )
    except VariantError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'MMCV_TAG={shlex.quote(result["tag"])}')
    print('MMCV_BUILD_ENV=(' + ' '.join(shlex.quote(f'{k}={v}') for k, v in result['env'].items()) + ')')
    print(f'MMCV_NOTE={shlex.quote(result["note"])}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
