"""tools/setup/gpu_check.sh and the GPU tier (tests/gpu) on CPU: the check end to end as its dry run
(Triton's interpreter, toy sizes), a failing step failing it, each step's judgement on made-up
results, the tier's skips and helpers, and the refusal without a GPU. Every subprocess hides the
GPUs, so these tests are the same on a GPU machine."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tool_modules import load_tool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests' / 'gpu'))
import gpu_tier  # noqa: E402

CPU_ONLY = dict(CUDA_VISIBLE_DEVICES='')


gpu_check = load_tool('tools/setup/gpu_check.py')


def environment(**extra) -> dict:
    """This environment without the CPU suite's and the tier's switches, GPUs hidden."""
    env = {k: v for k, v in os.environ.items() if k not in ('TRITON_INTERPRET', gpu_tier.MODE)}
    return dict(env, **CPU_ONLY, **extra)


@pytest.mark.slow
def test_dry_run_runs_and_judges_every_step(tmp_path):
    env = environment(PIT_DET_GPU_CHECK_DRY_RUN='1', PYTHON=sys.executable)
    proc = subprocess.run(
        ['bash', 'tools/setup/gpu_check.sh', str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'dry run: would build mmcv: env CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1' in proc.stdout
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['dry_run'] and list(summary['steps']) == ['tests', 'benchmark']
    assert all(step['ok'] for step in summary['steps'].values())

    tests = json.loads((tmp_path / 'tests.json').read_text())
    # 4 kernel cases, 4 on the detector (bf16 inference only where the CPU has bf16 instructions)
    assert tests['counts'] == {'passed': 8 if gpu_tier.DRY_RUN.bf16_inference else 7} and tests['pytest_exit'] == 0
    figures = {case['name'].split('::')[-1]: case['figures'] for case in tests['cases']}
    assert set(figures['test_triton_kernel_equals_the_fp64_reference[bf16-encoder]']['max_rel_diff']) == {
        'output',
        'value grad',
        'location grad',
        'weight grad',
    }
    assert figures['test_training_loss_is_finite_and_falls[fp32]']['loss']['iterations'] == 2
    match = figures['test_fp32_detections_on_the_gpu_equal_the_cpus']['match']
    # tools/test.py on the CPU against training's validation on the CPU: 10 of 4 images, all equal
    assert match['compared'] == match['matched'] == 40
    assert set(figures['test_trained_detector_beats_the_untrained_one[fp32]']['ap']) == {'before', 'after'}

    bench = json.loads((tmp_path / 'benchmark.json').read_text())
    assert [r['variant'] for r in bench['eager']['rows']] == ['grid_sample fp32', 'fast fp32']
    assert bench['eager']['rows'][1]['vs_reference']['max_score_diff'] <= gpu_check.FP32_SCORE_TOL
    assert bench['eager']['header'].startswith('cpu: ') and 'trained toy detector' in bench['bf16']
    assert [(t['target'], t['met']) for t in bench['targets']] == [  # CPU at toy sizes, fp32 eager only
        ('PiT-S fp32 <= 8 ms', False),
        ('PiT-S bf16 <= 5 ms', False),
        ('PiT-S bf16 not slower than fp32', False),
    ] * 2


STUB_PYTHON = r"""#!/usr/bin/env bash
# The GPU machine's python as gpu_check.sh uses it: pip installs and builds are recorded and mimicked.
printf '%s\n' "$*" >> "$STUB_LOG"
if [[ "$1 $2 $3" == "-m pip install" ]]; then
  for a in "$@"; do
    case "$a" in
      *cp311*.whl) echo "ERROR: ${a##*/} is not a supported wheel on this platform." >&2; exit 1 ;;
      *==*) compgen -G "$STUB_WHEELS/${a%%==*}-${a##*==}-*" > /dev/null \
              || { echo "ERROR: No matching distribution found for $a" >&2; exit 1; } ;;
    esac
  done
  exit 0
