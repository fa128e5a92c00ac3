"""The cluster launch scripts as Slurm runs them: tools/slurm_train.sh and tools/slurm_test.sh
with a stand-in ``srun`` that records its environment and arguments (torchrun's scripts run for
real in tests/test_toy_e2e.py)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('gpus, per_node', [('4', '4'), ('16', '8')])
@pytest.mark.parametrize(
    'script, tool, fourth', [('slurm_train.sh', 'train.py', '--work-dir=x'), ('slurm_test.sh', 'test.py', 'x')]
)
def test_slurm_scripts_ask_for_the_gpus_they_use_and_pass_every_argument(
    tmp_path, script, tool, fourth, gpus, per_node
):
    """Fewer than 8 GPUs on one node reserve no idle GPU; each job gets the rendezvous port it is
    given (two jobs on one node shared mmengine's default 29500); arguments with spaces arrive whole.
    Both scripts run tools/launch/srun.sh."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text('#!/usr/bin/env bash\nprintf "%s\\n" "MASTER_PORT=$MASTER_PORT" "$@" > "$SRUN_LOG"\n')
    (bin_dir / 'srun').chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ('GPUS_PER_NODE', 'MASTER_PORT', 'PYTHON')}
    env.update(PATH=f'{bin_dir}:{env["PATH"]}', SRUN_LOG=str(tmp_path / 'srun.log'), GPUS=gpus, PORT='29123')
    argv = ['bash', f'tools/{script}', 'gpu', 'job', 'cfg.py', 'x', '--cfg-options', 'a=1 b']
    subprocess.run(argv, cwd=ROOT, env=env, check=True, timeout=60)
    recorded = (tmp_path / 'srun.log').read_text().splitlines()
    assert recorded[0] == 'MASTER_PORT=29123'
    assert recorded[1:3] == ['-p', 'gpu'] and '--job-name=job' in recorded
    assert f'--gres=gpu:{per_node}' in recorded and f'--ntasks={gpus}' in recorded
    assert f'--ntasks-per-node={per_node}' in recorded
    command = recorded[recorded.index('-u') - 1 :]
    assert command == [
        'python',
        '-u',
        str(ROOT / 'tools' / tool),
        '--launcher',
        'slurm',
        'cfg.py',
        fourth,
        '--cfg-options',
        'a=1 b',
    ]


@pytest.mark.parametrize('script', ['dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh'])
def test_a_launch_without_its_arguments_prints_its_usage(script):
    proc = subprocess.run(['bash', f'tools/{script}', 'only_one'], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith('Usage: ') and f'tools/{script} ' in proc.stderr
