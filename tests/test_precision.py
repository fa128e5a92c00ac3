"""Precision chosen by the hardware (pit_det/precision.py): a low precision the processor would
emulate is refused before anything runs, naming the CPU, what it lacks and the fp32 command. The
capability is stubbed both ways, so each branch runs on any machine."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tool_modules import load_tool

from pit_det import precision
from pit_det.config import load_config
from pit_det.errors import run_tool
from pit_det.precision import PrecisionError, check_precision, without_low_precision
from pit_det_deploy import hardware
from pit_det_deploy.hardware import CpuInfo, native_dtypes

ROOT = Path(__file__).resolve().parents[1]
ZEN3 = CpuInfo('AMD EPYC 7B13 64-Core Processor', 'AVX2', frozenset(), 2)
ZEN4 = CpuInfo('AMD EPYC 9B14 96-Core Processor', 'AVX512', frozenset({'avx512_bf16'}), 2)
SAPPHIRE_RAPIDS = CpuInfo(
    'Intel(R) Xeon(R) Platinum 8481C', 'AVX512', frozenset({'avx512_bf16', 'amx_bf16', 'avx512_fp16'}), 2
)
GRAVITON3 = CpuInfo('Neoverse-V1', 'SVE256', frozenset({'bf16', 'sve_bf16', 'fp16_arith'}), 2)

ZEN3_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 avx fma avx2 bmi2 sha_ni
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes fphp asimdhp svebf16 bf16 i8mm
"""


def test_avx2_only_cpu_refuses_bf16_naming_cpu_lack_and_fp32_command():
    argv = ['python', 'tools/test.py', 'configs/x.py', 'epoch_6.pth', '--bf16']
    with pytest.raises(PrecisionError) as err:
        check_precision('cpu', ['bf16'], argv, cpu=ZEN3)
    message = str(err.value)
    assert 'AMD EPYC 7B13 64-Core Processor (AVX2)' in message
    assert 'none of avx512_bf16 / amx_bf16' in message
    assert 'In fp32: python tools/test.py configs/x.py epoch_6.pth.' in message
    assert 'PIT_DET_ALLOW_EMULATED=1' in message
    check_precision('cpu', ['fp32'], argv, cpu=ZEN3)  # fp32 is never refused


@pytest.mark.parametrize('cpu', [ZEN4, SAPPHIRE_RAPIDS, GRAVITON3], ids=lambda c: c.model)
def test_cpus_with_native_bf16_run_it(cpu):
    check_precision('cpu', ['fp32', 'bf16'], cpu=cpu)
    assert 'bf16' in native_dtypes('cpu', cpu)


def test_fp16_on_cpu_needs_native_fp16():
    with pytest.raises(PrecisionError, match=r'fp16 on this CPU.*none of avx512_fp16 / amx_fp16 / fp16_arith'):
        check_precision('cpu', ['fp32', 'bf16', 'fp16'], cpu=ZEN4)  # bf16 alone would pass
    check_precision('cpu', ['fp16'], cpu=SAPPHIRE_RAPIDS)
    assert native_dtypes('cpu', ZEN3) == ['fp32']
    assert native_dtypes('cpu', ZEN4) == ['fp32', 'bf16']
    assert native_dtypes('cpu', SAPPHIRE_RAPIDS) == ['fp32', 'bf16', 'fp16']


def test_emulation_runs_when_asked_for(monkeypatch):
    monkeypatch.setenv(precision.ALLOW_EMULATED, '1')
    check_precision('cpu', ['bf16', 'fp16'], cpu=ZEN3)
    monkeypatch.setenv(precision.ALLOW_EMULATED, '0')
    with pytest.raises(PrecisionError):
        check_precision('cpu', ['bf16'], cpu=ZEN3)


def test_gpu_without_bf16_is_refused(monkeypatch):
    """A V100 emulates bf16: torch's is_bf16_supported() says True by default, False with
    including_emulation=False (torch's answer on compute capability 7.0)."""
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a, **k: 'Tesla V100')
    with pytest.raises(PrecisionError, match='Tesla V100 has no bfloat16 support; use fp16'):
        check_precision('cuda', ['bf16'], cpu=ZEN3)
    check_precision('cuda', ['fp32', 'fp16'], cpu=ZEN3)
    assert native_dtypes('cuda') == ['fp32', 'fp16']
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)  # A100, H100
    assert native_dtypes('cuda') == ['fp32', 'bf16', 'fp16']


def test_fp32_command_drops_only_the_low_precision():
    assert (
        without_low_precision(['b.py', 'c.py', '--dtype', 'fp32', 'bf16', '--iters', '2'])
        == 'b.py c.py --dtype fp32 --iters 2'
    )
    assert without_low_precision(['b.py', '--dtype', 'bf16', '--iters', '2']) == 'b.py --iters 2'
    assert without_low_precision(['b.py', '--dtype', 'bf16']) == 'b.py'
    assert without_low_precision(['t.py', 'my config.py', '--amp']) == "t.py 'my config.py'"
    assert without_low_precision(['t.py', 'c.py', '--amp', 'bfloat16', '--work-dir', 'w']) == 't.py c.py --work-dir w'


