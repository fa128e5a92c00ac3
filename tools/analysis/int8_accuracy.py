"""INT8 accuracy over seeds: the toy PiT-S detector trained with several seeds, each scored by
tools/test.py (PyTorch, as shipped) and, exported and quantized as a user does it, by
tools/deploy/onnx_eval.py in fp32 and INT8 in both runtimes; the APs and the INT8 drops as mean and sd.

    python tools/analysis/int8_accuracy.py                       # 3 seeds, the fused graph
    python tools/analysis/int8_accuracy.py --seeds 0 --msda grid_sample --epochs 2

Writes, under --work-dir, one folder per seed (checkpoint, logs, exports, results) and
int8_accuracy.{json,md}. Toy data, random initialisation: it measures what INT8 costs a detector
that learned the toy task, not COCO accuracy.
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

CONFIG = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
COLUMNS = ['pytorch'] + [f'{precision} {runtime}' for precision in ('fp32', 'int8') for runtime in RUNTIMES]


def score_seed(seed: int, out: Path, args: argparse.Namespace) -> Dict[str, float]:
    """Trains, scores, exports, quantizes and scores again one seed; returns AP by column."""
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
    fp32, int8 = out / f'{args.msda}.onnx', out / f'{args.msda}.int8.onnx'
    run_logged(
        [python, 'tools/deploy/export.py', CONFIG, checkpoint, '--out', fp32, '--dynamic', '--msda', args.msda],
        out / 'export.log',
    )
    run_logged(
        [python, 'tools/deploy/quantize.py', fp32, '--calib', f'{data}/train2017', '--out', int8]
        + ['--num-images', str(args.calib)],
        out / 'quantize.log',
    )
    for precision, model in (('fp32', fp32), ('int8', int8)):
        for runtime in RUNTIMES:
            result = out / f'{precision}_{runtime}.json'
            run_logged(
                [python, 'tools/deploy/onnx_eval.py', model, '--ann', f'{data}/annotations/instances_val2017.json']
                + ['--img-dir', f'{data}/val2017', '--runtime', runtime, '--out', result],
                out / f'eval_{precision}_{runtime}.log',
            )
            ap[f'{precision} {runtime}'] = json.loads(result.read_text())['bbox_mAP']
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
    parser.add_argument('--work-dir', default='work_dirs/int8_accuracy')
    parser.add_argument('--data-root', default='data/toy_coco')
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise PitDetError(f'--epochs {args.epochs}: train at least one epoch')
    work = (ROOT / args.work_dir).resolve()
    make_toy_coco(ROOT / args.data_root)
    runs = {}
    for seed in args.seeds:
        out = work / f'seed_{seed}'
        out.mkdir(parents=True, exist_ok=True)
        print(f'[seed {seed}] train, score, export ({args.msda}), quantize, score', flush=True)
        runs[seed] = score_seed(seed, out, args)
        print(f'[seed {seed}] ' + ', '.join(f'{c} {runs[seed][c]:.3f}' for c in COLUMNS), flush=True)
    machine = f'{cpu_info().describe()}, every tool at its default threads'
    table = to_markdown(runs, machine, args.msda)
    record = dict(
        machine=machine,
        date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        command=' '.join(['python', 'tools/analysis/int8_accuracy.py', *(sys.argv[1:] if argv is None else argv)]),
        graph=args.msda,
        runs=runs,
    )
    (work / 'int8_accuracy.json').write_text(json.dumps(record, indent=2))
    (work / 'int8_accuracy.md').write_text(table)
    print(table)


if __name__ == '__main__':
    sys.exit(run_tool(main))
