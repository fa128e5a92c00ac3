"""The GPU tier: every test here is marked ``gpu`` and skipped, with the reason, where it cannot run
(:func:`gpu_tier.skip_reason`); the toy detector is trained and evaluated once per pytest run and
shared by the tests that judge it."""
from pathlib import Path

import gpu_tier
import pytest

from pit_det.datasets import make_toy_coco

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    reason, tier = gpu_tier.skip_reason(), gpu_tier.current()
    ours = [item for item in items if HERE in Path(str(item.fspath)).resolve().parents]
    for item in ours:
        item.add_marker(pytest.mark.gpu)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
    # The dry run on a CPU that would emulate bf16 leaves bf16 inference out (deselected, not skipped:
    # a skip fails tools/gpu_check.py's judgement, as it should on a GPU).
    unrun = [item for item in ours if not tier.bf16_inference and 'evaluated_bf16' in item.fixturenames]
    if unrun:
        config.hook.pytest_deselected(items=unrun)
        items[:] = [item for item in items if item not in unrun]


@pytest.fixture(scope='session')
def tier() -> gpu_tier.Tier:
    return gpu_tier.current()


@pytest.fixture(scope='session')
def toy_data(tier, tmp_path_factory) -> Path:
    return make_toy_coco(tmp_path_factory.mktemp('toy_coco'), tier.num_train, tier.num_val)


@pytest.fixture(scope='session')
def trained_fp32(tier, toy_data, tmp_path_factory) -> gpu_tier.TrainRun:
    """The toy detector trained in fp32: the checkpoint every evaluation below reads."""
    return gpu_tier.train(tier, toy_data, tmp_path_factory.mktemp('train_fp32'), 'fp32')


@pytest.fixture(scope='session')
def trained_bf16(tier, toy_data, tmp_path_factory) -> gpu_tier.TrainRun:
    return gpu_tier.train(tier, toy_data, tmp_path_factory.mktemp('train_bf16'), 'bf16')


@pytest.fixture(scope='session')
def evaluated_cpu_fp32(tier, toy_data, trained_fp32, tmp_path_factory) -> gpu_tier.Evaluation:
    """The fp32-trained checkpoint evaluated on CPU in fp32 (the C++ kernel). The dry run, on CPU
    already, reuses the training run's own validation."""
    if tier.device == 'cpu':
        return trained_fp32.final
    return gpu_tier.evaluate(trained_fp32.checkpoint, toy_data, tmp_path_factory.mktemp('eval_cpu_fp32'), 'cpu',
                             'fp32')


@pytest.fixture(scope='session')
def evaluated_bf16(tier, toy_data, trained_fp32, tmp_path_factory) -> gpu_tier.Evaluation:
    """The fp32-trained checkpoint evaluated under bf16 autocast on the tier's device."""
    return gpu_tier.evaluate(trained_fp32.checkpoint, toy_data, tmp_path_factory.mktemp('eval_bf16'), tier.device,
                             'bf16')
