import logging
import os

# The suite runs on CPU. pit-det's Triton kernels are checked there by Triton's interpreter, which
# must be chosen before Triton is first imported: Triton's own library functions (tl.sum, ...)
# are wrapped for the interpreter or for the GPU at that moment.
os.environ.setdefault('TRITON_INTERPRET', '1')

from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger

from pit_det.datasets.toy import make_split


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
