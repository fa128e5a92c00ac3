import logging
import os

# The suite runs on CPU. pit-det's Triton kernels are checked there by Triton's interpreter, which
# must be chosen before Triton is first imported: Triton's own library functions (tl.sum, ...)
# are wrapped for the interpreter or for the GPU at that moment. The GPU tier (tests/gpu) runs the
# compiled kernels instead, so it runs in a pytest process of its own, PIT_DET_GPU_TESTS=1 (`make
# test-gpu`), which leaves the interpreter off and runs nothing else.
os.environ.setdefault('TRITON_INTERPRET', '0' if os.environ.get('PIT_DET_GPU_TESTS') == '1' else '1')
# `make test` runs one pytest-xdist worker per core, each test file on one worker (its fixtures built
# once). One thread per worker, for torch and for the tools a test starts (they inherit it): the
# workers already fill the cores, and oversubscribed OpenMP threads spin against each other.
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ['OMP_NUM_THREADS'] = '1'

from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger

from pit_det.datasets.toy import make_split

# The test files that take longest, longest first (pytest --durations on 2 cores, 2026-12-04): they
# run first, so that the workers, which take one file at a time, end together rather than one of
# them running a long file alone at the end.
LONGEST_FIRST = ('test_quantize.py', 'test_export_tools.py', 'test_export.py', 'test_msda_triton.py',
                 'test_reliability.py', 'test_benchmark.py', 'test_any_image_size.py', 'test_toy_e2e.py',
                 'test_gpu_check.py')


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: files stay whole
    if os.environ.get('PIT_DET_GPU_TESTS') == '1':
        skip = pytest.mark.skip(reason='PIT_DET_GPU_TESTS=1 runs the GPU tier (tests/gpu) alone: the CPU suite '
                                'needs Triton\'s interpreter, which that run leaves off')
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
