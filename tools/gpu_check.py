"""pit-det's GPU path end to end in minutes; every result as JSON in --out.

    bash tools/gpu_check.sh OUT                  # on a GPU machine: installs, builds, then runs this
    python tools/gpu_check.py --out OUT          # the checks alone, in a ready environment
    python tools/gpu_check.py --dry-run --out OUT  # the same steps on CPU at toy sizes (Triton's interpreter)

Steps, each writing OUT/<step>.json (and OUT/summary.json at the end):
  kernel     Triton deformable attention on the GPU against the C++ CPU kernel, fp32 and bf16,
             forward and backward, at PiT-S's four levels of a 400 x 667 image; and forward +
             backward time of Triton, mmcv's CUDA kernel (when mmcv has CUDA ops) and PyTorch's
             grid_sample path.
  train      the toy config for about 100 iterations, fp32 and bf16 autocast: loss finite and falling.
  benchmark  tools/benchmark_latency.py on the three Table 5 detectors at 400 x 667, batch 1, fp32
             and bf16, eager; PiT-S also compiled with CUDA graphs (reduce-overhead).
A step that fails is recorded with its error, and the others still run; the exit code is 1 then.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pit_det import benchmark as bm  # noqa: E402
from pit_det.datasets import make_toy_coco  # noqa: E402
from pit_det.ops import cuda_kernel, multi_scale_deformable_attn  # noqa: E402

TABLE5 = ['configs/deformable_detr_r50.py', 'configs/deformable_detr_vit_s.py', 'configs/deformable_detr_pit_s.py']
TOY = 'configs/toy/deformable_detr_pit_s_toy.py'


def msda_inputs(levels, batch, queries, heads=8, channels=32, points=4, device='cpu', seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    num_value = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(batch, num_value, heads, channels, generator=g)
    loc = torch.rand(batch, queries, heads, len(levels), points, 2, generator=g) * 1.2 - 0.1
    attn = torch.rand(batch, queries, heads, len(levels) * points, generator=g).softmax(-1)
    attn = attn.view(batch, queries, heads, len(levels), points)
    return [t.to(device) for t in (value, shapes, starts, loc, attn)]


def forward_backward(impl, value, shapes, starts, loc, attn, dtype=torch.float32):
    """Output and gradients (value, locations, weights) of one kernel, on the inputs' device."""
    inputs = [t.detach().clone().requires_grad_() for t in (value.to(dtype), loc, attn)]
    out = multi_scale_deformable_attn(inputs[0], shapes, starts, inputs[1], inputs[2], impl=impl)
    out.backward(torch.cos(torch.arange(out.numel(), device=out.device, dtype=torch.float32)).view_as(out).to(dtype))
    return [out.detach(), *(i.grad for i in inputs)]


def on_cpu(tensors) -> list:
    return [t.float().cpu() for t in tensors]


def check_kernel(device: str, dry_run: bool) -> dict:
    # PiT-S at 400 x 667: strides 8 / 16 / 32 and the neck's extra stride-64 level.
    levels = [(6, 9), (3, 5), (2, 3), (1, 2)] if dry_run else [(50, 84), (25, 42), (13, 21), (7, 11)]
    batch, queries = (1, 40) if dry_run else (2, 300)
    inputs = msda_inputs(levels, batch, queries)
    result = dict(levels=levels, batch=batch, queries=queries, cuda_kernel=cuda_kernel(), device=device)
    for name, dtype in (('fp32', torch.float32), ('bf16', torch.bfloat16)):
        cpu = on_cpu(forward_backward('fast', *inputs, dtype=dtype))
        gpu = on_cpu(forward_backward('triton', *[t.to(device) for t in inputs], dtype=dtype))
        diffs = {k: (a - b).abs().max().item() / max(1.0, b.abs().max().item())
                 for k, a, b in zip(('out', 'grad_value', 'grad_loc', 'grad_attn'), gpu, cpu)}
        # fp32: summation order (and atomics) only; bf16: one rounding of the output and value grad.
        tol = 1e-5 if name == 'fp32' else torch.finfo(torch.bfloat16).eps
        result[name] = dict(max_rel_diff=diffs, tol=tol, ok=all(d <= tol for d in diffs.values()))
    if device.startswith('cuda'):
        timing = {}
        impls = ['triton', 'grid_sample'] + (['stock'] if cuda_kernel() == 'mmcv' else [])
        for q, what in ((queries, 'decoder'), (sum(h * w for h, w in levels), 'encoder')):
            big = [t.to(device) for t in msda_inputs(levels, batch, q)]
            for impl in impls:
                for name, dtype in (('fp32', torch.float32), ('bf16', torch.bfloat16)):
                    if impl == 'stock' and name == 'bf16':
                        continue  # mmcv's CUDA kernel has no bf16
                    times = bm.time_calls(lambda: forward_backward(impl, *big, dtype=dtype), 3, 10, device)
                    timing[f'{what} {impl} {name}'] = bm.summarize(times)['median_ms']
        result['fwd_bwd_ms'] = timing
    result['ok'] = result['fp32']['ok'] and result['bf16']['ok']
    return result


def run(cmd: list, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, *map(str, cmd)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f'{" ".join(map(str, cmd[:2]))} exited {proc.returncode}: {proc.stderr[-2000:]}')
    return proc


