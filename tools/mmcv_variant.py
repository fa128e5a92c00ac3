"""Which mmcv ops variant `tools/setup_env.sh` builds on this machine, and the cache key of its wheel.

mmcv 2.1.0 ships no wheel for torch 2.13, so the set-up compiles it. A machine whose torch sees a
CUDA GPU needs the CUDA ops (without them mmcv's deformable attention cannot run on the GPU),
compiled for the visible GPUs' architectures only: a build for every architecture takes hours. A Slurm login node without GPU can ask for the compute nodes'
architectures with ``PIT_DET_CUDA_ARCHS="8.0;9.0"``.

Run by the set-up inside the new venv (after torch is installed); prints bash assignments to eval:

    MMCV_TAG=py311-torch2.13.0-cuda9.0     # or py311-torch2.13.0-cpu
    MMCV_BUILD_ENV=(MMCV_WITH_OPS=1 FORCE_CUDA=1 'TORCH_CUDA_ARCH_LIST=8.0;9.0' CUDA_HOME=/usr/local/cuda)

Exit code 2 with a message naming the fix when a CUDA build is needed but nvcc is missing.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from typing import Optional, Sequence


class VariantError(RuntimeError):
    pass


def find_nvcc() -> Optional[str]:
    """nvcc as torch's cpp_extension finds it: $CUDA_HOME/bin, then PATH, then /usr/local/cuda."""
    for home in (os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH')):
        if home and os.path.isfile(os.path.join(home, 'bin', 'nvcc')):
            return os.path.join(home, 'bin', 'nvcc')
    found = shutil.which('nvcc')
    if found:
        return found
    default = '/usr/local/cuda/bin/nvcc'
    return default if os.path.isfile(default) else None


def plan(python_tag: str, torch_version: str, torch_cuda: Optional[str], cuda_archs: Sequence[str],
         nvcc: Optional[str]) -> dict:
    """The build of mmcv's ops for these inputs.

    Args:
        python_tag: e.g. ``'py311'``.
        torch_version: ``torch.__version__``.
        torch_cuda: ``torch.version.cuda`` (None for a CPU-only torch).
        cuda_archs: compute capabilities to build for, e.g. ``['9.0']``; empty for a CPU build.
        nvcc: path of the CUDA compiler, or None.

    Returns:
        ``{'tag': cache key of the wheel, 'env': build environment}``.
    """
    archs = sorted(set(cuda_archs), key=lambda a: tuple(int(x) for x in a.split('.')))
    tag = f"{python_tag}-torch{torch_version.replace('+', '_')}"
    env = {'MMCV_WITH_OPS': '1'}
    if not archs:
        return {'tag': f'{tag}-cpu', 'env': env}
    if torch_cuda is None:
        raise VariantError(
            f'CUDA architectures {";".join(archs)} were asked for, but torch {torch_version} is a '
            'CPU-only build. Install the registry torch (tools/constraints.txt), or unset PIT_DET_CUDA_ARCHS.')
    if nvcc is None:
        raise VariantError(
            f'torch sees CUDA GPUs (compute capability {";".join(archs)}), and mmcv needs its CUDA ops for '
            f'them, but nvcc was not found (CUDA_HOME, PATH, /usr/local/cuda). Install the CUDA {torch_cuda} '
            'toolkit and set CUDA_HOME, then run the set-up again; or hide the GPUs '
            '(CUDA_VISIBLE_DEVICES= make ...) to build and run on CPU only.')
    env.update(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST=';'.join(archs), CUDA_HOME=os.path.dirname(os.path.dirname(nvcc)))
    return {'tag': f'{tag}-cuda{"_".join(archs)}', 'env': env}


def visible_archs() -> list:
    import torch
    if not torch.cuda.is_available():
        return []
    return ['%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cuda-archs', default=os.environ.get('PIT_DET_CUDA_ARCHS'),
                        help='";"-separated compute capabilities (default: $PIT_DET_CUDA_ARCHS, else the visible GPUs)')
    args = parser.parse_args(argv)
    import torch
    archs = [a for a in args.cuda_archs.replace(',', ';').split(';') if a] if args.cuda_archs else visible_archs()
    try:
        result = plan(f'py{sys.version_info[0]}{sys.version_info[1]}', torch.__version__, torch.version.cuda,
                      archs, find_nvcc() if archs else None)
    except VariantError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f"MMCV_TAG={shlex.quote(result['tag'])}")
    print('MMCV_BUILD_ENV=(' + ' '.join(shlex.quote(f'{k}={v}') for k, v in result['env'].items()) + ')')
    return 0


if __name__ == '__main__':
    sys.exit(main())