fi
if [[ "$1 $2 $3" == "-m pip wheel" ]]; then
  while [[ $# -gt 0 ]]; do
    [[ "$1" == -w ]] && mkdir -p "$2" && touch "$2/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl"
    shift
  done
  exit 0
fi
if [[ "$1" == -c ]]; then exit "$STUB_MMCV_IMPORT_RC"; fi  # import mmcv.ops
if [[ "$1" == *mmcv_variant.py ]]; then exec "$REAL_PYTHON" "$@"; fi
exit 0  # gpu_check.py
"""


@pytest.mark.parametrize(
    'case',
    [
        'wheel for another python',
        'wheel that loads',
        'wheel that does not load',
        'no reusable wheel',
        'pycocotools missing',
    ],
)
def test_install_and_build_on_the_gpu_machine(tmp_path, case):
    """gpu_check.sh's own set-up, which its dry run only prints: every package installed by name
    (a missing wheel named before the build), with --upgrade (pip leaves a --target folder's package
    in place without it), and a reusable mmcv wheel used only where it installs and loads, else built."""
    script = (ROOT / 'tools/setup/gpu_check.sh').read_text()
    packages = re.search(r'^PACKAGES=\((.*?)\)', script, re.S | re.M).group(1).split()
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    for package in packages:
        if not (case == 'pycocotools missing' and package.startswith('pycocotools')):
            name, version = package.split('==')
            (wheels / f'{name}-{version}-py3-none-any.whl').touch()
    (wheels / 'mmcv-2.1.0.tar.gz').touch()
    reusable = {'wheel for another python': 'cp311', 'wheel that loads': 'cp312', 'wheel that does not load': 'cp312'}
    if case in reusable:
        (wheels / f'mmcv-2.1.0-{reusable[case]}-{reusable[case]}-linux_x86_64.whl').touch()
    stub = tmp_path / 'python'
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    log = tmp_path / 'calls.log'
    env = environment(
        PYTHON=str(stub),
        REAL_PYTHON=sys.executable,
        STUB_LOG=str(log),
        STUB_WHEELS=str(wheels),
        STUB_MMCV_IMPORT_RC='1' if case == 'wheel that does not load' else '0',
        PIT_DET_WHEELS=str(wheels),
        PIT_DET_GPU_SITE=str(tmp_path / 'site'),
    )
    proc = subprocess.run(
        ['bash', 'tools/setup/gpu_check.sh', str(tmp_path / 'out')], cwd=ROOT, env=env, capture_output=True, text=True
    )
    calls = log.read_text().splitlines()
    installs = [c for c in calls if c.startswith('-m pip install')]
    built = any(c.startswith('-m pip wheel') for c in calls)
    checked = any(c.endswith(f'gpu_check.py --out {tmp_path / "out"}') for c in calls)
    assert installs[0].endswith(' '.join(packages)) and f'--find-links {wheels}' in installs[0]
    assert all('--upgrade' in c and '--no-index' in c for c in installs)
    if case == 'pycocotools missing':
        assert proc.returncode == 1 and not built and not checked
        assert 'No matching distribution found for pycocotools' in proc.stderr
        assert 'a wheel is missing' in proc.stdout and 'gpu_check.sh --prepare' in proc.stdout
        return
    assert proc.returncode == 0 and checked, proc.stdout + proc.stderr
    assert built == (case != 'wheel that loads'), calls
    if built:
        assert installs[-1].endswith(f'{tmp_path}/site.wheels/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl')
        assert (tmp_path / 'out/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl').is_file()
    if case in ('wheel for another python', 'wheel that does not load'):
        assert 'does not install or load with this Python and torch: building mmcv' in proc.stdout


def test_benchmark_runs_on_the_gpu_ask_for_what_they_judge():
    """The GPU's tools/analysis/benchmark.py arguments (run only there), read by the script's own parser."""
    benchmark_latency = load_tool('tools/analysis/benchmark.py')
    runs = gpu_check.benchmark_runs('cuda', dry_run=False)
    parsed = {name: benchmark_latency.parse_args([*argv, '--out', 'x.json']) for name, (argv, _) in runs.items()}
    eager, graphs = parsed['eager'], parsed['pit_s_cuda_graphs']
    assert eager.configs == gpu_check.TABLE5 and graphs.configs == gpu_check.TABLE5[-1:]
    assert eager.dtype == graphs.dtype == ['fp32', 'bf16'] and eager.shape == [400, 667] and eager.iters == 20
    assert eager.msda_impl == ['grid_sample', 'fast'] and not eager.compile
    assert graphs.msda_impl == ['fast'] and graphs.compile and graphs.compile_mode == 'reduce-overhead'
    assert graphs.profile > 0 and not eager.profile  # the CUDA-graphs verdict reads the profiled graph launches
    assert eager.device == graphs.device == 'cuda'
    assert len(runs['eager'][1]) == 12 and runs['pit_s_cuda_graphs'][1] == [
        ('pit_s', 'fast fp32'),
        ('pit_s', 'fast fp32 compiled'),
        ('pit_s', 'fast bf16'),
        ('pit_s', 'fast bf16 compiled'),
    ]


def test_a_failing_step_fails_the_check(tmp_path):
    """The tests step's pytest run pointed at a test that fails: the step is recorded as failed
    with pytest's report, the exit code is 1."""
    failing = tmp_path / 'tier' / 'test_broken.py'
    failing.parent.mkdir()
    failing.write_text('def test_kernel_is_off():\n    assert 1 + 1 == 3\n\n\ndef test_fine():\n    pass\n')
    out = tmp_path / 'out'
    proc = subprocess.run(
        [
            sys.executable,
            'tools/setup/gpu_check.py',
            '--dry-run',
            '--steps',
            'tests',
            '--tests',
            str(failing),
            '--out',
            str(out),
        ],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '[gpu check] tests: FAILED: pytest exited 1' in proc.stdout
    assert json.loads((out / 'summary.json').read_text())['steps']['tests']['ok'] is False
    tests = json.loads((out / 'tests.json').read_text())
    assert tests['counts'] == {'failed': 1, 'passed': 1} and 'assert (1 + 1) == 3' in tests['cases'][0]['message']


def case(outcome: str) -> dict:
    return dict(name=f'tests/gpu/test_x.py::test_{outcome}', outcome=outcome, seconds=1.0, message='', figures={})


def test_tests_step_passes_only_when_every_test_ran_and_passed():
    assert gpu_check.judge_tests([case('passed'), case('passed')], 0)['ok']
    for cases, returncode in (
        ([case('passed'), case('failed')], 1),
        ([case('passed'), case('error')], 1),
        ([case('passed'), case('skipped')], 0),  # a skipped GPU test checked nothing
        ([], 5),
        ([], 0),
        ([case('passed')], 2),
    ):  # no tests; pytest interrupted
        assert not gpu_check.judge_tests(cases, returncode)['ok'], (cases, returncode)


def row(model='pit_s', impl='fast', dtype='fp32', compiled=False, ms=5.0, score_diff=None, **extra) -> dict:
    r = dict(
        model=model, impl=impl, dtype=dtype, compiled=compiled, kernel='triton', latency=dict(median_ms=ms), **extra
    )
    if score_diff is not None:
        r.update(
            reference='grid_sample fp32',
            vs_reference=dict(max_score_diff=score_diff, max_box_diff=30.0, labels_equal=False),
        )
    return r


def test_benchmark_step_judges_every_row():
    expected = gpu_check.expected_rows(
        ['configs/deformable_detr_pit_s.py'], ['fp32', 'bf16'], ['grid_sample', 'fast'], compiled=False
    )
    assert expected == [
        ('pit_s', 'grid_sample fp32'),
        ('pit_s', 'fast fp32'),
        ('pit_s', 'grid_sample bf16'),
        ('pit_s', 'fast bf16'),
    ]
    good = [
        row(impl='grid_sample'),
        row(score_diff=3e-6),
        row(impl='grid_sample', dtype='bf16', score_diff=0.2),
        row(dtype='bf16', score_diff=0.3),
    ]  # bf16 scores of random weights: not judged
    judged = gpu_check.judge_benchmark(dict(results=good), expected)
    assert judged['ok'] and judged['problems'] == [], judged  # fp32 boxes and labels recorded, not judged
    bad = {
        'a row missing': dict(results=good[:3]),
        'a row failed': dict(results=good[:3], failed=[dict(row(dtype='bf16'), error='RuntimeError: no kernel')]),
        'NaN latency': dict(results=[*good[:3], row(dtype='bf16', ms=float('nan'))]),
        'zero latency': dict(results=[*good[:3], row(dtype='bf16', ms=0.0)]),
        'fp32 scores off': dict(results=[good[0], row(score_diff=2e-5), *good[2:]]),
        'fp32 scores NaN': dict(results=[good[0], row(score_diff=float('nan')), *good[2:]]),
        'bf16 scores NaN': dict(results=[*good[:3], row(dtype='bf16', score_diff=float('nan'))]),
        'bf16 boxes inf': dict(
            results=[*good[:3], dict(good[3], vs_reference=dict(good[3]['vs_reference'], max_box_diff=float('inf')))]
        ),
        'bf16 equal to fp32 (ran in fp32)': dict(
            results=[*good[:3], row(dtype='bf16', score_diff=gpu_check.FP32_SCORE_TOL)]
        ),
    }
    for what, report in bad.items():
        judged = gpu_check.judge_benchmark(report, expected)
        assert not judged['ok'] and len(judged['problems']) == 1, (what, judged)


def test_cuda_graphs_rows_must_replay_a_graph():
    """A reduce-overhead row passes only where its profiled call replayed a CUDA graph: inductor's skip
    counter can read fewer skips than graphs with no graph captured at all (a CPU compile in
    reduce-overhead mode gave 2 skips of 4 graphs). One with some graphs skipped passes, and its
    speed targets say how many."""
    expected = gpu_check.expected_rows(['configs/deformable_detr_pit_s.py'], ['fp32'], ['fast'], compiled=True)
    eager = row(score_diff=0.0)
    for skips, launches, ok in ((0, 1, True), (1, 1, True), (1, 0, False), (0, None, False)):
        cuda = None if launches is None else dict(graph_launches=launches, kernel_launches=3)
        compiled = row(compiled=True, score_diff=1e-7, cudagraph_skips=skips, graphs=2, cuda=cuda)
        judged = gpu_check.judge_benchmark(dict(results=[eager, compiled]), expected)
        assert judged['ok'] == ok and len(judged['problems']) == (not ok), (skips, launches, judged)
        if not ok:
            assert f'no CUDA graph replayed in the profiled call (graph launches: {launches}' in judged['problems'][0]
    runs = {t['run'] for t in gpu_check.speed_targets([], [dict(judged['rows'][1], cudagraph_skips=1)], 'fast')}
    # the fp32 row's; the missing bf16 row's and the (empty) eager run's as they were
    assert runs == {'CUDA graphs, 1 of 2 graphs skipped', 'CUDA graphs', 'eager'}


def test_a_crashed_benchmark_run_fails_its_entry_and_the_next_still_runs(tmp_path, monkeypatch):
    """The eager run crashing (outside any row: building the detector, say) does not cost the
    CUDA-graphs run its turn or its verdict."""
    calls = []
    graphs_rows = [
        row(score_diff=None),
        row(compiled=True, score_diff=1e-7, cudagraph_skips=0, graphs=1, cuda=dict(graph_launches=1)),
        row(dtype='bf16', score_diff=0.2),
        row(dtype='bf16', compiled=True, score_diff=0.2, cudagraph_skips=0, graphs=1, cuda=dict(graph_launches=1)),
    ]

    def fake_run(args, timeout, env=None):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError('tools/analysis/benchmark.py exited 1: CUDA error: an illegal memory access')
        Path(args[args.index('--out') + 1]).write_text(json.dumps(dict(results=graphs_rows)))
        return subprocess.CompletedProcess(args, 0, stdout='header\n', stderr='')

    monkeypatch.setattr(gpu_check, 'run', fake_run)
    result = gpu_check.check_benchmark(tmp_path, 'cuda', dry_run=False)
    assert len(calls) == 2 and not result['ok']
    assert result['eager']['ok'] is False and 'illegal memory access' in result['eager']['problems'][0]
    assert result['pit_s_cuda_graphs']['ok'], result['pit_s_cuda_graphs']
    assert result['error'].startswith('eager: RuntimeError')


def test_the_tier_reads_the_training_precision_from_the_checkpoint(tmp_path):
    """A bf16 run is held to having trained under AmpOptimWrapper in bf16, from what it saved."""
    cfg = "optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16', loss_scale='dynamic')\n"
    for optimizer, text, expected in (
        (dict(state={}, param_groups=[], loss_scaler=dict(scale=65536.0)), cfg, 'bfloat16'),
        (dict(state={}, param_groups=[]), "optim_wrapper = dict(type='OptimWrapper')\n", None),
    ):
        torch.save(dict(optimizer=optimizer, meta=dict(cfg=text)), tmp_path / 'c.pth')
        assert gpu_tier.amp_dtype(tmp_path / 'c.pth') == expected


def test_speed_targets_are_reported_not_judged():
    eager = [
        dict(model='pit_s', variant='fast fp32', median_ms=9.0),
        dict(model='pit_s', variant='fast bf16', median_ms=4.0),
    ]
    graphs = [dict(model='pit_s', variant='fast fp32 compiled', median_ms=3.0)]  # its bf16 row missing
    met = {(t['target'], t['run']): t['met'] for t in gpu_check.speed_targets(eager, graphs, 'fast')}
    assert met == {
        ('PiT-S fp32 <= 8 ms', 'eager'): False,
        ('PiT-S bf16 <= 5 ms', 'eager'): True,
        ('PiT-S bf16 not slower than fp32', 'eager'): True,
        ('PiT-S fp32 <= 8 ms', 'CUDA graphs'): True,
        ('PiT-S bf16 <= 5 ms', 'CUDA graphs'): False,
        ('PiT-S bf16 not slower than fp32', 'CUDA graphs'): False,
    }


def detection(image=1, category=1, box=(10.0, 20.0, 30.0, 40.0), score=0.9) -> dict:
    return dict(image_id=image, category_id=category, bbox=list(box), score=score)


def test_detections_match_within_tolerance_by_image_and_class():
    a = [
        detection(score=0.9),
        detection(category=2, score=0.8),
        detection(box=(50, 50, 10, 10), score=0.7),
        detection(image=2, score=0.6),
        detection(image=3, score=0.5),
        detection(score=0.1),
    ]  # the last is past the cut of 3 per image
    b = [
        detection(box=(10.005, 20, 30, 40), score=0.90005),
        detection(category=2, score=0.8),
        detection(box=(50, 50, 10.02, 10), score=0.7),  # its corner 0.02 px off
        detection(image=2, category=3, score=0.6),  # another class
        detection(image=3, score=0.5002),
    ]  # its score 2e-4 off
    match = gpu_tier.match_detections(a, b, per_image=3, box_tol=1e-2, score_tol=1e-4)
    assert match['compared'] == 5 and match['matched'] == 2 and match['images_with_unmatched'] == [1, 2, 3]
    assert match['box_diff'] == pytest.approx(0.005) and match['score_diff'] == pytest.approx(5e-5)
    # Each of b's detections matches once; one that fell below the cut in a still matches.
    twice = gpu_tier.match_detections(
        [detection(score=0.5), detection(score=0.4)], [detection(score=0.45)], per_image=2, box_tol=1e-2, score_tol=0.1
    )
    assert twice['matched'] == 1
    moved = gpu_tier.match_detections(
        [detection(score=0.5)],
        [detection(score=0.1 + i / 100) for i in range(9)] + [detection(score=0.5)],
        per_image=1,
        box_tol=1e-2,
        score_tol=1e-4,
    )
    assert moved['matched'] == 1


def test_kernel_inputs_keep_samples_off_the_kinks():
    """Every sample of the kernel tests lies 0.01 px or more from an integer pixel coordinate, and
    they cover the map, its edge rows and beyond."""
    value, shapes, starts, loc, attn = gpu_tier.msda_inputs(gpu_tier.GPU, 300)
    assert value.shape == (2, 5600, 8, 32) and loc.shape == (2, 300, 8, 4, 4, 2) and attn.shape == (2, 300, 8, 4, 4)
    torch.testing.assert_close(attn.sum((-1, -2)), torch.ones(2, 300, 8))
    pixels = loc * shapes.flip(-1).view(4, 1, 2) - 0.5
    frac = pixels - pixels.floor()
    assert frac.min() >= 0.01 - 1e-4 and frac.max() <= 0.99 + 1e-4
    for level, (h, w) in enumerate(shapes.tolist()):
        x = pixels[:, :, :, level, :, 0]
        # x from -2 to w + 2: (w - 1) / (w + 4) of the samples have all four corners on the map.
        assert x.min() < -1 and x.max() > w and ((x > 0) & (x < w - 1)).float().mean() > 0.6


NEEDED_PLUGIN = """
import json
from pathlib import Path


def pytest_collection_finish(session):
    conftest = next(p for p in session.config.pluginmanager.get_plugins()
                    if str(getattr(p, '__file__', '')).endswith(str(Path('gpu', 'conftest.py'))))
    items = session.items
    print('NEEDED', json.dumps({
        'all': sorted(conftest.runs_needed(items)),
        'kernel': sorted(conftest.runs_needed([i for i in items if 'test_gpu_kernel' in i.nodeid])),
        'bf16 loss': sorted(conftest.runs_needed([i for i in items if i.name.endswith('falls[bf16]')])),
        'gpu vs cpu': sorted(conftest.runs_needed([i for i in items if 'equal_the_cpus' in i.name]))}))
"""


def test_the_tier_starts_the_runs_its_selected_tests_need(tmp_path):
    """The tier's toy-detector runs start side by side before the tests that read them: each that a
    selected test needs, those asked for by ``request.getfixturevalue`` included, and no others."""
    (tmp_path / 'needed_plugin.py').write_text(NEEDED_PLUGIN)
    env = environment(PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'pytest',
            'tests/gpu',
            '--collect-only',
            '-q',
            '-p',
            'no:cacheprovider',
            '-p',
            'needed_plugin',
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith('NEEDED ')), None)
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(line[len('NEEDED ') :]) == {
        'all': ['evaluated_bf16', 'evaluated_cpu_fp32', 'trained_bf16', 'trained_fp32'],
        'kernel': [],
        'bf16 loss': ['trained_bf16'],
        'gpu vs cpu': ['evaluated_cpu_fp32', 'trained_fp32'],
    }


def test_the_cpu_run_skips_the_gpu_tier_and_says_how_to_run_it(tmp_path):
    """The CPU suite's run, and PIT_DET_GPU_TESTS=1 without a visible GPU: every tier test skipped with
    the reason; and that GPU run skips the CPU suite's tests, which need the interpreter."""
    runs = {'cpu suite': environment(), 'gpu tier, no gpu': environment(PIT_DET_GPU_TESTS='1')}
    for name, env in runs.items():
        xml = tmp_path / f'{name}.xml'
        cpu_test = 'tests/test_gpu_check.py::test_speed_targets_are_reported_not_judged'
        proc = subprocess.run(
            [
                sys.executable,
                '-m',
                'pytest',
                'tests/gpu',
                cpu_test,
                '-q',
                '-p',
                'no:cacheprovider',
                '--junitxml',
                str(xml),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        cases = gpu_check.read_junit(xml)
        tier = [c for c in cases if c['name'].startswith('tests.gpu.')]
        assert len(tier) == 10, cases  # 4 kernel cases; 2 + 2 trained, 2 evaluated on the detector
        reason = 'make test-gpu' if name == 'cpu suite' else 'no CUDA GPU visible'
        assert all(c['outcome'] == 'skipped' and reason in c['message'] for c in tier), tier
        others = {c['outcome'] for c in cases if c not in tier}
        assert others == ({'passed'} if name == 'cpu suite' else {'skipped'}), cases
        assert not gpu_check.judge_tests(tier, proc.returncode)['ok']


def test_without_a_gpu_the_check_says_so():
    proc = subprocess.run(
        [sys.executable, 'tools/setup/gpu_check.py', '--out', 'unused'],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and 'no CUDA GPU visible' in proc.stderr and '--dry-run' in proc.stderr
    assert not (ROOT / 'unused').exists()
