"""Which precisions the hardware runs well, decided from what torch reports of it.

bf16 and fp16 autocast on a CPU without native instructions for them are emulated, and the
detector then runs tens to hundreds of times slower than in fp32 (a user's AMD EPYC Zen 3, AVX2
only, reported a 2048^3 matmul at 112 GFLOP/s in fp32 and 0.3 GFLOP/s in bf16). So a low precision the processor
lacks is refused, naming the processor, what it lacks and the fp32 command, instead of running
slowly without a word. ``PIT_DET_ALLOW_EMULATED=1`` runs it anyway (for numerics, not speed).

Native means:
    bf16 on x86: ``avx512_bf16`` or ``amx_bf16``; on Arm: ``bf16`` or ``sve_bf16``.
    fp16 on x86: ``avx512_fp16`` or ``amx_fp16``; on Arm: ``fp16_arith``.
    int8 (dot products, what makes an INT8 model fast): on x86 ``avx512_vnni``, ``avx_vnni`` or
    ``amx_int8``; on Arm ``i8mm`` or ``asimddp``.
    On CUDA: ``torch.cuda.is_bf16_supported()`` for bf16; fp16 always.

The features come from ``torch.cpu.get_capabilities()`` (torch >= 2.13), else from the flags of
``/proc/cpuinfo`` (the same names, as Linux spells them).
"""

from __future__ import annotations

import os
import platform
import shlex
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from .errors import PitDetError

NATIVE = {
    'bf16': ('avx512_bf16', 'amx_bf16', 'bf16', 'sve_bf16'),
    'fp16': ('avx512_fp16', 'amx_fp16', 'fp16_arith'),
    'int8': ('avx512_vnni', 'avx_vnni', 'amx_int8', 'i8mm', 'asimddp'),
}
# Linux's /proc/cpuinfo names where they differ from torch's (Arm's 'fphp' is fp16 arithmetic).
_LINUX_NAMES = {'fphp': 'fp16_arith', 'svebf16': 'sve_bf16'}
ALLOW_EMULATED = 'PIT_DET_ALLOW_EMULATED'
CPUINFO = '/proc/cpuinfo'


class PrecisionError(PitDetError):
    """A precision the device cannot run natively; the message names the device and the fix."""


@dataclass(frozen=True)
class CpuInfo:
    """What a CPU figure means nothing without.

    Args:
        model: the processor's name, e.g. ``'AMD EPYC 7B13'``.
        isa: the vector instruction set torch's kernels use (``get_cpu_capability()``: ``'AVX2'``,
            ``'AVX512'``, ...).
        features: the precision-related features the CPU has (names as in ``NATIVE``).
        cores: logical cores.
    """

    model: str
    isa: str
    features: frozenset = field(default_factory=frozenset)
    cores: int = 1

    def native(self, dtype: str) -> bool:
        return dtype == 'fp32' or any(f in self.features for f in NATIVE[dtype])

    def int8_note(self) -> str:
        """What an INT8 model can expect here, in one sentence."""
        if self.native('int8'):
            found = ', '.join(sorted(f for f in self.features if f in NATIVE['int8']))
            return f'{self.model} has int8 dot products ({found}): INT8 matmuls run natively.'
        return (
            f'{self.model} ({self.isa}) has no int8 dot-product instructions (VNNI, AMX, i8mm): INT8 '
            'matmuls are emulated, and an INT8 model may be no faster than fp32 here.'
        )

    def describe(self) -> str:
        """``'AMD EPYC 7B13 (AVX2, no native bf16, 2 cores)'``."""
        native = [d for d in ('bf16', 'fp16') if self.native(d)]
        low = 'native ' + ' / '.join(native) if native else 'no native bf16 or fp16'
        return f'{self.model} ({self.isa}, {low}, {self.cores} cores)'


def _read_cpuinfo() -> Tuple[Optional[str], Dict[str, bool]]:
    """The model name and the feature flags of ``/proc/cpuinfo`` (flags under torch's names)."""
    model, flags = None, {}
    try:
        with open(CPUINFO) as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() in ('flags', 'Features'):
                    flags.update({_LINUX_NAMES.get(flag, flag): True for flag in value.split()})
                elif key.strip() == 'model name' and model is None:
                    model = value.strip()  # the full name ('AMD EPYC 7B13 64-Core Processor')
    except OSError:
        pass
    return model, flags


def cpu_info() -> CpuInfo:
    model, flags = _read_cpuinfo()
    # torch's view of the features where it has the query (torch >= 2.13), else Linux's flags.
    get_capabilities = getattr(torch.cpu, 'get_capabilities', None)
    caps = dict(get_capabilities()) if get_capabilities is not None else flags
    features = frozenset(name for names in NATIVE.values() for name in names if caps.get(name))
    model = model or str(caps.get('cpu_name') or platform.processor() or platform.machine())
    return CpuInfo(
        model=model, isa=torch.backends.cpu.get_cpu_capability(), features=features, cores=os.cpu_count() or 1
    )


def default_device() -> str:
    """'cuda' where torch sees a GPU, else 'cpu': where the tools run by default."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def device_name(device: str) -> str:
    """The processor or GPU a figure was measured on, in words."""
    if device.startswith('cuda'):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_info().describe()


def native_dtypes(device: str, cpu: Optional[CpuInfo] = None) -> List[str]:
    """The precisions ``device`` runs natively, fp32 first."""
    if device.startswith('cuda'):
        return ['fp32', *(['bf16'] if torch.cuda.is_bf16_supported() else []), 'fp16']
    cpu = cpu or cpu_info()
    return [d for d in ('fp32', 'bf16', 'fp16') if cpu.native(d)]


def without_low_precision(argv: Sequence[str]) -> str:
    """The command line ``argv`` in fp32: ``--bf16`` / ``--fp16`` / ``--amp`` and low-precision
    ``--dtype`` values dropped."""
    out = [a for a in argv if a not in ('--bf16', '--fp16', '--amp', 'bf16', 'fp16')]
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
    cpu = cpu or (None if device.startswith('cuda') else cpu_info())
    missing = [d for d in dtypes if d not in native_dtypes(device, cpu)]
    if not missing:
        return
    if device.startswith('cuda'):  # only bf16 can be missing on a GPU
        raise PrecisionError(f'bf16: {torch.cuda.get_device_name()} has no bfloat16 support; use fp16')
    if os.environ.get(ALLOW_EMULATED) == '1':
        return
    names = ' / '.join(missing)
    lacks = ', '.join(f'{d}: none of {" / ".join(NATIVE[d])}' for d in missing)
    fp32 = f' In fp32: {without_low_precision(argv)}.' if argv else ' Run in fp32 (drop the flag).'
    raise PrecisionError(
        f'{names} on this CPU, {cpu.model} ({cpu.isa}), would be emulated: it has no native {names} '
        f'instructions ({lacks}), and emulated {names} runs tens to hundreds of times slower than fp32 '
        f'(compare: python tools/benchmark_latency.py CONFIG --dtype fp32 {missing[0]}).{fp32} '
        f'To run it anyway, for numerics rather than speed: {ALLOW_EMULATED}=1.'
    )
