"""Single-image latency, memory, parameters and FLOPs of detectors, side by side (PiT Table 5).

Each config is built with seeded random weights and run on one random-noise image (400 x 667 by
default, batch 1). For every precision (``--dtype``, ``--bf16``), deformable-attention kernel
(``--msda-impl``; on CPU mmcv's stock one and pit-det's fast one by default) and, with
``--compile``, eager and ``torch.compile``d ``test_step``, it times ``test_step`` (and the
backbone alone, eager), records peak memory, and compares the detections with the detector's
first variant; each row names the kernel that ran (e.g. 'fast' is 'cpp' on CPU, 'triton' or
'mmcv-cuda' on a GPU). ``--profile`` adds where the time goes (stages, top ops, and on a GPU kernel
launches and synchronisations), ``--train-throughput`` the training step's images/s. The 2048^3
matmul rate of each precision is measured in the same run. Counting conventions are in
``pit_det/benchmark/measure.py``; the method in ``pit_det/benchmark/runner.py``, ``profiling.py``
and ``training.py``.

Examples:
    python tools/analysis/benchmark.py configs/deformable_detr_{r50,vit_s,pit_s}.py --threads 2
    python tools/analysis/benchmark.py configs/deformable_detr_{r50,vit_s,pit_s}.py --threads 2 \
        --msda-impl fast --bf16 --compile               # fp32 / bf16 x eager / inductor
    python tools/analysis/benchmark.py configs/deformable_detr_pit_s.py --threads 2 --msda-impl fast \
        --compile --runtimes onnxruntime openvino --msda fused grid_sample gather --int8   # every runtime row
    python tools/analysis/benchmark.py configs/deformable_detr_pit_s.py --threads 2 --msda-impl fast \
        --runtimes onnxruntime openvino --msda fused --int8 head head,attention   # INT8 by fp32 groups
    python tools/analysis/benchmark.py configs/deformable_detr_pit_s.py --device cuda --bf16 \
        --compile --compile-mode reduce-overhead        # CUDA graphs
    python tools/analysis/benchmark.py configs/deformable_detr_{r50,vit_s,pit_s}.py --device cuda \
        --msda-impl triton fast --bf16 --compile --compile-mode reduce-overhead --profile \
        --train-throughput                              # everything a GPU run answers (docs/benchmark.md#gpu)
"""

import argparse
import json
import os
import os.path as osp
import sys
import warnings
from typing import List, Optional, Tuple

import torch
from tqdm import tqdm

from pit_det import benchmark as bm
from pit_det.benchmark import Settings, benchmark
from pit_det.benchmark.report import plot, print_table, print_training
from pit_det.config import ConfigOptions
from pit_det.errors import run_tool
from pit_det.export import GRAPHS
from pit_det.ops import IMPLS
from pit_det.precision import check_precision
from pit_det_deploy import RUNTIMES, DeployError
from pit_det_deploy.hardware import default_device, native_dtypes
from pit_det_deploy.outputs import output_file
from pit_det_deploy.quantize import DEFAULT_KEEP, keep_groups

