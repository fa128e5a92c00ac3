"""INT8 accuracy over seeds: the toy PiT-S detector trained with several seeds, each scored by
tools/test.py (PyTorch, as shipped) and, exported and quantized as a user does it, by
tools/deploy/onnx_eval.py in fp32 and INT8 in both runtimes; the APs and the INT8 drops as mean and sd.

    python tools/analysis/int8_accuracy.py                       # 3 seeds, the fused graph
    python tools/analysis/int8_accuracy.py --seeds 0 --msda grid_sample --epochs 2
    python tools/analysis/int8_accuracy.py --reuse --keep-fp32 head attention   # INT8 again, same trainings

Writes, under --work-dir, one folder per seed (checkpoint, logs, exports, results) and
int8_accuracy.fused.int8.{json,md} (with --keep-fp32 head attention:
int8_accuracy.fused.int8.head+attention.{json,md}). Toy data, random initialisation: it measures
what INT8 costs a detector that learned the toy task, not COCO accuracy.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, Tuple

from pit_det.analysis.runs import ROOT, run_logged
from pit_det.datasets import make_toy_coco
from pit_det.errors import PitDetError, run_tool
from pit_det.export import GRAPHS
from pit_det_deploy import RUNTIMES
from pit_det_deploy.hardware import cpu_info
from pit_det_deploy.quantize import DEFAULT_KEEP, add_keep_fp32_argument, keep_groups

CONFIG = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
COLUMNS = ['pytorch'] + [f'{precision} {runtime}' for precision in ('fp32', 'int8') for runtime in RUNTIMES]


def score_seed(seed: int, out: Path, args: argparse.Namespace) -> Dict[str, float]:
    """Trains, scores, exports, quantizes and scores again one seed (with ``--reuse``, only
    quantizes and scores INT8 again); returns AP by column. Every file of a graph starts with its
    name (``fused.``), and an INT8 file with its fp32 groups too where they are not the default
    (:func:`int8_name`)."""
    ap = reused_fp32(out, args.msda) if args.reuse else train_and_score_fp32(seed, out, args)
    int8 = int8_name(args.msda, args.keep_fp32)
    fp32, calib, keep = out / f'{args.msda}.onnx', f'{args.data_root}/train2017', args.keep_fp32 or ['none']
    run_logged(
        [sys.executable, 'tools/deploy/quantize.py', fp32, '--calib', calib, '--out', out / f'{int8}.onnx']
        + ['--num-images', str(args.calib), '--keep-fp32', *keep],
        out / f'{int8}.quantize.log',
    )
    for runtime in RUNTIMES:
        ap[f'int8 {runtime}'] = evaluate(out / f'{int8}.onnx', runtime, out / f'{int8}_{runtime}', args.data_root)
    return ap


def int8_name(graph: str, keep: Tuple[str, ...]) -> str:
    """'fused.int8' for the quantizer's default fp32 groups, else e.g. 'fused.int8.head+attention' or
    'fused.int8.none': the INT8 files of each --keep-fp32 choice sit side by side in a seed's folder."""
    return f'{graph}.int8' + ('' if keep == DEFAULT_KEEP else '.' + ('+'.join(keep) or 'none'))


def evaluate(model: Path, runtime: str, stem: Path, data: str) -> float:
    """tools/deploy/onnx_eval.py's AP of ``model`` on the toy val split (``stem``.json, ``stem``.log)."""
    run_logged(
        [sys.executable, 'tools/deploy/onnx_eval.py', model, '--ann', f'{data}/annotations/instances_val2017.json']
        + ['--img-dir', f'{data}/val2017', '--runtime', runtime, '--out', f'{stem}.json'],
        Path(f'{stem}.log'),
    )
    return read(Path(f'{stem}.json'), 'bbox_mAP')


