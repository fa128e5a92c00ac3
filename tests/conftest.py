import logging

import pytest
import torch
from mmengine.logging import MMLogger


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
