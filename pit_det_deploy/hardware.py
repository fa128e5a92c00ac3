"""The hardware a figure was measured on, and the precisions it runs natively.

Every timing pit-det prints or stores names its processor (:meth:`CpuInfo.describe`,
:func:`device_name`), and the precision policy (:mod:`pit_det.precision`) refuses what a processor
would emulate. This module needs no torch: the deploy tools run without it; where torch is
installed, its view of the CPU is used.

Native means:
    bf16 on x86: ``avx512_bf16`` or ``amx_bf16``; on Arm: ``bf16`` or ``sve_bf16``.
    fp16 on x86: ``avx512_fp16`` or ``amx_fp16``; on Arm: ``fp16_arith``.
    int8 (dot products, what makes an INT8 model fast): on x86 ``avx512_vnni``, ``avx_vnni`` or
    ``amx_int8``; on Arm ``i8mm`` or ``asimddp``.
    On CUDA: bf16 where ``torch.cuda.is_bf16_supported(including_emulation=False)`` (compute capability
    8.0 on; V100 and T4 emulate it); fp16 always.

The features come from ``torch.cpu.get_capabilities()`` (torch >= 2.13), else from the flags of
``/proc/cpuinfo`` (the same names, as Linux spells them).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

NATIVE = {
    'bf16': ('avx512_bf16', 'amx_bf16', 'bf16', 'sve_bf16'),
    'fp16': ('avx512_fp16', 'amx_fp16', 'fp16_arith'),
    'int8': ('avx512_vnni', 'avx_vnni', 'amx_int8', 'i8mm', 'asimddp'),
}
# Linux's /proc/cpuinfo names where they differ from torch's (Arm's 'fphp' is fp16 arithmetic).
_LINUX_NAMES = {'fphp': 'fp16_arith', 'svebf16': 'sve_bf16'}
CPUINFO = '/proc/cpuinfo'


@dataclass(frozen=True)
class CpuInfo:
    """What a CPU figure means nothing without.

    Args:
        model: the processor's name, e.g. ``'AMD EPYC 7B13'``.
        isa: the vector instruction set torch's kernels use (``get_cpu_capability()``: ``'AVX2'``,
            ``'AVX512'``, ...).
        features: the precision-related features the CPU has (names as in ``NATIVE``).
        cores: logical cores.
        family: x86's family and model numbers, e.g. ``'family 25 model 17'`` (AMD Zen 4): what
            names the processor where a virtual machine shows a generic model name ('AMD EPYC').
    """

    model: str
    isa: str
    features: frozenset = field(default_factory=frozenset)
    cores: int = 1
    family: Optional[str] = None

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
        """``'AMD EPYC (AVX512, native bf16, int8 dot products, 2 cores, family 25 model 17)'``."""
        return describe_cpu(self.model, self.isa, {d: self.native(d) for d in NATIVE}, self.cores, self.family)


def describe_cpu(model: str, isa: str, native: Dict[str, bool], cores: int, family: Optional[str] = None) -> str:
    """:meth:`CpuInfo.describe` from its parts, as the benchmark's environment records them
    (:func:`pit_det.benchmark.measure.environment`).

    Args:
        native: whether ``'bf16'``, ``'fp16'`` and ``'int8'`` (dot products) are native.
    """
    low = [d for d in ('bf16', 'fp16') if native[d]]
    low = 'native ' + ' / '.join(low) if low else 'no native bf16 or fp16'
    int8 = 'int8 dot products' if native['int8'] else 'no int8 dot products'
    family = f', {family}' if family else ''  # None where /proc/cpuinfo has no x86 numbers
    return f'{model} ({isa}, {low}, {int8}, {cores} cores{family})'


def read_cpuinfo() -> Tuple[Optional[str], Dict[str, bool], Optional[str]]:
    """The model name, the feature flags (under torch's names) and, on x86, the family and model
    numbers (``'family 25 model 17'``) of ``/proc/cpuinfo``'s first processor."""
    model, flags, numbers = None, {}, {}
    try:
        with open(CPUINFO) as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key in ('flags', 'Features'):
                    flags.update({_LINUX_NAMES.get(flag, flag): True for flag in value.split()})
                elif key == 'model name' and model is None:
                    model = value.strip()  # the full name ('AMD EPYC 7B13 64-Core Processor')
                elif key in ('cpu family', 'model'):
                    numbers.setdefault(key, value.strip())
    except OSError:
        pass
    family = f'family {numbers["cpu family"]} model {numbers["model"]}' if len(numbers) == 2 else None
    return model, flags, family


# The compiler's flags for pit-det's C++ kernels per vector ISA (as torch's get_cpu_capability names
# it): the PyTorch extension (pit_det/ops/extension.py) and the runtime libraries (.fused).
ISA_COMPILE_FLAGS = {'AVX512': ['-march=x86-64-v4'], 'AVX2': ['-march=x86-64-v3']}


def isa_from_flags(flags: Dict[str, bool]) -> str:
    """torch's ``get_cpu_capability()`` name for an x86 CPU's flags, where torch is not installed."""
    if all(flags.get(f) for f in ('avx512f', 'avx512bw', 'avx512vl', 'avx512dq')):
        return 'AVX512'
    return 'AVX2' if flags.get('avx2') and flags.get('fma') else 'DEFAULT'


def cpu_info() -> CpuInfo:
    """This CPU, as torch sees it where torch is installed (the deploy runtime may lack it)."""
    model, flags, family = read_cpuinfo()
    try:
        import torch
    except ImportError:
        torch = None
    # torch's view of the features where it has the query (torch >= 2.13), else Linux's flags.
    get_capabilities = getattr(getattr(torch, 'cpu', None), 'get_capabilities', None)
    caps = dict(get_capabilities()) if get_capabilities is not None else flags
    features = frozenset(name for names in NATIVE.values() for name in names if caps.get(name))
    model = model or str(caps.get('cpu_name') or platform.processor() or platform.machine())
    isa = torch.backends.cpu.get_cpu_capability() if torch is not None else isa_from_flags(flags)
    return CpuInfo(model=model, isa=isa, features=features, cores=os.cpu_count() or 1, family=family)


def default_device() -> str:
    """'cuda' where torch sees a GPU, else 'cpu': where the tools run by default."""
    import torch

    return 'cuda' if torch.cuda.is_available() else 'cpu'


def device_name(device: str) -> str:
    """The processor or GPU a figure was measured on, in words."""
    if device.startswith('cuda'):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return cpu_info().describe()


def _cuda_bf16_native() -> bool:
    """bf16 in the GPU's own arithmetic. torch's default (``including_emulation=True``) also says yes
    where it is emulated (pre-Ampere); an older torch has no such argument."""
    import torch

    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:
        return torch.cuda.is_bf16_supported()


def native_dtypes(device: str, cpu: Optional[CpuInfo] = None) -> List[str]:
    """The precisions ``device`` runs natively, fp32 first."""
    if device.startswith('cuda'):
        return ['fp32', *(['bf16'] if _cuda_bf16_native() else []), 'fp16']
    cpu = cpu or cpu_info()
    return [d for d in ('fp32', 'bf16', 'fp16') if cpu.native(d)]
