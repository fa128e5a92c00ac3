"""pit-det's GPU path end to end in minutes, for offline GPU machines and clusters; every result as
JSON in --out, every step judged.

    bash tools/setup/gpu_check.sh OUT                    # on a GPU machine: installs, builds, then runs this
    python tools/setup/gpu_check.py --out OUT            # the checks alone, in a ready environment
    python tools/setup/gpu_check.py --dry-run --out OUT  # both steps rehearsed on CPU at toy sizes (benchmark_runs)

Steps, each writing OUT/<step>.json (and OUT/summary.json at the end):
  tests      the GPU test tier (tests/gpu, docs/testing.md) in a pytest run of its own with Triton compiled:
             the kernel at a 400 x 667 image's shapes in fp32 and bf16 against an fp64 reference, forward and backward;
             the toy detector trained for 100 iterations in fp32 and bf16 and evaluated, its fp32
             detections held to the CPU's and bf16 inference to fp32. Judged by its JUnit XML: every
             test ran and passed (a skipped test fails the step too). Each test's figures are in tests.json.
  benchmark  tools/analysis/benchmark.py on the three Table 5 detectors at 400 x 667, batch 1, fp32 and
             bf16, eager (grid_sample and pit-det's kernel), and PiT-S compiled with CUDA graphs
             (reduce-overhead). Judged: every row ran, with a finite, positive latency; every fp32 row's
             scores equal its fp32 reference row's within fp32 rounding; every bf16 row's scores and boxes
             finite and its scores further from fp32's than fp32 rounding (else it ran in fp32; their
             precision on these random-weight detectors is not judged: bf16 precision is the tests
             step's, on the trained toy detector); and a CUDA-graphs row replayed at least one CUDA graph
             in a profiled call (inductor runs a graph it cannot capture without CUDA graphs, and its
             skip counter does not count every one). A benchmark run that crashes fails its entry; the
             next still runs.
             The speed targets are reported as met or not met, with the graphs inductor skipped; they do
             not fail the check.
A step that fails is recorded with its error, and the others still run; the exit code is 1 then.
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pit_det import benchmark as bm  # noqa: E402

TABLE5 = ['configs/deformable_detr_r50.py', 'configs/deformable_detr_vit_s.py', 'configs/deformable_detr_pit_s.py']
# fp32 rows against their fp32 reference row (same detector and weights; another deformable-attention
# kernel, or compiled): the top-100 scores, sorted. The k-th largest score moves by no more than the
# largest change of any score, so near ties that swap places among random-weight detections cannot
# fail it (boxes and labels, compared place by place, can: they are recorded, not judged). Measured
# on a 2-core AMD EPYC Zen 4 (docs/benchmark.md): 6e-8 between kernels, 1.4e-7 compiled; 1e-5 leaves
# room for the GPU's summation orders, while bf16 or TF32 arithmetic would show as 1e-3 and more.
FP32_SCORE_TOL = 1e-5
# PiT-S at 400 x 667, batch 1, on the GPU: reported, not judged.
TARGET_MS = {'fp32': 8.0, 'bf16': 5.0}


def python(args: list, timeout: int, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """``python ARGS`` in the repository. Past ``timeout`` its whole process group is killed: the tools
    it starts (training runs, inductor's compile workers) must not hold the GPU for the next step."""
    env = dict(env or os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run(args: list, timeout: int, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    proc = python(args, timeout, env)
    if proc.returncode:
        raise RuntimeError(f'{" ".join(map(str, args[:2]))} exited {proc.returncode}: {proc.stderr[-2000:]}')
    return proc


def subprocess_env(dry_run: bool) -> dict:
    """The environment of the tools this check starts: the dry run is a CPU run wherever it runs (every
    GPU hidden; tests/conftest.py gives the tier Triton's interpreter); the GPU run has Triton compiled."""
    env = dict(os.environ)
    if dry_run:
        env['CUDA_VISIBLE_DEVICES'] = ''
    else:
        env.pop('TRITON_INTERPRET', None)
    return env


# --- the GPU test tier ---------------------------------------------------------------------------


def read_junit(path: Path) -> List[dict]:
    """Each test case of a pytest JUnit XML file: its name, outcome ('passed', 'failed', 'error',
    'skipped'), seconds, message, and the figures it recorded (``record_property``, JSON values)."""
    cases = []
    for case in ET.parse(path).getroot().iter('testcase'):
        outcome, message = 'passed', ''
        for tag, name in (('failure', 'failed'), ('error', 'error'), ('skipped', 'skipped')):
            found = case.find(tag)
            if found is not None:
                outcome, message = name, found.get('message', '')
                break
        figures = {}
        for prop in case.iter('property'):
            try:
                figures[prop.get('name')] = json.loads(prop.get('value'))
            except (TypeError, ValueError):
                figures[prop.get('name')] = prop.get('value')
        cases.append(
            dict(
                name=f'{case.get("classname")}::{case.get("name")}',
                outcome=outcome,
                seconds=float(case.get('time') or 0),
                message=message[-2000:],
                figures=figures,
            )
        )
    return cases


def judge_tests(cases: List[dict], returncode: int) -> dict:
    """Passed when pytest exited 0 and every test case passed: none failed, errored or was skipped
    (a GPU tier that skips has checked nothing), and there was at least one."""
    counts = Counter(case['outcome'] for case in cases)
    ok = returncode == 0 and bool(cases) and set(counts) == {'passed'}
    return dict(ok=ok, pytest_exit=returncode, counts=dict(counts), cases=cases)


def check_tests(out: Path, dry_run: bool, tests: str) -> dict:
    xml, log = out / 'gpu_tests.xml', out / 'gpu_tests.log'
    xml.unlink(missing_ok=True)
    env = dict(subprocess_env(dry_run), PIT_DET_GPU_TESTS='dry-run' if dry_run else '1')
    # legacy JUnit: the tier's record_property figures are written per test case.
    proc = python(
        [
            '-m',
            'pytest',
            tests,
            '-q',
            '-p',
            'no:cacheprovider',
            '--junitxml',
            xml,
            '-o',
            'junit_family=legacy',
            '--basetemp',
            out / 'gpu_tests',
        ],
        timeout=1200,
        env=env,
    )
    log.write_text(proc.stdout + proc.stderr)
    result = judge_tests(read_junit(xml) if xml.is_file() else [], proc.returncode)
    result.update(command=f'PIT_DET_GPU_TESTS={env["PIT_DET_GPU_TESTS"]} pytest {tests}', log=str(log), junit=str(xml))
    if not result['ok']:
        result['error'] = f'pytest exited {proc.returncode}, {result["counts"] or "no tests"}: ' + '\n'.join(
            proc.stdout.splitlines()[-15:]
        )
    return result


# --- the benchmark -------------------------------------------------------------------------------


def expected_rows(
    configs: Sequence[str], dtypes: Sequence[str], impls: Sequence[str], compiled: bool
) -> List[Tuple[str, str]]:
    """(model, variant) of every row a tools/analysis/benchmark.py run of these arguments writes."""
    modes = [False, True] if compiled else [False]
    return [
        (bm.label(config), bm.variant(dict(impl=impl, dtype=dtype, compiled=c)))
        for config in configs
        for dtype in dtypes
        for impl in impls
        for c in modes
    ]


def judge_benchmark(report: dict, expected: List[Tuple[str, str]]) -> dict:
    """Every expected row ran (no row failed) with a finite, positive median latency; every fp32 row's
    sorted scores equal its reference row's within FP32_SCORE_TOL; every bf16 row's scores and boxes
    finite (no NaN or inf differences from the reference) and its scores further than FP32_SCORE_TOL
    from the fp32 reference's (closer, bf16 did not run); a CUDA-graphs row (``cudagraph_skips``
    recorded) replayed at least one CUDA graph in its profiled call (``cuda.graph_launches``): the
    skip counter alone misses graphs that inductor runs without CUDA graphs and does not count."""
    rows, problems = [], []
    for r in report['results'] + report.get('failed', []):
        row = dict(model=r['model'], variant=bm.variant(r), kernel=r.get('kernel'))
        if 'error' in r:
            problems.append(f'{row["model"]} {row["variant"]} failed: {r["error"]}')
            rows.append(dict(row, error=r['error']))
            continue
        row.update(
            median_ms=r['latency']['median_ms'],
            vs_reference=r.get('vs_reference'),
            reference=r.get('reference'),
            cudagraph_skips=r.get('cudagraph_skips'),
            graphs=r.get('graphs'),
            graph_launches=(r.get('cuda') or {}).get('graph_launches'),
        )
        ms = row['median_ms']
        if not (isinstance(ms, (int, float)) and math.isfinite(ms) and ms > 0):
            problems.append(f'{row["model"]} {row["variant"]}: median latency {ms}')
        row['judged'] = ['latency']
        if r['dtype'] == 'fp32' and row['vs_reference']:
            row['judged'].append('scores')
            diff = row['vs_reference']['max_score_diff']
            if not diff <= FP32_SCORE_TOL:  # NaN fails too
                problems.append(
                    f'{row["model"]} {row["variant"]}: scores {diff:.2e} from {row["reference"]} '
                    f'(fp32 tolerance {FP32_SCORE_TOL:g})'
                )
        elif row['vs_reference']:
            row['judged'].append('finite')
            diffs = [row['vs_reference']['max_score_diff'], row['vs_reference']['max_box_diff']]
            if not all(math.isfinite(d) for d in diffs):
                problems.append(f'{row["model"]} {row["variant"]}: scores / boxes not finite ({diffs[0]}, {diffs[1]})')
            elif diffs[0] <= FP32_SCORE_TOL and 'fp32' in row['reference']:
                problems.append(
                    f'{row["model"]} {row["variant"]}: scores within {diffs[0]:.1e} of {row["reference"]}, '
                    f'inside fp32 tolerance: the row did not run in {r["dtype"]}'
                )
        if row['cudagraph_skips'] is not None:
            row['judged'].append('CUDA graphs')
            if not row['graph_launches']:  # None (not profiled) or 0
                problems.append(
                    f'{row["model"]} {row["variant"]}: no CUDA graph replayed in the profiled call '
                    f'(graph launches: {row["graph_launches"]}; inductor skipped {row["cudagraph_skips"]} of '
                    f'{row["graphs"]} graphs); the row ran without CUDA graphs'
                )
        rows.append(row)
    missing = sorted(set(expected) - {(row['model'], row['variant']) for row in rows})
    problems += [f'{model} {variant}: no row' for model, variant in missing]
    return dict(ok=not problems, problems=problems, rows=rows)


def speed_targets(eager: List[dict], graphs: List[dict], kernel: str = 'fast') -> List[dict]:
    """PiT-S's latency targets, met or not, eager and with CUDA graphs (rows of judge_benchmark)."""
    targets = []
    pit_s = bm.label(TABLE5[-1])
    for how, rows, compiled in (('eager', eager, False), ('CUDA graphs', graphs, True)):
        found = {
            dtype: next(
                (
                    r
                    for r in rows
                    if r['model'] == pit_s
                    and r['variant'] == bm.variant(dict(impl=kernel, dtype=dtype, compiled=compiled))
                ),
                {},
            )
            for dtype in TARGET_MS
        }
        ms = {dtype: r.get('median_ms') for dtype, r in found.items()}
        for dtype, limit in TARGET_MS.items():
            target = dict(
                target=f'PiT-S {dtype} <= {limit:g} ms',
                run=how,
                ms=ms[dtype],
                met=ms[dtype] is not None and ms[dtype] <= limit,
            )
            if found[dtype].get('cudagraph_skips'):  # some graphs ran without CUDA graphs
                target['run'] = f'{how}, {found[dtype]["cudagraph_skips"]} of {found[dtype]["graphs"]} graphs skipped'
            targets.append(target)
        targets.append(
            dict(
                target='PiT-S bf16 not slower than fp32',
                run=how,
                ms=[ms['bf16'], ms['fp32']],
                met=None not in ms.values() and ms['bf16'] <= ms['fp32'],
            )
        )
    return targets


def benchmark_runs(device: str, dry_run: bool) -> dict:
    """The tools/analysis/benchmark.py runs, by name: (arguments but --out, and the rows they must write).

    The dry run times PiT-S with one encoder and decoder layer on a small image, fp32 and eager only:
    it checks the script, the files and the judgement, not the detectors; a CPU may lack bf16
    instructions (emulated bf16 takes minutes), and inductor's compile of PiT-S takes a minute on 2
    cores. On the GPU 'fast' is pit-det's Triton kernel, or mmcv's CUDA kernel where mmcv has one.
    """
    pit_s = TABLE5[-1:]
    if dry_run:
        common = [
            '--device',
            device,
            '--shape',
            '64',
            '96',
            '--iters',
            '1',
            '--warmup',
            '0',
            '--no-flops',
            '--cfg-options',
            'model.encoder.num_layers=1',
            'model.decoder.num_layers=1',
        ]
        plan = {'eager': (pit_s, ['fp32'], False)}
    else:
        common = ['--device', device, '--iters', '20']
        plan = {'eager': (TABLE5, ['fp32', 'bf16'], False), 'pit_s_cuda_graphs': (pit_s, ['fp32', 'bf16'], True)}
    runs = {}
    for name, (configs, dtypes, compiled) in plan.items():
        impls = ['fast'] if compiled else ['grid_sample', 'fast']
        # One profiled call per compiled row: its cudaGraphLaunch calls show that CUDA graphs ran.
        compile_args = ['--compile', '--compile-mode', 'reduce-overhead', '--no-flops', '--profile', '3']
        compile_args = compile_args if compiled else []
        args = [*configs, '--dtype', *dtypes, '--msda-impl', *impls, *compile_args, *common]
        runs[name] = (args, expected_rows(configs, dtypes, impls, compiled))
    return runs


def check_benchmark(out: Path, device: str, dry_run: bool) -> dict:
    env = subprocess_env(dry_run)
    result = dict(
        fp32_score_tol=FP32_SCORE_TOL,
        bf16='timed only: bf16 precision is judged by the tests step, on the trained toy detector',
    )
    runs = benchmark_runs(device, dry_run)
    for name, (args, expected) in runs.items():
        path = out / f'benchmark_{name}.json'
        try:  # a run that crashes fails its own entry; the next run still runs
            proc = run(['tools/analysis/benchmark.py', *args, '--out', path], timeout=900, env=env)
            result[name] = dict(
                header=proc.stdout.splitlines()[0], **judge_benchmark(json.loads(path.read_text()), expected)
            )
        except Exception as err:
            message = f'{name}: {type(err).__name__}: {err}'
            result[name] = dict(ok=False, problems=[message], rows=[], traceback=traceback.format_exc()[-4000:])
    result['targets'] = speed_targets(result['eager']['rows'], result.get('pit_s_cuda_graphs', {}).get('rows', []))
    result['ok'] = all(result[name]['ok'] for name in runs)
    if not result['ok']:
        result['error'] = '; '.join(p for name in runs for p in result[name]['problems'])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=os.environ.get('OUT', 'work_dirs/gpu_check'), help='results folder')
    parser.add_argument('--dry-run', action='store_true', help='CPU, toy sizes, Triton by its interpreter')
    parser.add_argument('--steps', nargs='+', choices=['tests', 'benchmark'], default=['tests', 'benchmark'])
    parser.add_argument('--tests', default='tests/gpu', help='the GPU tier, or part of it (a file, a node id)')
    args = parser.parse_args()
    if args.dry_run:
        device = 'cpu'
    elif torch.cuda.is_available():
        device = 'cuda'
    else:
        sys.exit('no CUDA GPU visible (torch.cuda.is_available() is False); for the CPU rehearsal use --dry-run')
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(environment=bm.environment(device), dry_run=args.dry_run, steps={})
    steps = dict(
        tests=lambda: check_tests(out, args.dry_run, args.tests),
        benchmark=lambda: check_benchmark(out, device, args.dry_run),
    )
    results = {}
    for name in args.steps:
        t0 = time.time()
        print(f'[gpu check] {name} ...', flush=True)
        try:
            result = steps[name]()
        except Exception as err:  # recorded; the other steps still run
            result = dict(ok=False, error=f'{type(err).__name__}: {err}', traceback=traceback.format_exc()[-4000:])
        result['seconds'] = time.time() - t0
        results[name] = result
        (out / f'{name}.json').write_text(json.dumps(result, indent=2))
        summary['steps'][name] = dict(ok=result['ok'], seconds=result['seconds'])
        print(
            f'[gpu check] {name}: {"ok" if result["ok"] else "FAILED: " + result.get("error", "")} '
            f'({result["seconds"]:.0f} s)',
            flush=True,
        )
    for t in results.get('benchmark', {}).get('targets', []):
        print(f'[gpu check] target {t["target"]} ({t["run"]}): {"met" if t["met"] else "not met"}, {t["ms"]} ms')
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    print(f'[gpu check] results in {out}')
    return 0 if all(s['ok'] for s in summary['steps'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