def check_training(out: Path, device: str, dry_run: bool) -> dict:
    data = make_toy_coco(out / 'toy', num_train=8 if dry_run else 400, num_val=4 if dry_run else 20)
    result = {}
    for name in ('fp32', 'bf16'):
        if name == 'bf16' and not device.startswith('cuda'):
            result[name] = dict(skipped="mmengine's AmpOptimWrapper trains in mixed precision on GPUs only")
            continue
        amp = ['optim_wrapper.type=AmpOptimWrapper', 'optim_wrapper.dtype=bfloat16'] if name == 'bf16' else []
        work = out / f'train_{name}'
        t0 = time.time()
        run(['tools/train.py', TOY, '--work-dir', work, '--data-root', data, '--cfg-options',
             'train_cfg.max_epochs=1', 'train_cfg.val_interval=10', 'default_hooks.logger.interval=1',
             'default_hooks.checkpoint.interval=10', *amp], timeout=600)
        scalars = sorted(work.glob('*/vis_data/scalars.json'))[-1]
        losses = [json.loads(line)['loss'] for line in scalars.read_text().splitlines() if '"loss"' in line]
        k = max(1, len(losses) // 10)
        first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
        result[name] = dict(iterations=len(losses), seconds=time.time() - t0, loss_first=first, loss_last=last,
                            ok=all(math.isfinite(v) for v in losses) and (dry_run or last < first))
    result['ok'] = all(r.get('ok', True) for r in result.values())
    return result


def check_benchmark(out: Path, device: str, dry_run: bool) -> dict:
    # The dry run: PiT-S with one encoder and decoder layer, a small image, fp32 (bf16 on CPU is
    # pit_det.precision's decision and may be refused), no FLOP count.
    size = ['--shape', '64', '96', '--iters', '1', '--warmup', '0'] if dry_run else ['--iters', '20']
    small = ['--no-flops', '--cfg-options', 'model.encoder.num_layers=1', 'model.decoder.num_layers=1'] \
        if dry_run else []
    dtypes = ['fp32'] if dry_run else ['fp32', 'bf16']
    kernel = 'triton' if dry_run else 'fast'  # on the GPU 'fast' is Triton or mmcv's CUDA kernel
    configs = TABLE5[-1:] if dry_run else TABLE5  # the dry run checks the script, not the detectors
    runs = {'eager': [*configs, '--dtype', *dtypes, '--msda-impl', 'grid_sample', kernel],
            'pit_s_cuda_graphs': ['configs/deformable_detr_pit_s.py', '--dtype', *dtypes, '--msda-impl',
                                  kernel, '--compile', '--no-flops',
                                  '--compile-mode', 'default' if dry_run else 'reduce-overhead']}
    result = {}
    for name, args in runs.items():
        path = out / f'benchmark_{name}.json'
        proc = run(['tools/benchmark_latency.py', *args, '--device', device, '--out', path, *size,
                    *(small if name == 'eager' else small[1:])],
                   timeout=900)
        report = json.loads(path.read_text())
        result[name] = dict(header=proc.stdout.splitlines()[0], rows=[
            dict(model=r['model'], variant=bm.variant(r),
                 median_ms=r['latency']['median_ms'], vs_reference=r.get('vs_reference')) for r in report['results']])
    result['ok'] = True
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=os.environ.get('OUT', 'work_dirs/gpu_check'), help='results folder')
    parser.add_argument('--dry-run', action='store_true', help='CPU, toy sizes, Triton by its interpreter')
    parser.add_argument('--steps', nargs='+', default=['kernel', 'train', 'benchmark'])
    args = parser.parse_args()
    if args.dry_run:
        if os.environ.get('TRITON_INTERPRET') != '1':
            sys.exit('--dry-run runs the Triton kernel in its interpreter: set TRITON_INTERPRET=1 before Python starts')
        device = 'cpu'
    elif torch.cuda.is_available():
        device = 'cuda'
    else:
        sys.exit('no CUDA GPU visible (torch.cuda.is_available() is False); for the CPU rehearsal use --dry-run')
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary = dict(environment=bm.environment(device), dry_run=args.dry_run, steps={})
    steps = dict(kernel=lambda: check_kernel(device, args.dry_run),
                 train=lambda: check_training(out, device, args.dry_run),
                 benchmark=lambda: check_benchmark(out, device, args.dry_run))
    for name in args.steps:
        t0 = time.time()
        print(f'[gpu check] {name} ...', flush=True)
        try:
            result = steps[name]()
        except Exception as err:  # recorded; the other steps still run
            result = dict(ok=False, error=f'{type(err).__name__}: {err}', traceback=traceback.format_exc()[-4000:])
        result['seconds'] = time.time() - t0
        (out / f'{name}.json').write_text(json.dumps(result, indent=2))
        summary['steps'][name] = dict(ok=result['ok'], seconds=result['seconds'])
        print(f"[gpu check] {name}: {'ok' if result['ok'] else 'FAILED: ' + result.get('error', '')} "
              f"({result['seconds']:.0f} s)", flush=True)
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    print(f'[gpu check] results in {out}')
    return 0 if all(s['ok'] for s in summary['steps'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
