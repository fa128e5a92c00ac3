"""The set-up's branches that a CPU machine does not take: which mmcv variant is built (CPU, or CUDA
for the visible GPUs' architectures), the build command, and the install check's CUDA test."""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tool_modules import load_tool

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    return load_tool(f'tools/setup/{name}.py')


variant = _tool('mmcv_variant')


def test_cpu_variant():
    plan = variant.plan('py311', '2.13.0', '13.0', [], None)
    assert plan == {
        'tag': 'py311-torch2.13.0-cpu',
        'note': '',
        'env': {
            'MMCV_WITH_OPS': '1',
            'CFLAGS': '-O3 -g0',
            'CXXFLAGS': '-O3 -g0',
            'CXX': str(ROOT / 'tools' / 'setup' / 'pch_cxx.py'),
            'PIT_DET_CXX': 'c++',
        },
    }


def test_cuda_variant_builds_for_the_visible_architectures_only(tmp_path):
    nvcc = tmp_path / 'cuda' / 'bin' / 'nvcc'
    plan = variant.plan('py311', '2.13.0+cu130', '13.0', ['9.0', '8.0', '9.0'], str(nvcc))
    assert plan['tag'] == 'py311-torch2.13.0_cu130-cuda8.0_9.0'
    assert plan['env'] == {
        'MMCV_WITH_OPS': '1',
        'CFLAGS': '-O3 -g0',
        'CXXFLAGS': '-O3 -g0',
        'CXX': str(ROOT / 'tools' / 'setup' / 'pch_cxx.py'),
        'PIT_DET_CXX': 'c++',
        'FORCE_CUDA': '1',
        'TORCH_CUDA_ARCH_LIST': '8.0;9.0',
        'CUDA_HOME': str(tmp_path / 'cuda'),
    }


def test_cuda_without_nvcc_builds_cpu_ops_and_runs_triton():
    plan = variant.plan('py311', '2.13.0', '13.0', ['9.0'], None)
    assert plan['tag'] == 'py311-torch2.13.0-cpu'  # the same wheel as a CPU machine's
    assert plan['env']['CUDA_VISIBLE_DEVICES'] == '' and 'FORCE_CUDA' not in plan['env']
    assert "mmcv's CPU ops only; on the GPU deformable attention runs in pit-det's Triton kernel" in plan['note']
    assert 'install the CUDA 13.0 toolkit, set CUDA_HOME' in plan['note']


def test_no_debug_info_keeps_pythons_other_flags():
    assert (
        variant.no_debug_info('-Wsign-compare -DNDEBUG -g -fwrapv -O3 -Wall')
        == '-Wsign-compare -DNDEBUG -fwrapv -O3 -Wall -g0'
    )
    assert variant.no_debug_info('-O2 -ggdb3') == '-O2 -g0'


def test_cpu_torch_asked_for_gpus_names_the_fix():
    with pytest.raises(variant.VariantError, match='CPU-only build'):
        variant.plan('py311', '2.13.0+cpu', None, ['9.0'], '/usr/bin/nvcc')


def test_setup_dry_run_prints_the_cuda_build(tmp_path):
    """tools/setup/setup_env.sh in dry-run mode against this venv, asked for Hopper GPUs with a stand-in nvcc."""
    nvcc = tmp_path / 'cuda' / 'bin' / 'nvcc'
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text('#!/bin/sh\nexit 0\n')
    nvcc.chmod(0o755)
    env = dict(
        os.environ,
        PIT_DET_VENV=sys.prefix,
        PIT_DET_SETUP_DRY_RUN='1',
        PIT_DET_CUDA_ARCHS='9.0',
        CUDA_HOME=str(nvcc.parents[1]),
        PIT_DET_CACHE=str(tmp_path / 'cache'),
    )
    proc = subprocess.run(['bash', 'tools/setup/setup_env.sh'], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tag = f'py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.replace("+", "_")}-cuda9.0'
    assert f'mmcv variant {tag}, wheel cache {tmp_path}/cache/wheels/{tag}' in proc.stdout
    command = proc.stdout.split('build command:')[1]
    for part in (
        'MMCV_WITH_OPS=1',
        'FORCE_CUDA=1',
        'TORCH_CUDA_ARCH_LIST=9.0',
        f'CUDA_HOME={nvcc.parents[1]}',
        f'-c {ROOT}/tools/setup/constraints.txt',
        '--no-build-isolation',
        '--no-cache-dir',
        'mmcv==2.1.0',
    ):
        assert part in command, part
    assert not (tmp_path / 'cache').exists()  # a dry run builds and writes nothing


def test_verify_install_uses_triton_where_mmcv_has_no_cuda_ops(monkeypatch, mm_log):
    """A GPU with mmcv's CPU ops only (the no-nvcc set-up): the install check runs deformable
    attention in the Triton kernel and compares it with the CPU result. The branch runs here on CPU
    tensors under Triton's interpreter; a wrong expected result fails it. (``mm_log`` makes mmengine's
    logger before CUDA is faked: its constructor asks the faked CUDA for a device id.)"""
    verify_install = _tool('verify_install')
    import mmcv.ops
    from mmcv.ops import MultiScaleDeformableAttention

    from pit_det.ops import mmcv_cuda, resolve

    monkeypatch.setenv('TRITON_INTERPRET', '1')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: 'NVIDIA H200')
    monkeypatch.setattr(mmcv.ops, 'get_compiling_cuda_version', lambda: 'not available')
    mmcv_cuda.mmcv_has_cuda_ops.cache_clear()
    resolve.cache_clear()
    try:
        attn = MultiScaleDeformableAttention(
            embed_dims=16, num_heads=2, num_levels=2, num_points=2, batch_first=True
        ).eval()
        shapes = torch.tensor([[6, 8], [3, 4]])
        inputs = dict(
            query=torch.randn(1, 5, 16),
            value=torch.randn(1, 60, 16),
            reference_points=torch.rand(1, 5, 2, 2),
            spatial_shapes=shapes,
            level_start_index=torch.tensor([0, 48]),
        )
        expected = attn(**inputs)
        said = verify_install.check_cuda_ops(attn, inputs, expected, device='cpu')
        assert said.startswith('Triton kernel equal to CPU on NVIDIA H200 (mmcv has no CUDA ops')
        assert "deformable attention: msda_impl 'fast' runs the 'triton' kernel on cuda" in mm_log
        with pytest.raises(AssertionError):
            verify_install.check_cuda_ops(attn, inputs, expected + 1e-3, device='cpu')
    finally:
        mmcv_cuda.mmcv_has_cuda_ops.cache_clear()
        resolve.cache_clear()


