"""Running pit-det's tools from the analysis tools that train and score several detectors
(tools/analysis/table5_toy.py, tools/analysis/int8_accuracy.py): one logged run, and the options that
score the toy set's held-out test split."""

import subprocess
import time
from pathlib import Path
from typing import List

from ..errors import PitDetError

ROOT = Path(__file__).resolve().parents[2]


def run_logged(cmd: list, log: Path) -> float:
    """Runs ``cmd`` in the repository with its output in ``log``; returns its seconds.

    Raises:
        PitDetError: the command failed, with the end of its log.
    """
    print('$', ' '.join(str(c) for c in cmd), f'> {log}', flush=True)
    start = time.time()
    with open(log, 'w') as f:
        code = subprocess.run([str(c) for c in cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if code:
        tail = ''.join(Path(log).read_text().splitlines(keepends=True)[-15:])
        raise PitDetError(f'{Path(str(cmd[1])).name} exited with {code}; the end of {log}:\n{tail}')
    return time.time() - start


def held_out(data_root: str) -> List[str]:
    """tools/test.py options that score the toy set's test split instead of val."""
    return [
        'test_dataloader.dataset.ann_file=annotations/instances_test2017.json',
        'test_dataloader.dataset.data_prefix.img=test2017/',
        f'test_evaluator.ann_file={data_root.rstrip("/")}/annotations/instances_test2017.json',
    ]
