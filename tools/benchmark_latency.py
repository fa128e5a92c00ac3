"""Single-image latency, memory, parameters and FLOPs of detectors, side by side (PiT Table 5).

Each config is built with seeded random weights and run on one random-noise image (400 x 667 by
default, batch 1). For every deformable-attention kernel asked for (``--msda-impl``; on CPU both
mmcv's stock one and pit-det's fast one by default) it times ``test_step`` and the backbone
alone, records peak memory, and checks that the detections equal the first kernel's. Counting
conventions are in ``pit_det/benchmark.py``.

Examples:
    python tools/benchmark_latency.py configs/deformable_detr_{r50,vit_s,pit_s}.py --threads 2
    python tools/benchmark_latency.py configs/deformable_detr_pit_s.py --device cuda --bf16 --plot
"""
import argparse
import json
import os
import os.path as osp
import sys
import warnings

import torch
from mmengine.config import DictAction
from tqdm import tqdm

from pit_det import benchmark as bm
from pit_det.errors import run_tool
from pit_det.models import set_msda_impl
from pit_det.ops import resolve_impl

# Noise from mmdet 3.3 / mmengine 0.10.7 internals, nothing this tool can change.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
warnings.filterwarnings('ignore', message='torch.meshgrid')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Latency / params / FLOPs of detectors, side by side')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument('--shape', nargs=2, type=int, default=[400, 667], metavar=('H', 'W'),
                        help='input image size (default: 400 667, half-resolution COCO)')
    parser.add_argument('--device', default=None, help="'cpu' or 'cuda' (default: cuda if available)")
    parser.add_argument('--threads', type=int, help='CPU threads (torch.set_num_threads)')
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument('--fp16', action='store_true', help='autocast to float16')
    precision.add_argument('--bf16', action='store_true', help='autocast to bfloat16')
    parser.add_argument('--msda-impl', nargs='+', choices=['stock', 'fast', 'auto'], default=['stock', 'fast'],
                        help='deformable-attention kernels to measure, in this order (default: stock fast)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed calls first (default: 3)')
    parser.add_argument('--iters', type=int, default=20, help='timed calls (default: 20)')
    parser.add_argument('--no-flops', action='store_true', help='skip the FLOP count')
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help='glibc: reuse freed memory instead of unmapping it (no page faults on large temporaries)')
    parser.add_argument('--profile', type=int, default=0, metavar='N', help='also record the N ops taking most time')
    parser.add_argument('--out', default='work_dirs/benchmark_latency.json', help='JSON results file')
    parser.add_argument('--plot', nargs='?', const='', default=None, metavar='PNG',
                        help='draw latency against parameters and FLOPs (default file: next to --out)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, metavar='KEY=VALUE',
                        help='config overrides applied to every config, e.g. model.num_queries=100')
    return parser.parse_args(argv)


def label(config: str) -> str:
    return osp.splitext(osp.basename(config))[0].replace('deformable_detr_', '')


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    dtype = 'bf16' if args.bf16 else 'fp16' if args.fp16 else 'fp32'
    if dtype == 'fp16' and not device.startswith('cuda'):
        # CPUs without native fp16 arithmetic emulate it: PiT-S at 160 x 208 ran > 10 minutes here.
        raise SystemExit('--fp16 is for GPUs; on CPU use --bf16 (or fp32, the default)')
    if dtype == 'bf16' and device.startswith('cuda') and not torch.cuda.is_bf16_supported():
        raise SystemExit(f'--bf16: {torch.cuda.get_device_name()} has no bfloat16 support; use --fp16')
    env = bm.environment(device)
    env['keep_freed_memory'] = bm.keep_freed_memory() if args.keep_freed_memory else False
    env.update(dtype=dtype, shape=args.shape, warmup=args.warmup, iters=args.iters,
               command=' '.join([osp.basename(sys.executable), *sys.argv]))
    env['matmul_tflops'] = bm.matmul_rate(device, dtype) / 1e12
    print(f"device {device} ({env.get('gpu', env['cpu'])}), {env['threads']} threads, {dtype}, "
          f"image {args.shape[0]} x {args.shape[1]}, 2048^3 matmul {env['matmul_tflops'] * 1e3:.0f} GFLOP/s"
          + (', freed memory kept (mallopt)' if env['keep_freed_memory'] else ''),
          flush=True)

    impls = [resolve_impl(i) for i in args.msda_impl]
    rows = []
    steps = len(args.configs) * len(impls) * 2 * args.iters
    with tqdm(total=steps, desc='timing', unit='call', disable=None, file=sys.stderr) as bar:
        for config in args.configs:
            model = bm.build_detector(config, args.cfg_options).to(device)
            data = bm.to_device(bm.make_sample(*args.shape), device)
            image = model.data_preprocessor(data, False)['inputs']
            params = bm.count_params(model)
            flops = None
            if not args.no_flops:
                flops = bm.count_flops(model, lambda: model.test_step(data))
                flops['backbone'] = bm.count_flops(model.backbone, lambda: model.backbone(image))['total']
            reference = None
            for impl in impls:
                set_msda_impl(model, impl)
                bar.set_postfix_str(f'{label(config)} {impl}')
                with torch.no_grad(), bm.autocast(device, dtype):
                    step = lambda: model.test_step(data)  # noqa: E731
                    with bm.peak_memory(device) as memory:
                        latency = bm.time_calls(step, args.warmup, args.iters, device, bar.update)
                    backbone = bm.time_calls(lambda: model.backbone(image), args.warmup, args.iters, device,
                                             bar.update)
                    dets = bm.detections(step())
                    top_ops = bm.profile_top_ops(step, args.profile) if args.profile else None
                row = dict(config=config, model=label(config), impl=impl, params=params, flops=flops,
                           latency=bm.summarize(latency), backbone_latency=bm.summarize(backbone), **memory)
                if flops:
                    rate = flops['total'] / (row['latency']['median_ms'] / 1e3)
                    row['achieved_tflops'] = rate / 1e12
                    row['share_of_matmul_rate'] = rate / (env['matmul_tflops'] * 1e12)
                if reference is None:  # the first kernel measured is what the others are held to
                    reference = (row, dets)
                else:
                    ref_row, ref_dets = reference
                    row['vs_' + ref_row['impl']] = bm.compare_detections(dets, ref_dets)
                    row['speedup_vs_' + ref_row['impl']] = ref_row['latency']['median_ms'] / row['latency']['median_ms']
                if top_ops:
                    row['top_ops'] = top_ops
                rows.append(row)
            del model
    return dict(environment=env, results=rows)