def test_setup_dry_run_without_nvcc_builds_cpu_ops_for_triton(tmp_path):
    """A GPU machine without nvcc (asked for Hopper GPUs; PIT_DET_NVCC=none hides any toolkit this
    machine has): the set-up says it builds mmcv's CPU ops with the GPUs hidden and that Triton runs
    deformable attention."""
    env = {k: v for k, v in os.environ.items() if k not in ('CUDA_HOME', 'CUDA_PATH')}
    env.update(
        PIT_DET_VENV=sys.prefix,
        PIT_DET_SETUP_DRY_RUN='1',
        PIT_DET_CUDA_ARCHS='9.0',
        PIT_DET_CACHE=str(tmp_path / 'cache'),
        PIT_DET_NVCC='none',
    )
    proc = subprocess.run(['bash', 'tools/setup/setup_env.sh'], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "building mmcv's CPU ops only; on the GPU deformable attention runs in pit-det's Triton kernel" in proc.stdout
    )
    command = proc.stdout.split('build command:')[1]
    assert 'CUDA_VISIBLE_DEVICES= ' in command and 'FORCE_CUDA' not in command and 'MMCV_WITH_OPS=1' in command
    assert '-cpu, wheel cache' in proc.stdout


def test_a_new_mmcv_variant_is_built_where_the_set_up_was_complete(tmp_path):
    """A venv set up with mmcv's CPU ops, then nvcc installed (a stand-in here, asked for Hopper GPUs):
    the set-up run again builds or reuses the CUDA variant instead of saying "up to date" (the stamp
    holds the installed variant beside the set-up files' hash); with the same variant it is up to date."""
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    (venv / 'bin' / 'python').write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv / 'bin' / 'python').chmod(0o755)
    files = ['setup_env.sh', 'constraints.txt', 'mmcv_variant.py']
    digest = hashlib.sha256(
        b''.join((ROOT / 'tools/setup' / f).read_bytes() for f in files) + (ROOT / 'pyproject.toml').read_bytes()
    ).hexdigest()
    cpu_tag = f'py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.replace("+", "_")}-cpu'
    (venv / '.pit-det-stamp').write_text(f'{digest} {cpu_tag}\n')
    nvcc = tmp_path / 'cuda' / 'bin' / 'nvcc'
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text('#!/bin/sh\nexit 0\n')
    nvcc.chmod(0o755)
    env = dict(os.environ, PIT_DET_VENV=str(venv), PIT_DET_SETUP_DRY_RUN='1', PIT_DET_CACHE=str(tmp_path / 'cache'))
    env.update(PIT_DET_CUDA_ARCHS='9.0', CUDA_HOME=str(nvcc.parents[1]))

    def setup(**extra):
        proc = subprocess.run(
            ['bash', 'tools/setup/setup_env.sh'], cwd=ROOT, env=dict(env, **extra), capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    out = setup()
    assert (
        f'this machine now needs mmcv {cpu_tag[:-3]}cuda9.0 (installed: {cpu_tag})' in out and 'up to date' not in out
    )
    assert f'dry run: environment {venv} is up to date (mmcv {cpu_tag})' in setup(PIT_DET_NVCC='none')


pch_cxx = _tool('pch_cxx')
# A ninja compile line of mmcv's build as torch's BuildExtension writes it (mmcv-build.log; "-c" twice).
NINJA_LINE = (
    '-MMD -MF {obj}.d -O2 -g0 -fPIC -I{inc} -c -c {src} -o {obj} -std=c++17 '
    '-DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_ext'
)


def test_precompiled_header_compiles_the_same_object(tmp_path):
    """tools/setup/pch_cxx.py (mmcv's CXX): a file whose first include is pytorch_cpp_helper.hpp is
    compiled against the header precompiled once for its flags, into the same object file as the
    plain compiler's; a file that includes something else first is compiled as it is."""
    inc = tmp_path / 'common'
    inc.mkdir()
    (inc / 'pytorch_cpp_helper.hpp').write_text(
        '#ifndef PYTORCH_CPP_HELPER\n#define PYTORCH_CPP_HELPER\n#include <vector>\n#include <map>\n'
        'inline int helper(int x) { return x * 3; }\n#endif\n'
    )
    (tmp_path / 'op.cpp').write_text('#include "pytorch_cpp_helper.hpp"\nint op(int x) { return helper(x) + 1; }\n')
    (tmp_path / 'other.cpp').write_text(
        '#include <vector>\n#include "pytorch_cpp_helper.hpp"\nint other() { return 2; }\n'
    )
    env = dict(os.environ, PIT_DET_PCH_DIR=str(tmp_path / 'pch'))
    for name in ('op', 'other'):
        objects = {}
        for cxx in ('c++', str(ROOT / 'tools' / 'setup' / 'pch_cxx.py')):
            obj = tmp_path / f'{name}.{len(objects)}.o'
            line = NINJA_LINE.format(obj=obj, inc=inc, src=tmp_path / f'{name}.cpp').split()
            proc = subprocess.run([cxx, *line], env=env, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            objects[cxx] = obj.read_bytes()
        assert len(set(objects.values())) == 1, name
        gch = list((tmp_path / 'pch').glob('*/pytorch_cpp_helper.hpp.gch'))
        assert len(gch) == 1 and gch[0].stat().st_size > 0
    # 'other' added no second precompiled header: its flags are op's, and it was compiled as it is.
    assert len(list((tmp_path / 'pch').iterdir())) == 1
    # Without a folder for this build, no precompiled header: the plain compile.
    bare = {k: v for k, v in env.items() if k != 'PIT_DET_PCH_DIR'}
    line = NINJA_LINE.format(obj=tmp_path / 'bare.o', inc=inc, src=tmp_path / 'op.cpp').split()
    proc = subprocess.run(
        [str(ROOT / 'tools' / 'setup' / 'pch_cxx.py'), *line, '-H'], env=bare, capture_output=True, text=True
    )
    assert proc.returncode == 0 and '.gch' not in proc.stderr, proc.stderr
    # GCC's -H lists the headers a compile reads: '!' marks a precompiled one that it used.
    line = NINJA_LINE.format(obj=tmp_path / 'h.o', inc=inc, src=tmp_path / 'op.cpp').split()
    proc = subprocess.run(
        [str(ROOT / 'tools' / 'setup' / 'pch_cxx.py'), *line, '-H'], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and re.search(r'^! .*pytorch_cpp_helper\.hpp\.gch$', proc.stderr, re.M), proc.stderr


def test_the_users_compiler_is_the_one_that_runs(monkeypatch):
    monkeypatch.setenv('CXX', 'g++-12')
    assert variant.user_compiler() == 'g++-12'
    monkeypatch.setenv('CXX', str(ROOT / 'tools' / 'setup' / 'pch_cxx.py'))  # never itself
    assert variant.user_compiler() == 'c++'
    monkeypatch.delenv('CXX')
    assert variant.user_compiler() == 'c++'
    assert variant.plan('py311', '2.13.0', '13.0', [], None, compiler='clang++')['env']['PIT_DET_CXX'] == 'clang++'


def test_precompiled_header_is_only_for_one_source_compiles():
    line = NINJA_LINE.format(obj='/b/op.o', inc='/s/common', src='/s/op.cpp').split()
    flags, source = pch_cxx.split(line)
    assert str(source) == '/s/op.cpp' and '-c' not in flags and '/b/op.o' not in flags and '/b/op.o.d' not in flags
    assert flags == [
        '-O2',
        '-g0',
        '-fPIC',
        '-I/s/common',
        '-std=c++17',
        '-DTORCH_API_INCLUDE_EXTENSION_H',
        '-DTORCH_EXTENSION_NAME=_ext',
    ]
    assert pch_cxx.split(['-shared', '/b/op.o', '-o', '/b/_ext.so']) is None  # the link
    assert pch_cxx.split(['-v']) is None
