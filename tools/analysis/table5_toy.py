"""Table 5 on the toy set: ResNet-50, ViT-S, ViT-S pyramid and PiT-S Deformable DETR, each trained
from random weights with one schedule (configs/toy/*_toy.py) and several seeds, scored on a held-out
split, timed, and put side by side by tools/analysis/table5.py.

    python tools/analysis/table5_toy.py    # what `make table5-toy` runs: 3 seeds x 4 detectors
    python tools/analysis/table5_toy.py --detectors pit_s r50 --epochs 2 --seeds 0

The 12 runs of `make table5-toy` took 4.6 to 21 min each on 2 cores of an Intel Xeon (AVX-512),
other work sharing the cores during some of them (docs/analysis.md).

This is random weights on synthetic shapes, not the paper's ImageNet-pretrained COCO setting: it
shows that every detector learns under the same recipe and how they compare there. The recipe was
tuned on the toy val split, so the table scores a test split that tuning never saw
(``make_toy_coco(num_test=...)``), and gives each detector's mean and sd over the seeds, with the
gaps that exceed that noise. Writes, under --work-dir, one folder per detector and seed
(checkpoint, metrics.json, logs), benchmark.json (params and latency of the toy detectors at
128 x 128) and table5.{md,csv,png}, and prints how long each training took on which processor.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from pit_det.analysis.runs import held_out, run_logged
from pit_det.datasets import make_toy_coco
from pit_det.errors import PitDetError, run_tool
from pit_det_deploy.hardware import default_device, device_name

ROOT = Path(__file__).resolve().parents[2]
DETECTORS = ('r50', 'vit_s', 'vit_s_pyramid', 'pit_s')


def config(name: str) -> Path:
    return ROOT / f'configs/toy/deformable_detr_{name}_toy.py'


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--detectors', nargs='+', choices=DETECTORS, default=list(DETECTORS))
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2], help='one training per detector and seed')
    parser.add_argument('--num-test', type=int, default=200, help='images of the held-out test split scored')
    parser.add_argument('--work-dir', default='work_dirs/table5_toy')
    parser.add_argument('--data-root', default='data/toy_coco')
    parser.add_argument('--epochs', type=int, help='override the toy schedule length (every detector alike)')
    args = parser.parse_args(argv)
    if args.num_test < 1:
        raise PitDetError(f'--num-test {args.num_test}: the table needs a held-out split of at least one image')
    work = (ROOT / args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    make_toy_coco(ROOT / args.data_root, num_test=args.num_test)
    schedule = []
    if args.epochs:
        schedule = [
            f'train_cfg.max_epochs={args.epochs}',
            f'train_cfg.val_interval={args.epochs}',
            f'param_scheduler.0.end={args.epochs}',
            f'param_scheduler.0.milestones=[{max(args.epochs - 1, 1)}]',
        ]
    times = {}
    for seed in args.seeds:  # every detector on one seed before the next seed
        for name in args.detectors:
            out = work / name / f'seed_{seed}'
            out.mkdir(parents=True, exist_ok=True)
            print(f'[{name}, seed {seed}] training from random weights', flush=True)
            train_s = run_logged(
                [
                    sys.executable,
                    'tools/train.py',
                    config(name),
                    '--work-dir',
                    out,
                    '--data-root',
                    args.data_root,
                    '--cfg-options',
                    f'randomness.seed={seed}',
                    *schedule,
                ],
                out / 'train.log',
            )
            checkpoint = (out / 'last_checkpoint').read_text().strip()
            test_s = run_logged(
                [
                    sys.executable,
                    'tools/test.py',
                    config(name),
                    checkpoint,
                    '--work-dir',
                    out / 'test',
                    '--out-dir',
                    out,
                    '--data-root',
                    args.data_root,
                    '--cfg-options',
                    *held_out(args.data_root),
                ],
                out / 'test.log',
            )
            ap = json.loads((out / 'metrics.json').read_text())['coco/bbox_mAP']
            times.setdefault(name, {})[seed] = dict(train_s=train_s, test_s=test_s, ap=ap)
            print(
                f'[{name}, seed {seed}] test AP {ap:.3f}; training {train_s / 60:.1f} min, evaluation {test_s:.0f} s',
                flush=True,
            )
    print('[benchmark] params and latency of the toy detectors', flush=True)
    run_logged(
        [
            sys.executable,
            'tools/analysis/benchmark.py',
            *[config(n) for n in args.detectors],
            '--shape',
            '128',
            '128',
            '--msda-impl',
            'fast',
            '--iters',
            '20',
            '--out',
            work / 'benchmark.json',
        ],
        work / 'benchmark.log',
    )
    run_logged(
        [
            sys.executable,
            'tools/analysis/table5.py',
            *[f'{n}={work / n}' for n in args.detectors],
            '--benchmark',
            work / 'benchmark.json',
            '--out',
            work / 'table5',
            '--no-paper',
            '--note',
            f'synthetic toy set, random initialisation, held-out test split ({args.num_test} images), '
            f'seeds {" ".join(map(str, args.seeds))}',
        ],
        work / 'table5.log',
    )
    machine = f'{device_name(default_device())}, {torch.get_num_threads()} threads'
    (work / 'times.json').write_text(json.dumps(dict(machine=machine, runs=times), indent=2))
    print((work / 'table5.md').read_text())
    print(f'on {machine}:')
    for name, runs in times.items():
        for seed, t in runs.items():
            print(f'  {name:<14} seed {seed}: training {t["train_s"] / 60:5.1f} min, evaluation {t["test_s"]:4.0f} s')
    print(f'written: {work}/table5.md, .csv, .png; times.json; one folder per detector')


if __name__ == '__main__':
    sys.exit(run_tool(main))