# Noise from mmdet 3.3 / mmengine 0.10.7 internals, nothing this tool can change.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
warnings.filterwarnings('ignore', message='torch.meshgrid')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Latency / params / FLOPs of detectors, side by side')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument(
        '--shape',
        nargs=2,
        type=int,
        default=[400, 667],
        metavar=('H', 'W'),
        help='input image size (default: 400 667, half-resolution COCO)',
    )
    parser.add_argument('--device', default=None, help="'cpu' or 'cuda' (default: cuda if available)")
    parser.add_argument('--threads', type=int, help='CPU threads (torch.set_num_threads)')
    parser.add_argument(
        '--dtype',
        nargs='+',
        choices=list(bm.DTYPES),
        default=['fp32'],
        help='precisions to measure, in this order: fp32, or autocast to bf16 / fp16 (default: fp32)',
    )
    parser.add_argument('--bf16', action='store_true', help='shorthand for --dtype fp32 bf16 (side by side)')
    parser.add_argument('--fp16', action='store_true', help='shorthand for --dtype fp32 fp16 (side by side)')
    parser.add_argument(
        '--msda-impl',
        nargs='+',
        choices=list(IMPLS),
        default=['stock', 'fast'],
        help='deformable-attention kernels to measure, in this order (default: stock fast)',
    )
    parser.add_argument(
        '--compile',
        action='store_true',
        help='also time torch.compile(test_step) (inductor) beside eager; compile time reported apart',
    )
    parser.add_argument(
        '--compile-mode',
        default='default',
        choices=['default', 'reduce-overhead', 'max-autotune'],
        help="torch.compile mode ('reduce-overhead': CUDA graphs on GPU)",
    )
    parser.add_argument(
        '--runtimes',
        nargs='+',
        choices=list(RUNTIMES),
        default=[],
        help='also export each detector as tools/deploy/export.py does and time it in these CPU runtimes',
    )
    parser.add_argument('--onnx', action='store_true', help='shorthand for --runtimes onnxruntime')
    parser.add_argument(
        '--msda',
        nargs='+',
        choices=sorted(GRAPHS),
        default=['grid_sample'],
        help='--runtimes: the exported graphs to time, named as tools/deploy/export.py --msda names '
        'them (default grid_sample)',
    )
    parser.add_argument(
        '--int8',
        nargs='*',
        default=None,
        metavar='GROUPS',
        help='--runtimes: also the first graph in INT8 (tools/deploy/quantize.py), calibrated on noise: speed only; '
        'one row per GROUPS, the matmul groups left fp32 (--keep-fp32 joined by commas, e.g. head,attention, or '
        f'none; default: {",".join(DEFAULT_KEEP)})',
    )
    parser.add_argument('--warmup', type=int, default=3, help='untimed calls first (default: 3)')
    parser.add_argument('--iters', type=int, default=20, help='timed calls (default: 20)')
    parser.add_argument('--no-flops', action='store_true', help='skip the FLOP count')
    parser.add_argument(
        '--keep-freed-memory',
        action='store_true',
        help='glibc: reuse freed memory instead of unmapping it (no page faults on large temporaries)',
    )
    parser.add_argument(
        '--profile',
        type=int,
        nargs='?',
        const=12,
        default=0,
        metavar='N',
        help='also where the time goes: wall time per stage (eager rows), the N ops taking most '
        "time (default 12; for --runtimes rows by the runtime's own profiler) and, on CUDA, kernel "
        'launches and synchronisations per image',
    )
    parser.add_argument(
        '--train-throughput',
        action='store_true',
        help="also images/s of each config's training step (batch, pipeline and optim wrapper of "
        'the config; synthetic photos) in each --dtype, and 50 COCO epochs on 8 GPUs at that rate',
    )
    parser.add_argument('--out', default='work_dirs/benchmark_latency.json', help='JSON results file')
    parser.add_argument(
        '--plot',
        nargs='?',
        const='',
        default=None,
        metavar='PNG',
        help='draw latency against parameters and FLOPs (default file: next to --out)',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=ConfigOptions,
        default={},
        metavar='KEY=VALUE',
        help='config overrides applied to every config, e.g. model.num_queries=100',
    )
    args = parser.parse_args(argv)
    for flag in ('bf16', 'fp16'):
        if getattr(args, flag):
            args.dtype = ['fp32', flag] if args.dtype == ['fp32'] else [*args.dtype, flag]
    args.dtype = list(dict.fromkeys(args.dtype))
    if args.onnx and 'onnxruntime' not in args.runtimes:
        args.runtimes = ['onnxruntime', *args.runtimes]
    args.int8 = int8_rows(parser, args.int8)
    check_arguments(parser, args)
    return args


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What would fail only after minutes of timing: configs, counts and the files to write."""
    counts = (('--iters', args.iters, 1), ('--warmup', args.warmup, 0), ('--threads', args.threads, 1))
    for name, value, least in counts:
        if value is not None and value < least:
            parser.error(f'{name} {value}: at least {least}')
    if min(args.shape) < 1:
        parser.error(f'--shape {args.shape[0]} {args.shape[1]}: both sides at least 1 pixel')
    missing = [c for c in args.configs if not osp.isfile(c)]
    if missing:
        parser.error(f'no such config: {", ".join(missing)}')
    try:
        output_file(args.out, args.configs)
        if args.plot:
            output_file(args.plot, [args.out, *args.configs], flag='--plot')
    except DeployError as err:
        parser.error(str(err))
    if args.plot and osp.splitext(args.plot)[1].lower() not in ('.png', '.pdf', '.svg', '.jpg'):
        parser.error(f'--plot {args.plot}: name a .png, .pdf, .svg or .jpg file')


def int8_rows(parser: argparse.ArgumentParser, values: Optional[List[str]]) -> List[Tuple[str, ...]]:
    """--int8's values as the fp32 groups of each INT8 row (``pit_det_deploy.quantize.keep_groups``:
    'attention,head' is 'head,attention'), repeats dropped; none given: the quantizer's default."""
    if values is None:
        return []
    try:
        rows = [keep_groups(v.split(','), option='--int8') for v in values] or [DEFAULT_KEEP]
    except DeployError as err:
        parser.error(str(err))
    return list(dict.fromkeys(rows))


