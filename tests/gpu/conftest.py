"""The GPU tier: every test here is marked ``gpu`` and skipped, with the reason, where it cannot run
(:func:`gpu_tier.skip_reason`); the toy detector is trained and evaluated once per pytest run, its runs
side by side, and shared by the tests that judge it."""
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Dict

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


# The toy detector's runs (each a tool in a subprocess) and what each waits for.
RUNS = {'trained_fp32': (), 'trained_bf16': (), 'evaluated_cpu_fp32': ('trained_fp32',),
        'evaluated_bf16': ('trained_fp32',)}


def runs_needed(items) -> set:
    """The runs that these test items need: the fixtures they name, and ``trained_<precision>`` for
    a test parametrized by ``precision`` (it asks for its run with ``request.getfixturevalue``), with
    what those wait for."""
    needed = set()
    for item in items:
        needed |= set(item.fixturenames) & set(RUNS)
        precision = getattr(item, 'callspec', None) and item.callspec.params.get('precision')
        if precision:
            needed.add(f'trained_{precision}')
    return needed | {dep for name in needed for dep in RUNS[name]}


@pytest.fixture(scope='session', autouse=True)
def toy_runs(request, tier, tmp_path_factory) -> Dict[str, Future]:
    """Every toy-detector run that a selected test needs, started at the tier's first test and run
    side by side: the two trainings share the GPU, the CPU evaluation the host's cores, and each
    evaluation starts when the fp32 checkpoint exists. In sequence they took most of the tier's six
    minutes on an H200 machine; the kernel tests run meanwhile. Nothing here is timed."""
    needed = runs_needed(request.session.items)
    if gpu_tier.skip_reason() or not needed:
        yield {}
        return
    data = make_toy_coco(tmp_path_factory.mktemp('toy_coco'), tier.num_train, tier.num_val)
    jobs: Dict[str, Future] = {}

    def trained(precision):
        return gpu_tier.train(tier, data, tmp_path_factory.mktemp(f'train_{precision}'), precision)

    def evaluated(device, precision):
        run = jobs['trained_fp32'].result()
        if tier.device == 'cpu' and device == 'cpu':  # the dry run is on CPU already: its own validation
            return run.final
        return gpu_tier.evaluate(run.checkpoint, data, tmp_path_factory.mktemp(f'eval_{device}_{precision}'),
                                 device, precision)

    work = dict(trained_fp32=lambda: trained('fp32'), trained_bf16=lambda: trained('bf16'),
                evaluated_cpu_fp32=lambda: evaluated('cpu', 'fp32'),
                evaluated_bf16=lambda: evaluated(tier.device, 'bf16'))
    with ThreadPoolExecutor(max_workers=len(needed)) as pool:
        for name in RUNS:  # dependencies first
            if name in needed:
                jobs[name] = pool.submit(work[name])
        yield jobs  # and at the session's end, waits for every run


@pytest.fixture(scope='session')
def trained_fp32(toy_runs) -> gpu_tier.TrainRun:
    """The toy detector trained in fp32: the checkpoint every evaluation below reads."""
    return toy_runs['trained_fp32'].result()


@pytest.fixture(scope='session')
def trained_bf16(toy_runs) -> gpu_tier.TrainRun:
    """Trained under bf16 autocast (mmengine's AmpOptimWrapper)."""
    return toy_runs['trained_bf16'].result()


@pytest.fixture(scope='session')
def evaluated_cpu_fp32(toy_runs) -> gpu_tier.Evaluation:
    """The fp32-trained checkpoint evaluated on CPU in fp32 (the C++ kernel). The dry run, on CPU
    already, reuses the training run's own validation."""
    return toy_runs['evaluated_cpu_fp32'].result()


@pytest.fixture(scope='session')
def evaluated_bf16(toy_runs) -> gpu_tier.Evaluation:
    """The fp32-trained checkpoint evaluated under bf16 autocast on the tier's device."""
    return toy_runs['evaluated_bf16'].result()
