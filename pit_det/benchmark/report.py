"""The benchmark's report for people: its table, its training rows and its figure, from the JSON
that :func:`.runner.benchmark` returns and ``tools/analysis/benchmark.py`` writes."""

from ..plotting import pyplot
from .runner import variant


def print_table(report: dict) -> None:
    rows = report['results'] + report.get('failed', [])
    # The variant column fits its longest label (an INT8 row names its fp32 groups), so columns stay aligned.
    w = max([30, *(len(variant(r)) + 2 for r in rows)])
    header = (
        f'{"model":<12}{"variant":<{w}}{"kernel":<19}{"params M":>9}{"GFLOPs":>8}{"bb GFLOPs":>10}'
        f'{"median ms":>10}{"p90 ms":>8}{"img/s":>7}{"backbone ms":>12}{"peak MiB":>9}{"GFLOP/s":>8}{"% mm":>6}'
        f'{"compile s":>10}{"speed-up":>9}  detections vs first row'
    )
    print(header)
    print('-' * len(header))
    nan = float('nan')
    for r in report['results']:
        lat, f, agree = r['latency'], r['flops'], r.get('vs_reference')
        backbone = r['backbone_latency']['median_ms'] if r['backbone_latency'] else nan
        speedup = f'{r["speedup"]:.2f}x' if 'speedup' in r else ''
        print(
            f'{r["model"]:<12}{variant(r):<{w}}{r["kernel"]:<19}{r["params"]["total"] / 1e6:>9.2f}'
            f'{(f["total"] / 1e9 if f else nan):>8.1f}{(f["backbone"] / 1e9 if f else nan):>10.1f}'
            f'{lat["median_ms"]:>10.1f}{lat["p90_ms"]:>8.1f}{lat["images_per_s"]:>7.2f}{backbone:>12.1f}'
            f'{r["peak_mib"]:>9.0f}{r.get("achieved_tflops", nan) * 1e3:>8.0f}'
            f'{r.get("share_of_matmul_rate", nan) * 100:>6.0f}{r.get("compile_s", r.get("export_s", nan)):>10.1f}'
            f'{speedup:>9}  '
            + (
                f'box {agree["max_box_diff"]:.1e} px, score {agree["max_score_diff"]:.1e}, labels '
                f'{"equal" if agree["labels_equal"] else "DIFFER"}'
                if agree
                else ''
            )
        )
        if r.get('cudagraph_skips'):
            print(
                f'    {r["cudagraph_skips"]} of {r["graphs"]} graphs compiled without CUDA graphs '
                '(inductor could not capture them)'
            )
        if 'stages' in r:
            print('    stages: ' + ' | '.join(f'{name} {ms:.1f}' for name, ms in r['stages'].items()) + ' ms')
        if 'cuda' in r:
            c = r['cuda']
            print(
                f'    per image: {c["kernel_launches"]} kernel launches, {c["graph_launches"]} CUDA graph launches, '
                f'{c["kernels"]} kernels, {c["syncs"]} host-device synchronisations, '
                f'{c["dtoh_copies"]} device-to-host copies'
            )
            if c.get('kernel_launches_by_stage'):
                print(
                    '    kernel launches by stage: '
                    + ', '.join(f'{stage} {n}' for stage, n in c['kernel_launches_by_stage'].items())
                )
        for op in r.get('top_ops', []):
            device = f'{op["device_ms"]:8.1f} ms on the device ' if 'device_ms' in op else ''
            print(f'    {op["self_ms"]:8.1f} ms {op["share"] * 100:5.1f}%  {device}{op["calls"]:4d} x {op["op"]}')
    for r in report.get('failed', []):
        print(f'{r["model"]:<12}{variant(r):<{w}}FAILED: {r["error"]}')


def print_training(report: dict) -> None:
    """The --train-throughput rows: images/s per device and what 50 COCO epochs on 8 GPUs take."""
    env = report['environment']
    where = env.get('gpu') or f'{env["cpu"]}, {env["threads"]} threads'
    print(
        f"\ntraining step on {where}: forward, backward and optimizer step of each config's own optim wrapper, "
        f'its batch size per device, synthetic photos through its train pipeline; {env["warmup"]} warm-up and '
        f'{env["iters"]} timed iterations'
    )
    header = (
        f'{"model":<12}{"dtype":<7}{"kernel":<19}{"batch":>6}{"img/s":>8}{"step ms":>9}{"p90 ms":>8}'
        f'{"peak MiB":>9}{"loss":>8}  50 COCO epochs on 8 GPUs at this rate'
    )
    print(header)
    print('-' * len(header))
    for r in report['training']:
        if 'error' in r:
            print(f'{r["model"]:<12}{r["dtype"]:<7}FAILED: {r["error"]}')
            continue
        coco = r['coco_50e_8gpus']
        print(
            f'{r["model"]:<12}{r["dtype"]:<7}{r["kernel"]:<19}{r["batch_size"]:>6}{r["images_per_s"]:>8.2f}'
            f'{r["step"]["median_ms"]:>9.1f}{r["step"]["p90_ms"]:>8.1f}{r["peak_mib"]:>9.0f}{r["loss"]:>8.2f}  '
            f'{coco["hours"]:.1f} h ({coco["iters_per_epoch"]} iterations x {coco["epochs"]} epochs; '
            f'{coco["images_per_epoch"]:,} images per epoch, filter_empty_gt={coco["filter_empty_gt"]}; '
            f'ideal scaling, no validation)'
        )


def plot(report: dict, path: str) -> None:
    """Median latency against parameters and against GFLOPs, one marker per variant."""
    plt = pyplot()
    rows = [r for r in report['results'] if r['flops']]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, axis_name in ((axes[0], 'params', 'parameters (M)'), (axes[1], 'flops', 'GFLOPs')):
        for i, name in enumerate(dict.fromkeys(variant(r) for r in rows)):
            sel = [r for r in rows if variant(r) == name]
            xs = [r[key]['total'] / (1e6 if key == 'params' else 1e9) for r in sel]
            ys = [r['latency']['median_ms'] for r in sel]
            ax.scatter(xs, ys, marker='osD^v<>p*'[i % 9], label=name)
            for x, y, r in zip(xs, ys, sel):
                ax.annotate(r['model'], (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
        ax.set_xlabel(axis_name)
        ax.grid(alpha=0.3)
    env = report['environment']
    axes[0].set_ylabel('median latency (ms)')
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f'{env.get("gpu", env["cpu"])}, {env["threads"]} threads, {env["shape"][0]} x {env["shape"][1]}', fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