def check_dtypes(device: str, dtypes: list) -> None:
    """Low precisions run only where the device has them natively (``pit_det.precision``)."""
    check_precision(device, dtypes, [osp.basename(sys.executable), *sys.argv])


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    check_dtypes(device, args.dtype)
    bm.ieee_fp32(device)
    env = bm.environment(device)
    env['keep_freed_memory'] = bm.keep_freed_memory() if args.keep_freed_memory else False
    env.update(
        dtypes=args.dtype,
        shape=args.shape,
        warmup=args.warmup,
        iters=args.iters,
        compile_mode=args.compile_mode if args.compile else None,
        command=' '.join([osp.basename(sys.executable), *sys.argv]),
    )
    # The practical peak of each precision, measured in this run beside the models; not of one emulated
    # by request (PIT_DET_ALLOW_EMULATED), whose 2048^3 matmuls take minutes to say what is known already.
    emulated = [dtype for dtype in args.dtype if dtype not in native_dtypes(device)]
    env['matmul_tflops'] = {
        dtype: bm.matmul_rate(device, dtype) / 1e12 for dtype in args.dtype if dtype not in emulated
    }
    print(bm.describe_environment(env))
    print(
        f'image {args.shape[0]} x {args.shape[1]}, 2048^3 matmul '
        + ', '.join(
            [f'{dtype} {rate * 1e3:.0f} GFLOP/s' for dtype, rate in env['matmul_tflops'].items()]
            + [f'{dtype} emulated, not measured' for dtype in emulated]
        )
        + (', freed memory kept (mallopt)' if env['keep_freed_memory'] else ''),
        flush=True,
    )
    settings = Settings(
        dtypes=args.dtype,
        impls=args.msda_impl,
        shape=tuple(args.shape),
        device=device,
        warmup=args.warmup,
        iters=args.iters,
        compile=args.compile,
        compile_mode=args.compile_mode,
        runtimes=args.runtimes,
        graphs=args.msda,
        int8=args.int8,
        flops=not args.no_flops,
        profile=args.profile,
        train=args.train_throughput,
        cfg_options=args.cfg_options,
    )
    with tqdm(
        total=settings.calls(len(args.configs)), desc='timing', unit='call', disable=None, file=sys.stderr
    ) as bar:

        def progress(what: str, calls: int) -> None:
            bar.set_postfix_str(what, refresh=False)
            bar.update(calls)

        rows = benchmark(args.configs, settings, env, progress)
        training = bm.benchmark_training(args.configs, settings, progress)
    return dict(
        environment=env,
        results=[r for r in rows if 'error' not in r],
        failed=[r for r in rows if 'error' in r],
        training=training,
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = run(args)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:  # first: a long GPU run keeps its numbers whatever happens next
        json.dump(report, f, indent=2)
    print_table(report)
    if report['training']:
        print_training(report)
    print(f'results: {args.out}')
    if args.plot is not None:
        path = args.plot or osp.splitext(args.out)[0] + '.png'
        plot(report, path)
        print(f'plot: {path}')
    return report


if __name__ == '__main__':
    sys.exit(run_tool(main))
