import logging
import os

# The suite runs on CPU. pit-det's Triton kernels are checked there by Triton's interpreter, which
# must be chosen before Triton is first imported: Triton's own library functions (tl.sum, ...)
# are wrapped for the interpreter or for the GPU at that moment. The GPU tier (tests/gpu) runs the
# compiled kernels instead, so it runs in a pytest process of its own, PIT_DET_GPU_TESTS=1 (`make
# test-gpu`), which leaves the interpreter off and runs nothing else.
os.environ.setdefault('TRITON_INTERPRET', '0' if os.environ.get('PIT_DET_GPU_TESTS') == '1' else '1')
# `make test` runs one pytest-xdist worker per core, each test file on one worker (its fixtures built
# once; trained_toy_detector once for all workers). One thread per worker, for torch and for the
# tools a test starts (they inherit it): the workers already fill the cores, and oversubscribed
# OpenMP threads spin against each other.
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ['OMP_NUM_THREADS'] = '1'

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from mmengine.logging import MMLogger

from pit_det.datasets import make_toy_coco
from pit_det.datasets.toy import make_split

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'

# The test files that take longest, longest first (pytest --durations on 2 cores, 2026-12-06): they
# run first, so that the workers, which take one file at a time, end together rather than one of
# them running a long file alone at the end. test_export_tools.py shares test_quantize.py's trained
# detector, which takes about 4 minutes to build: it comes after the other long files, so that
# whichever worker takes it finds the detector built. (Its first test's setup of about 70 s is its
# own gather-graph export, not a wait.)
LONGEST_FIRST = (
    'test_quantize.py',
    'test_export.py',
    'test_msda_triton.py',
    'test_benchmark.py',
    'test_reliability.py',
    'test_export_tools.py',
    'test_toy_e2e.py',
    'test_gpu_check.py',
    'test_any_image_size.py',
    'test_checkpoint_tools.py',
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: files stay whole
    if os.environ.get('PIT_DET_GPU_TESTS') == '1':
        skip = pytest.mark.skip(
            reason='PIT_DET_GPU_TESTS=1 runs the GPU tier (tests/gpu) alone: the CPU suite '
            "needs Triton's interpreter, which that run leaves off"
        )
        gpu_tier = Path(__file__).resolve().parent / 'gpu'
        for item in items:
            if gpu_tier not in Path(str(item.fspath)).resolve().parents:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def mm_log():
    """Messages logged through mmengine's current logger during the test. (Its stream handler is
    bound to the sys.stdout of the test that created it, so capsys does not see them reliably.)"""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


@pytest.fixture(scope='session')
def tiny_toy(tmp_path_factory) -> Path:
    """A toy COCO set of 8 training and 4 validation images, shared by the end-to-end tests."""
    root = tmp_path_factory.mktemp('toy')
    make_split(root, 'train', 8, seed=0)
    make_split(root, 'val', 4, seed=1)
    return root


@pytest.fixture(scope='session')
def trained_toy_detector(tmp_path_factory) -> dict:
    """The toy config trained for one epoch (150 iterations) on the generated toy set by tools/train.py,
    and its dynamic ONNX exports (GridSample and fused graphs) by tools/deploy/export.py, as a user runs
    them; shared by the INT8 and the export tools' tests.

    Built once per pytest run: under pytest-xdist by the first worker that asks, in the run's common
    temporary folder, while the others wait on a file lock (pytest-xdist's documented pattern).

    Returns:
        dict: ``data`` (the toy set's root), ``checkpoint``, ``onnx`` (GridSample), ``fused`` (paths) and
        the GridSample export's ``stdout``.
    """
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base) / 'trained_toy_detector'
    done, failed = root.with_suffix('.json'), root.with_suffix('.failed')
    with FileLock(f'{root}.lock'):
        if failed.is_file():  # another worker's build failed: its error, not a second try of minutes
            pytest.fail(failed.read_text(), pytrace=False)
        if not done.is_file():
            try:
                result = _train_and_export(root)
            except BaseException as err:
                failed.write_text(f'building the trained toy detector failed: {err}')
                raise
            partial = done.with_suffix('.partial')
            partial.write_text(json.dumps(result))
            os.replace(partial, done)  # whole or absent: a killed writer leaves no half file
    return {k: (v if k == 'stdout' else Path(v)) for k, v in json.loads(done.read_text()).items()}


def _train_and_export(root: Path) -> dict:
    shutil.rmtree(root, ignore_errors=True)  # what a killed build left
    data = make_toy_coco(root / 'data')
    env = dict(os.environ, PYTHONWARNINGS='ignore')

    def run(*args):
        proc = subprocess.run(
            [sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, f'{args[0]}:\n{proc.stderr[-3000:]}'
        return proc

    run(
        'tools/train.py',
        TOY,
        '--work-dir',
        root / 'work',
        '--data-root',
        data,
        '--cfg-options',
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=100',
    )
    checkpoint = root / 'work/epoch_1.pth'
    exported = run('tools/deploy/export.py', TOY, checkpoint, '--out', root / 'toy.onnx', '--dynamic')
    run('tools/deploy/export.py', TOY, checkpoint, '--out', root / 'toy_fused.onnx', '--dynamic', '--msda', 'fused')
    return dict(
        data=str(data),
        checkpoint=str(checkpoint),
        onnx=str(root / 'toy.onnx'),
        fused=str(root / 'toy_fused.onnx'),
        stdout=exported.stdout,
    )
