"""tools/gpu_check.sh: the GPU check, run here end to end as its CPU dry run (Triton's
interpreter, toy sizes), and its refusal without a GPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_json(tmp_path):
    env = dict(os.environ, PIT_DET_GPU_CHECK_DRY_RUN='1', PYTHON=sys.executable, OMP_NUM_THREADS='2')
    proc = subprocess.run(['bash', 'tools/gpu_check.sh', str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'dry run: would build mmcv: env CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1' in proc.stdout
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['dry_run'] and set(summary['steps']) == {'kernel', 'train', 'benchmark'}
    assert all(step['ok'] for step in summary['steps'].values())
    kernel = json.loads((tmp_path / 'kernel.json').read_text())
    for dtype, tol in (('fp32', 1e-5), ('bf16', 2 ** -7)):
        assert kernel[dtype]['tol'] == tol and set(kernel[dtype]['max_rel_diff']) == {
            'out', 'grad_value', 'grad_loc', 'grad_attn'}
        assert all(d <= tol for d in kernel[dtype]['max_rel_diff'].values())
    train = json.loads((tmp_path / 'train.json').read_text())
    assert train['fp32']['iterations'] == 2 and 'GPUs only' in train['bf16']['skipped']
    bench = json.loads((tmp_path / 'benchmark.json').read_text())
    assert [r['variant'] for r in bench['eager']['rows']] == ['grid_sample fp32', 'triton fp32']
    assert bench['eager']['rows'][1]['vs_reference']['labels_equal']
    assert [r['variant'] for r in bench['pit_s_cuda_graphs']['rows']] == ['triton fp32', 'triton fp32 compiled']
    assert bench['eager']['header'].startswith('cpu: ')


def test_without_a_gpu_the_check_says_so():
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    proc = subprocess.run([sys.executable, 'tools/gpu_check.py', '--out', 'unused'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and 'no CUDA GPU visible' in proc.stderr and '--dry-run' in proc.stderr
    proc = subprocess.run([sys.executable, 'tools/gpu_check.py', '--dry-run', '--out', 'unused'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and 'set TRITON_INTERPRET=1' in proc.stderr
    assert not (ROOT / 'unused').exists()
