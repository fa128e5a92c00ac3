"""Which precisions a tool may run: those the hardware runs natively (:mod:`pit_det_deploy.hardware`).

bf16 and fp16 autocast on a CPU without native instructions for them are emulated, and the
detector then runs tens to hundreds of times slower than in fp32 (an AMD EPYC Zen 3, AVX2 only,
ran a 2048^3 matmul at 112 GFLOP/s in fp32 and 0.3 GFLOP/s in bf16). So a low precision the
processor lacks is refused, naming the processor, what it lacks and the fp32 command, instead of running
slowly without a word. ``PIT_DET_ALLOW_EMULATED=1`` runs it anyway (for numerics, not speed).

What counts as native is :mod:`pit_det_deploy.hardware`'s to say.
"""

from __future__ import annotations

import copy
import os
import shlex
from typing import Iterable, Optional, Sequence

from pit_det_deploy import hardware
from pit_det_deploy.hardware import NATIVE, CpuInfo

from .errors import PitDetError

ALLOW_EMULATED = 'PIT_DET_ALLOW_EMULATED'


class PrecisionError(PitDetError):
    """A precision the device cannot run natively; the message names the device and the fix."""


def without_low_precision(argv: Sequence[str]) -> str:
    """The command line ``argv`` in fp32: ``--bf16`` / ``--fp16`` / ``--amp`` (with its dtype) and
    low-precision ``--dtype`` values dropped."""
    out = [a for a in argv if a not in ('--bf16', '--fp16', '--amp', 'bf16', 'fp16', 'float16', 'bfloat16')]
    # A --dtype whose values were all low precision goes too.
    out = [a for i, a in enumerate(out) if a != '--dtype' or (i + 1 < len(out) and not out[i + 1].startswith('-'))]
    return ' '.join(shlex.quote(a) for a in out)


def check_precision(
    device: str, dtypes: Iterable[str], argv: Optional[Sequence[str]] = None, cpu: Optional[CpuInfo] = None
) -> None:
    """Raise ``PrecisionError`` when a precision in ``dtypes`` would be emulated on ``device``.

    Args:
        device: ``'cpu'`` or ``'cuda[:N]'``.
        dtypes: e.g. ``['fp32', 'bf16']``.
        argv: the command line, to print its fp32 form in the message (``['python', 'tools/x.py', ...]``).
        cpu: the CPU to decide for (default: this one); tests pass a stand-in.
    """
    cpu = cpu or (None if device.startswith('cuda') else hardware.cpu_info())
    missing = [d for d in dtypes if d not in hardware.native_dtypes(device, cpu)]
    if not missing:
        return
    if device.startswith('cuda'):  # only bf16 can be missing on a GPU
        raise PrecisionError(f'bf16: {hardware.device_name(device)} has no bfloat16 support; use fp16')
    if os.environ.get(ALLOW_EMULATED) == '1':
        return
    names = ' / '.join(missing)
    lacks = ', '.join(f'{d}: none of {" / ".join(NATIVE[d])}' for d in missing)
    fp32 = f' In fp32: {without_low_precision(argv)}.' if argv else ' Run in fp32 (drop the flag).'
    raise PrecisionError(
        f'{names} on this CPU, {cpu.model} ({cpu.isa}), would be emulated: it has no native {names} '
        f'instructions ({lacks}), and emulated {names} runs tens to hundreds of times slower than fp32 '
        f'(compare: python tools/analysis/benchmark.py CONFIG --dtype fp32 {missing[0]}).{fp32} '
        f'To run it anyway, for numerics rather than speed: {ALLOW_EMULATED}=1.'
    )


def amp_optim_wrapper(optim_wrapper: dict, dtype: Optional[str] = None) -> dict:
    """A config's ``optim_wrapper`` as mmengine's ``AmpOptimWrapper`` with dynamic loss scaling: what
    ``tools/train.py --amp [DTYPE]`` trains with, and the benchmark's low-precision training rows on a
    GPU (:func:`pit_det.benchmark.training.optim_wrapper_for`). mmengine 0.10.7's wrapper asserts a
    GPU; on CPU the benchmark autocasts itself.

    Args:
        optim_wrapper: the config's ``optim_wrapper``; not changed.
        dtype: the autocast dtype, 'float16' or 'bfloat16'; None leaves mmengine's default (float16).

    Returns:
        dict: a copy, with the optimizer, clipping and the rest as configured.
    """
    amp = copy.deepcopy(optim_wrapper)
    amp.update(type='AmpOptimWrapper', loss_scale='dynamic')
    if dtype is not None:
        amp.update(dtype=dtype)
    return amp
