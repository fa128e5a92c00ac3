"""The GPU tier: every test here is marked ``gpu`` and skipped, with the reason, where it cannot run
(:func:`gpu_tier.skip_reason`); the toy detector is trained and evaluated once per pytest run, its runs
side by side, and shared by the tests that judge it."""

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Optional

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
    # a skip fails tools/setup/gpu_check.py's judgement, as it should on a GPU).
    unrun = [item for item in ours if not tier.bf16_inference and 'evaluated_bf16' in item.fixturenames]
    if unrun:
        config.hook.pytest_deselected(items=unrun)
        items[:] = [item for item in items if item not in unrun]


@pytest.fixture(scope='session')
def tier() -> gpu_tier.Tier:
    return gpu_tier.current()


# The toy detector's runs (each a tool in a subprocess) and what each waits for.
RUNS = {
    'trained_fp32': (),
    'trained_bf16': (),
    'evaluated_cpu_fp32': ('trained_fp32',),
    'evaluated_bf16': ('trained_fp32',),
}


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


class ToyRuns:
    """The toy detector's runs of one tier run, each a tool in a subprocess, in a thread pool;
    a run not started up front (a test that :func:`runs_needed` did not foresee) starts when first
    asked for, with what it waits for."""

    def __init__(self, tier: gpu_tier.Tier, data: Path, tmp_path_factory, pool: ThreadPoolExecutor) -> None:
        self.tier, self.data, self.tmp, self.pool = tier, data, tmp_path_factory, pool
        self.jobs: Dict[str, Future] = {}

    def start(self, name: str) -> Future:
        if name not in self.jobs:
            for dep in RUNS[name]:
                self.start(dep)
            self.jobs[name] = self.pool.submit(self._run, name)
        return self.jobs[name]

    def result(self, name: str):
        return self.start(name).result()

    def _run(self, name: str):
        tier, data = self.tier, self.data
        if name.startswith('trained_'):
            precision = name.split('_')[1]
            return gpu_tier.train(tier, data, self.tmp.mktemp(name), precision)
        run = self.result('trained_fp32')
        if name == 'evaluated_cpu_fp32':  # in the dry run too: the GPU run's path, on CPU against CPU
            return gpu_tier.evaluate(run.checkpoint, data, self.tmp.mktemp(name), 'cpu', 'fp32')
        return gpu_tier.evaluate(run.checkpoint, data, self.tmp.mktemp(name), tier.device, 'bf16')


@pytest.fixture(scope='session', autouse=True)
def toy_runs(request, tier, tmp_path_factory) -> Optional[ToyRuns]:
    """Every toy-detector run that a selected test needs, started at the tier's first test and run
    side by side: the two trainings share the GPU, the CPU evaluation the host's cores, and each
    evaluation starts when the fp32 checkpoint exists. In sequence they took most of the tier's six
    minutes on an H200 machine; the kernel tests run meanwhile. Nothing here is timed."""
    if gpu_tier.skip_reason():
        yield None
        return
    needed = runs_needed(request.session.items)
    data = make_toy_coco(tmp_path_factory.mktemp('toy_coco'), tier.num_train, tier.num_val)
    pool = ThreadPoolExecutor(max_workers=len(RUNS))  # one thread per run: a waiting run holds one
    runs = ToyRuns(tier, data, tmp_path_factory, pool)
    for name in RUNS:
        if name in needed:
            runs.start(name)
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)  # runs not yet started are dropped; running tools finish


@pytest.fixture(scope='session')
def trained_fp32(toy_runs) -> gpu_tier.TrainRun:
    """The toy detector trained in fp32: the checkpoint every evaluation below reads."""
    return toy_runs.result('trained_fp32')


@pytest.fixture(scope='session')
def trained_bf16(toy_runs) -> gpu_tier.TrainRun:
    """Trained under bf16 autocast (mmengine's AmpOptimWrapper)."""
    return toy_runs.result('trained_bf16')


@pytest.fixture(scope='session')
def evaluated_cpu_fp32(toy_runs) -> gpu_tier.Evaluation:
    """The fp32-trained checkpoint evaluated on CPU in fp32 (the C++ kernel). The dry run, on CPU
    already, reuses the training run's own validation."""
    return toy_runs.result('evaluated_cpu_fp32')


@pytest.fixture(scope='session')
def evaluated_bf16(toy_runs) -> gpu_tier.Evaluation:
    """The fp32-trained checkpoint evaluated under bf16 autocast on the tier's device."""
    return toy_runs.result('evaluated_bf16')
