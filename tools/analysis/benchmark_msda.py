"""Deformable-attention kernels side by side at a Table 5 detector's shapes (400 x 667: four levels
from 50 x 84 to 7 x 11 as ResNet-50 has them, PiT-S 49 x 83 first; 8 heads, 4 points, 32 channels,
batch 2): each checked against
mmcv's pure-PyTorch function in fp64, then timed forward and forward + backward
(``pit_det/benchmark/kernels.py``).

Examples:
    python tools/analysis/benchmark_msda.py --device cuda --dtype fp32 bf16 \
        --kernels triton grid_sample mmcv-cuda-source
    python tools/analysis/benchmark_msda.py --device cpu --threads 2 --kernels cpp gather grid_sample mmcv-pytorch
"""

import argparse
import json
import sys

import torch

from pit_det.benchmark import environment
from pit_det.benchmark.kernels import MMCV_SOURCE, LEVELS_400x667, QUERIES_400x667, compare_kernels
from pit_det.benchmark.measure import describe_environment
from pit_det.errors import run_tool
from pit_det.ops import KERNELS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Deformable-attention kernels side by side')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, help='CPU threads (torch.set_num_threads)')
    parser.add_argument(
        '--kernels',
        nargs='+',
        choices=list(KERNELS) + [MMCV_SOURCE],
        help=f"default: triton, grid_sample and {MMCV_SOURCE} (mmcv's CUDA kernel built from "
        'its sources with nvcc) on a GPU; cpp, gather, grid_sample, mmcv-pytorch on CPU',
    )
    parser.add_argument('--dtype', nargs='+', choices=['fp32', 'bf16'], default=['fp32'])
    parser.add_argument('--cases', nargs='+', choices=list(QUERIES_400x667), default=list(QUERIES_400x667))
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--iters', type=int, default=50)
    parser.add_argument('--out', help='rows and environment as JSON')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith('cuda')
    kernels = args.kernels or (
        ['triton', 'grid_sample', MMCV_SOURCE] if gpu else ['cpp', 'gather', 'grid_sample', 'mmcv-pytorch']
    )
    env = environment(args.device)
    print(describe_environment(env), flush=True)
    rows = compare_kernels(
        kernels,
        args.dtype,
        {c: QUERIES_400x667[c] for c in args.cases},
        args.device,
        warmup=args.warmup,
        iters=args.iters,
    )
    print(f'{"case":<9}{"queries":>8}  {"kernel":<18}{"dtype":<6}{"fwd ms":>8}{"fwd+bwd ms":>11}  max rel diff vs fp64')
    for r in rows:
        head = f'{r["case"]:<9}{r["queries"]:>8}  {r["kernel"]:<18}{r["dtype"]:<6}'
        if 'error' in r and 'forward' not in r:
            print(head + f'  not run: {r["error"][:150]}')
            continue
        diff = max(r['max_rel_diff'].values())
        print(
            head
            + f'{r["forward"]["median_ms"]:>8.3f}{r["forward_backward"]["median_ms"]:>11.3f}  {diff:.1e}'
            + (f'  FAILED: {r["error"]}' if 'error' in r else '')
        )
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(environment=env, levels=LEVELS_400x667, batch=2, rows=rows), f, indent=2)
    # A kernel that ran and failed fails the run; mmcv's kernel that could not be built (no nvcc) does not.
    failed = [r for r in rows if 'error' in r and ('forward' in r or r['kernel'] != MMCV_SOURCE)]
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