def print_table(report: dict) -> None:
    header = (f"{'model':<16}{'msda':<7}{'params M':>9}{'GFLOPs':>8}{'bb GFLOPs':>10}{'median ms':>10}{'p90 ms':>8}{'img/s':>7}"
              f"{'backbone ms':>12}{'peak MiB':>9}{'GFLOP/s':>8}{'% mm':>6}{'speed-up':>9}  same dets")
    print(header)
    print('-' * len(header))
    for r in report['results']:
        lat, f = r['latency'], r['flops']
        speedup = next((v for k, v in r.items() if k.startswith('speedup_vs_')), None)
        agree = next((v for k, v in r.items() if k.startswith('vs_')), None)
        print(f"{r['model']:<16}{r['impl']:<7}{r['params']['total'] / 1e6:>9.2f}"
              f"{(f['total'] / 1e9 if f else float('nan')):>8.1f}{(f['backbone'] / 1e9 if f else float('nan')):>10.1f}"
              f"{lat['median_ms']:>10.1f}{lat['p90_ms']:>8.1f}"
              f"{lat['images_per_s']:>7.2f}{r['backbone_latency']['median_ms']:>12.1f}{r['peak_mib']:>9.0f}"
              f"{r.get('achieved_tflops', float('nan')) * 1e3:>8.0f}{r.get('share_of_matmul_rate', float('nan')) * 100:>6.0f}"
              f"{(f'{speedup:.2f}x' if speedup else ''):>9}  "
              + (f"box {agree['max_box_diff']:.1e} px, score {agree['max_score_diff']:.1e}, labels "
                 f"{'equal' if agree['labels_equal'] else 'DIFFER'}" if agree else ''))
        for op in r.get('top_ops', []):
            print(f"    {op['self_ms']:8.1f} ms {op['share'] * 100:5.1f}%  {op['calls']:4d} x {op['op']}")


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in report['results'] if r['flops']]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, name in ((axes[0], 'params', 'parameters (M)'), (axes[1], 'flops', 'GFLOPs')):
        for impl, marker in (('stock', 'o'), ('fast', 's')):
            sel = [r for r in rows if r['impl'] == impl]
            xs = [r[key]['total'] / (1e6 if key == 'params' else 1e9) for r in sel]
            ys = [r['latency']['median_ms'] for r in sel]
            ax.scatter(xs, ys, marker=marker, label=f'{impl} deformable attention')
            for x, y, r in zip(xs, ys, sel):
                ax.annotate(r['model'], (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    env = report['environment']
    axes[0].set_ylabel('median latency (ms)')
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{env.get('gpu', env['cpu'])}, {env['threads']} threads, {env['dtype']}, "
                 f"{env['shape'][0]} x {env['shape'][1]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = run(args)
    print_table(report)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'results: {args.out}')
    if args.plot is not None:
        path = args.plot or osp.splitext(args.out)[0] + '.png'
        plot(report, path)
        print(f'plot: {path}')
    return report


if __name__ == '__main__':
    sys.exit(run_tool(main))