def read(path: Path, *keys: str):
    """The value of each of ``keys`` in the JSON file ``path`` (one key: its value; more: a tuple), read once.

    Raises:
        PitDetError: the file is no JSON object with those keys (named).
    """
    try:
        data = json.loads(path.read_text())
        values = tuple(data[key] for key in keys)
    except (ValueError, KeyError, TypeError) as err:
        raise PitDetError(f'{path}: no {" / ".join(map(repr, keys))} in it ({type(err).__name__}: {err})') from None
    return values[0] if len(keys) == 1 else values


def train_and_score_fp32(seed: int, out: Path, args: argparse.Namespace) -> Dict[str, float]:
    """Trains one seed, scores it by tools/test.py, exports it and scores the export in fp32."""
    python, data = sys.executable, args.data_root
    schedule = [f'train_cfg.max_epochs={args.epochs}'] if args.epochs else []
    run_logged(
        [python, 'tools/train.py', CONFIG, '--work-dir', out, '--data-root', data, '--cfg-options']
        + [f'randomness.seed={seed}', *schedule],
        out / 'train.log',
    )
    checkpoint = (out / 'last_checkpoint').read_text().strip()
    run_logged(
        [python, 'tools/test.py', CONFIG, checkpoint, '--work-dir', out / 'test', '--out-dir', out]
        + ['--data-root', data],
        out / 'test.log',
    )
    ap = {'pytorch': read(out / 'metrics.json', 'coco/bbox_mAP')}
    fp32 = out / f'{args.msda}.onnx'
    run_logged(
        [python, 'tools/deploy/export.py', CONFIG, checkpoint, '--out', fp32, '--dynamic', '--msda', args.msda],
        out / f'{args.msda}.export.log',
    )
    for runtime in RUNTIMES:
        ap[f'fp32 {runtime}'] = evaluate(fp32, runtime, out / f'{args.msda}.fp32_{runtime}', data)
    return ap


def reused_fp32(out: Path, graph: str) -> Dict[str, float]:
    """The fp32 APs of an earlier run in ``out``: tools/test.py's, and the ``graph`` export's in each
    runtime.

    Raises:
        PitDetError: a file of that run is missing, made before the file it derives from (the last
            training's checkpoint, then the export), or of another model.
    """
    fp32 = out / f'{graph}.onnx'
    scores = [out / f'{graph}.fp32_{runtime}.json' for runtime in RUNTIMES]
    files = [out / 'last_checkpoint', out / 'metrics.json', fp32, *scores]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise PitDetError(
            f'--reuse: no earlier run of the {graph} graph in {out} ({", ".join(missing)} missing); run without --reuse'
        )
    checkpoint = Path((out / 'last_checkpoint').read_text().strip())
    for source, made in [(checkpoint, out / 'metrics.json'), (checkpoint, fp32), *((fp32, f) for f in scores)]:
        if not source.is_file() or made.stat().st_mtime < source.stat().st_mtime:
            raise PitDetError(f'--reuse: {made} is older than {source} (or it is gone); run without --reuse')
    ap = {'pytorch': read(out / 'metrics.json', 'coco/bbox_mAP')}
    for runtime, score in zip(RUNTIMES, scores):
        model, ap[f'fp32 {runtime}'] = read(score, 'model', 'bbox_mAP')
        if Path(str(model)).parts[-2:] != fp32.parts[-2:]:  # seed folder and file (moved work dirs too)
            raise PitDetError(f'--reuse: {score} scores {model}, not {fp32}; run without --reuse')
    return ap


def mean_sd(values: Iterable[float]) -> str:
    """'0.317 ± 0.004': mean and sample sd (nan for one value)."""
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else float('nan')
    return f'{statistics.mean(values):.3f} ± {sd:.3f}'


