"""INT8 accuracy over seeds: the toy PiT-S detector trained with several seeds, each scored by
tools/test.py (PyTorch, as shipped) and, exported and quantized as a user does it, by
tools/deploy/onnx_eval.py in fp32 and INT8 in both runtimes; the APs and the INT8 drops as mean and sd.

    python tools/analysis/int8_accuracy.py                       # 3 seeds, the fused graph
    python tools/analysis/int8_accuracy.py --seeds 0 --msda grid_sample --epochs 2
    python tools/analysis/int8_accuracy.py --reuse --keep-fp32 head attention   # INT8 again, same trainings

Writes, under --work-dir, one folder per seed (checkpoint, logs, exports, results) and
int8_accuracy.{json,md} (with --keep-fp32, e.g. int8_accuracy.head+attention.{json,md}). Toy data,
random initialisation: it measures what INT8 costs a detector that learned the toy task, not COCO
accuracy.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Iterable

from pit_det.analysis.runs import ROOT, run_logged
from pit_det.datasets import make_toy_coco
from pit_det.errors import PitDetError, run_tool
from pit_det.export import GRAPHS
from pit_det_deploy import RUNTIMES
from pit_det_deploy.hardware import cpu_info
from pit_det_deploy.quantize import DEFAULT_KEEP, KEEP_FP32

CONFIG = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
COLUMNS = ['pytorch'] + [f'{precision} {runtime}' for precision in ('fp32', 'int8') for runtime in RUNTIMES]


def score_seed(seed: int, out: Path, args: argparse.Namespace) -> Dict[str, float]:
    """Trains, scores, exports, quantizes and scores again one seed (with ``--reuse``, only
    quantizes and scores INT8 again); returns AP by column."""
    ap = reused_fp32(out, args.msda) if args.reuse else train_and_score_fp32(seed, out, args)
    fp32, tag = out / f'{args.msda}.onnx', int8_tag(args.keep_fp32)
    int8 = out / f'{args.msda}.int8{tag}.onnx'
    keep = ['--keep-fp32', *(args.keep_fp32 or ['none'])] if args.keep_fp32 is not None else []
    run_logged(
        [sys.executable, 'tools/deploy/quantize.py', fp32, '--calib', f'{args.data_root}/train2017', '--out', int8]
        + ['--num-images', str(args.calib), *keep],
        out / f'quantize{tag}.log',
    )
    for runtime in RUNTIMES:
        ap[f'int8 {runtime}'] = evaluate(int8, runtime, out / f'int8{tag}_{runtime}', args.data_root)
    return ap


def int8_tag(keep) -> str:
    """'' for the quantizer's default fp32 groups, else '.head+attention' (or '.none'): the INT8
    files of each --keep-fp32 choice sit side by side in a seed's folder."""
    return '' if keep is None else '.' + ('+'.join(keep) or 'none')


def evaluate(model: Path, runtime: str, stem: Path, data: str) -> float:
    """tools/deploy/onnx_eval.py's AP of ``model`` on the toy val split (``stem``.json, its log)."""
    run_logged(
        [sys.executable, 'tools/deploy/onnx_eval.py', model, '--ann', f'{data}/annotations/instances_val2017.json']
        + ['--img-dir', f'{data}/val2017', '--runtime', runtime, '--out', f'{stem}.json'],
        stem.parent / f'eval_{stem.name}.log',
    )
    return json.loads(Path(f'{stem}.json').read_text())['bbox_mAP']


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
    ap = {'pytorch': json.loads((out / 'metrics.json').read_text())['coco/bbox_mAP']}
    fp32 = out / f'{args.msda}.onnx'
    run_logged(
        [python, 'tools/deploy/export.py', CONFIG, checkpoint, '--out', fp32, '--dynamic', '--msda', args.msda],
        out / 'export.log',
    )
    for runtime in RUNTIMES:
        ap[f'fp32 {runtime}'] = evaluate(fp32, runtime, out / f'fp32_{runtime}', data)
    return ap


def reused_fp32(out: Path, msda: str) -> Dict[str, float]:
    """The fp32 APs of an earlier run in ``out`` (tools/test.py's and the export's in each runtime).

    Raises:
        PitDetError: a file of that run is missing, or its export is another graph.
    """
    files = [out / 'metrics.json', out / f'{msda}.onnx', *(out / f'fp32_{runtime}.json' for runtime in RUNTIMES)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise PitDetError(
            f'--reuse: no earlier run of this graph in {out} ({", ".join(missing)} missing); run without --reuse'
        )
    scored = {json.loads(f.read_text()).get('model') for f in files[2:]}
    if scored != {str(files[1])}:
        raise PitDetError(f'--reuse: the fp32 scores in {out} are of {sorted(map(str, scored))}, not of {files[1]}')
    ap = {'pytorch': json.loads(files[0].read_text())['coco/bbox_mAP']}
    for runtime, result in zip(RUNTIMES, files[2:]):
        ap[f'fp32 {runtime}'] = json.loads(result.read_text())['bbox_mAP']
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
    parser.add_argument(
        '--keep-fp32',
        nargs='+',
        metavar='GROUP',
        help='matmul groups left fp32 in INT8 (tools/deploy/quantize.py --keep-fp32; default: its default)',
    )
    parser.add_argument(
        '--reuse',
        action='store_true',
        help="each seed's training, export and fp32 scores from an earlier run in --work-dir: quantize and score "
        'INT8 only (e.g. another --keep-fp32)',
    )
    parser.add_argument('--work-dir', default='work_dirs/int8_accuracy')
    parser.add_argument('--data-root', default='data/toy_coco')
    args = parser.parse_args(argv)
    if args.keep_fp32 is not None:
        args.keep_fp32 = [g for g in args.keep_fp32 if g != 'none']
        unknown = sorted(set(args.keep_fp32) - set(KEEP_FP32))
        if unknown:
            raise PitDetError(f'--keep-fp32 {", ".join(unknown)}: choose from {", ".join([*KEEP_FP32, "none"])}')
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
    groups = list(DEFAULT_KEEP) if args.keep_fp32 is None else args.keep_fp32
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
    tag = int8_tag(args.keep_fp32)
    (work / f'int8_accuracy{tag}.json').write_text(json.dumps(record, indent=2))
    (work / f'int8_accuracy{tag}.md').write_text(table)
    print(table)


if __name__ == '__main__':
    sys.exit(run_tool(main))
