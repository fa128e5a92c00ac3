"""The set-up's branches that a CPU machine does not take: which mmcv variant is built (CPU, or CUDA
for the visible GPUs' architectures), the build command, and the self-check's CUDA test."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


variant = _tool('mmcv_variant')


def test_cpu_variant():
    plan = variant.plan('py311', '2.13.0', '13.0', [], None)
    assert plan == {'tag': 'py311-torch2.13.0-cpu', 'env': {'MMCV_WITH_OPS': '1'}}


def test_cuda_variant_builds_for_the_visible_architectures_only(tmp_path):
    nvcc = tmp_path / 'cuda' / 'bin' / 'nvcc'
    plan = variant.plan('py311', '2.13.0+cu130', '13.0', ['9.0', '8.0', '9.0'], str(nvcc))
    assert plan['tag'] == 'py311-torch2.13.0_cu130-cuda8.0_9.0'
    assert plan['env'] == {'MMCV_WITH_OPS': '1', 'FORCE_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': '8.0;9.0',
                           'CUDA_HOME': str(tmp_path / 'cuda')}


def test_cuda_without_nvcc_or_with_cpu_torch_names_the_fix():
    with pytest.raises(variant.VariantError, match=r'nvcc was not found.*CUDA 13.0 toolkit.*CUDA_VISIBLE_DEVICES='):
        variant.plan('py311', '2.13.0', '13.0', ['9.0'], None)
    with pytest.raises(variant.VariantError, match='CPU-only build'):
        variant.plan('py311', '2.13.0+cpu', None, ['9.0'], '/usr/bin/nvcc')


def test_setup_dry_run_prints_the_cuda_build(tmp_path):
    """tools/setup_env.sh in dry-run mode against this venv, asked for Hopper GPUs with a stand-in nvcc."""
    nvcc = tmp_path / 'cuda' / 'bin' / 'nvcc'
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text('#!/bin/sh\nexit 0\n')
    nvcc.chmod(0o755)
    env = dict(os.environ, PIT_DET_VENV=sys.prefix, PIT_DET_SETUP_DRY_RUN='1', PIT_DET_CUDA_ARCHS='9.0',
               CUDA_HOME=str(nvcc.parents[1]), PIT_DET_CACHE=str(tmp_path / 'cache'))
    proc = subprocess.run(['bash', 'tools/setup_env.sh'], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tag = f'py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.replace("+", "_")}-cuda9.0'
    assert f'mmcv variant {tag}, wheel cache {tmp_path}/cache/wheels/{tag}' in proc.stdout
    command = proc.stdout.split('build command:')[1]
    for part in ('MMCV_WITH_OPS=1', 'FORCE_CUDA=1', 'TORCH_CUDA_ARCH_LIST=9.0', f'CUDA_HOME={nvcc.parents[1]}',
                 f'-c {ROOT}/tools/constraints.txt', '--no-build-isolation', '--no-cache-dir', 'mmcv==2.1.0'):
        assert part in command, part
    assert not (tmp_path / 'cache').exists()  # a dry run builds and writes nothing


def test_self_check_refuses_cpu_only_mmcv_with_a_gpu(monkeypatch):
    self_check = _tool('self_check')
    import mmcv.ops
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(mmcv.ops, 'get_compiling_cuda_version', lambda: 'not available')
    with pytest.raises(self_check.SetupError, match=r'without CUDA ops.*nvcc.*CUDA_VISIBLE_DEVICES='):
        self_check.check_cuda_ops(None, {}, torch.zeros(1))