def to_markdown(runs: Dict[int, Dict[str, float]], machine: str, graph: str) -> str:
    """The table of APs by seed and column, their mean ± sd, the INT8 drops and the fp32 gap."""
    lines = [
        f'| toy val AP, {graph} graph | ' + ' | '.join(COLUMNS) + ' |',
        '|---' * (len(COLUMNS) + 1) + '|',
    ]
    for seed, ap in runs.items():
        lines.append(f'| seed {seed} | ' + ' | '.join(f'{ap[c]:.3f}' for c in COLUMNS) + ' |')
    lines.append('| mean ± sd | ' + ' | '.join(mean_sd(ap[c] for ap in runs.values()) for c in COLUMNS) + ' |')
    for runtime in RUNTIMES:
        drops = [ap[f'fp32 {runtime}'] - ap[f'int8 {runtime}'] for ap in runs.values()]
        lines.append(
            f'\nINT8 AP drop in {runtime}: {mean_sd(drops)} (fp32 minus INT8, per seed: '
            + ', '.join(f'{d:+.3f}' for d in drops)
            + ')'
        )
    gaps = [abs(ap['pytorch'] - ap[f'fp32 {r}']) for ap in runs.values() for r in RUNTIMES]
    lines.append(f'\n|tools/test.py - onnx_eval fp32|: at most {max(gaps):.4f} over the seeds and runtimes.')
    lines.append(f'\n{len(runs)} seeds on {machine}.')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2], help='one training per seed')
    parser.add_argument(
        '--msda', choices=sorted(GRAPHS), default='fused', help='the graph (tools/deploy/export.py --msda)'
    )
    parser.add_argument('--calib', type=int, default=32, help='calibration images (tools/deploy/quantize.py)')
    parser.add_argument('--epochs', type=int, help='override the toy schedule length')
    add_keep_fp32_argument(parser, 'matmul groups left fp32 in INT8 (tools/deploy/quantize.py --keep-fp32)')
    parser.add_argument(
        '--reuse',
        action='store_true',
        help="each seed's training, export and fp32 scores from an earlier run in --work-dir: quantize and score "
        'INT8 only (e.g. another --keep-fp32)',
    )
    parser.add_argument('--work-dir', default='work_dirs/int8_accuracy')
    parser.add_argument('--data-root', default='data/toy_coco')
    args = parser.parse_args(argv)
    args.keep_fp32 = keep_groups(args.keep_fp32)
    if args.reuse and args.epochs is not None:
        raise PitDetError('--reuse trains nothing: --epochs applies to a run without --reuse')
    if args.epochs is not None and args.epochs < 1:
        raise PitDetError(f'--epochs {args.epochs}: train at least one epoch')
    work = (ROOT / args.work_dir).resolve()
    make_toy_coco(ROOT / args.data_root)
    runs = {}
    for seed in args.seeds:
        out = work / f'seed_{seed}'
        out.mkdir(parents=True, exist_ok=True)
        steps = (
            'quantize, score (reusing the training and export)'
            if args.reuse
            else 'train, score, export, quantize, score'
        )
        print(f'[seed {seed}] {args.msda} graph: {steps}', flush=True)
        runs[seed] = score_seed(seed, out, args)
        print(f'[seed {seed}] ' + ', '.join(f'{c} {runs[seed][c]:.3f}' for c in COLUMNS), flush=True)
    machine = f'{cpu_info().describe()}, every tool at its default threads'
    groups = list(args.keep_fp32)
    table = (
        to_markdown(runs, machine, args.msda)
        + f'\nINT8 with these matmul groups fp32: {", ".join(groups) or "none"}.\n'
    )
    record = dict(
        machine=machine,
        date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        command=' '.join(['python', 'tools/analysis/int8_accuracy.py', *(sys.argv[1:] if argv is None else argv)]),
        graph=args.msda,
        int8_fp32_groups=groups,
        runs=runs,
    )
    name = 'int8_accuracy.' + int8_name(args.msda, args.keep_fp32)
    (work / f'{name}.json').write_text(json.dumps(record, indent=2))
    (work / f'{name}.md').write_text(table)
    print(table)


if __name__ == '__main__':
    sys.exit(run_tool(main))