def test_cpuinfo_flags_are_read_where_torch_has_no_query(monkeypatch, tmp_path):
    """torch < 2.13 has no torch.cpu.get_capabilities: the flags of /proc/cpuinfo decide."""
    monkeypatch.delattr(torch.cpu, 'get_capabilities', raising=False)
    for text, bf16, fp16, int8, family in (
        (ZEN3_CPUINFO, False, False, False, 'family 25 model 1'),  # x86 numbers the processor
        (ARM_CPUINFO, True, True, True, None),
    ):
        path = tmp_path / 'cpuinfo'
        path.write_text(text)
        monkeypatch.setattr(hardware, 'CPUINFO', str(path))
        cpu = hardware.cpu_info()
        assert (cpu.native('bf16'), cpu.native('fp16'), cpu.native('int8'), cpu.family) == (bf16, fp16, int8, family)
    assert cpu.describe() == f'{cpu.model} ({cpu.isa}, native bf16 / fp16, int8 dot products, {cpu.cores} cores)'
    monkeypatch.setattr(hardware, 'CPUINFO', str(tmp_path / 'cpuinfo_zen3'))
    (tmp_path / 'cpuinfo_zen3').write_text(ZEN3_CPUINFO)
    assert hardware.cpu_info().describe() == (
        f'AMD EPYC 7B13 64-Core Processor ({hardware.cpu_info().isa}, no native bf16 or fp16, no int8 dot products, '
        f'{os.cpu_count()} cores, family 25 model 1)'
    )
    assert hardware.cpu_info().isa == torch.backends.cpu.get_cpu_capability()


def test_without_torch_this_machine_is_described_as_torch_describes_it():
    """The deploy tools run without torch: the ISA and features then come from /proc/cpuinfo."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        'from pit_det_deploy.hardware import cpu_info; print(cpu_info().describe())'
    )
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hardware.cpu_info().describe()


def test_this_machine_is_described():
    cpu = hardware.cpu_info()
    assert cpu.isa == torch.backends.cpu.get_cpu_capability() and cpu.model
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, 'get_capabilities') else {}
    if caps:
        assert cpu.native('bf16') == bool(
            caps.get('avx512_bf16') or caps.get('amx_bf16') or caps.get('bf16') or caps.get('sve_bf16')
        )
    assert cpu.describe().startswith(f'{cpu.model} ({cpu.isa}, ')


@pytest.mark.parametrize(
    'tool, args',
    [
        ('tools/test.py', ['configs/toy/deformable_detr_pit_s_toy.py', 'ckpt.pth', '--bf16', '--work-dir', 'work']),
        ('tools/quickstart.py', ['--bf16', '--work-dir', 'work', '--data-root', 'data']),
        ('tools/analysis/benchmark.py', ['configs/deformable_detr_pit_s.py', '--bf16', '--out', 'work/bench.json']),
    ],
)
def test_tools_refuse_emulated_bf16_before_doing_anything(tool, args, monkeypatch, capsys, tmp_path):
    """Each tool's low-precision flag on an AVX2-only CPU: exit 1, the message, nothing written."""
    monkeypatch.setattr(hardware, 'cpu_info', lambda: ZEN3)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.delenv(precision.ALLOW_EMULATED, raising=False)
    args = [
        str(ROOT / a)
        if a.startswith('configs')
        else str(tmp_path / a)
        if a in ('work', 'data') or a.startswith('work/')
        else a
        for a in args
    ]
    monkeypatch.setattr(sys, 'argv', [tool, *args])
    assert run_tool(load_tool(tool).main) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: bf16 on this CPU, AMD EPYC 7B13 64-Core Processor (AVX2), would be emulated')
    fp32 = err.split('In fp32: ')[1].split('. To run it anyway')[0]
    assert fp32.endswith(' '.join(a for a in [tool, *args] if a != '--bf16'))
    assert list(tmp_path.iterdir()) == []  # no work dir, no data: refused before anything ran


def test_training_with_amp_on_cpu_is_refused_with_the_fp32_command(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    config = str(ROOT / 'configs/toy/deformable_detr_pit_s_toy.py')
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', config, '--amp', '--work-dir', str(tmp_path / 'work')])
    assert run_tool(load_tool('tools/train.py').main) == 1
    err = capsys.readouterr().err
    assert 'AmpOptimWrapper trains in mixed precision on GPUs only' in err
    assert err.rstrip().endswith(f'train in fp32: tools/train.py {config} --work-dir {tmp_path / "work"}')
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('amp, dtype', [(['--amp'], None), (['--amp', 'bfloat16'], 'bfloat16')])
def test_training_with_amp_on_a_gpu_builds_mmengines_amp_wrapper_in_the_dtype_asked(monkeypatch, tmp_path, amp, dtype):
    """tools/train.py --amp [DTYPE] (a visible GPU faked): mmengine's AmpOptimWrapper with dynamic loss
    scaling, in float16 (mmengine's default) or bfloat16, with the config's optimizer and clipping."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    config = str(ROOT / 'configs/toy/deformable_detr_pit_s_toy.py')
    train = load_tool('tools/train.py')
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', config, *amp, '--work-dir', str(tmp_path / 'work')])
    wrapper = train.build_config(train.parse_args()).optim_wrapper
    assert (wrapper.type, wrapper.loss_scale, wrapper.get('dtype')) == ('AmpOptimWrapper', 'dynamic', dtype)
    configured = load_config(config).optim_wrapper
    assert (wrapper.optimizer, wrapper.clip_grad) == (configured.optimizer, configured.clip_grad)
