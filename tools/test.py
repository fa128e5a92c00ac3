"""Evaluate a detector checkpoint with COCO bbox metrics (AP, AP50, AP75, APs/m/l).

Writes ``<out-dir>/metrics.json`` and the detections in COCO result format
``<out-dir>/detections.bbox.json``; ``--show-dir`` draws the detections on the images; ``--bf16``
runs the model under bfloat16 autocast.

Example:
    python tools/test.py configs/deformable_detr_pit_s.py work_dirs/deformable_detr_pit_s/epoch_50.pth
"""

import argparse
import json
import os
import os.path as osp
import sys

import torch
from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from pit_det.checkpoint import read_state_dict, require_fit
from pit_det.config import ConfigOptions, load_config, metric_configs, shutdown_distributed
from pit_det.datasets.check import require_boxes_to_score, submission_hint
from pit_det.errors import PitDetError, run_tool
from pit_det.precision import check_precision
from pit_det_deploy.hardware import default_device


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='COCO bbox evaluation of a detector checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs go (default: work_dirs/<config name>)')
    parser.add_argument('--out-dir', help='where metrics.json and detections.bbox.json go (default: work dir)')
    parser.add_argument('--data-root', help='COCO-layout data root overriding the config')
    parser.add_argument('--show-dir', help='draw detections into this folder (under the work dir)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='score threshold for --show-dir')
    parser.add_argument(
        '--bf16',
        action='store_true',
        help='run the model under bfloat16 autocast (GPUs with bf16, CPUs with native bf16 '
        'instructions; refused elsewhere); data and metrics stay as they are',
    )
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptions, help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def is_coco_metric(metric_cfg) -> bool:
    """A metric config that builds mmdet's ``CocoMetric`` or a subclass (which take ``outfile_prefix``)."""
    from mmdet.evaluation.metrics import CocoMetric
    from mmdet.registry import METRICS

    kind = metric_cfg.get('type') if isinstance(metric_cfg, dict) else None  # or a built metric
    cls = kind if isinstance(kind, type) else METRICS.get(kind) if kind else None
    return isinstance(cls, type) and issubclass(cls, CocoMetric)


def main() -> None:
    args = parse_args()
    if args.bf16:  # before anything is built: an emulated bf16 is refused with the fp32 command
        check_precision(default_device(), ['bf16'], sys.argv)
    cfg = load_config(args.config, args.launcher, args.cfg_options, args.data_root, args.work_dir)
    weights = read_state_dict(args.checkpoint)  # a missing or unreadable file named before the runner is built
    cfg.load_from = args.checkpoint
    # The backbone's own pretrained file is irrelevant here: the checkpoint holds all weights.
    if cfg.model.get('backbone', {}).get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None
    out_dir = osp.abspath(args.out_dir or cfg.work_dir)
    os.makedirs(out_dir, exist_ok=True)
    # Each COCO metric's detections file: detections.bbox.json (the first), detections_2.bbox.json, ...
    coco_metrics = [(key, m) for key, m in metric_configs(cfg.test_evaluator) if is_coco_metric(m)]
    for i, (_, metric) in enumerate(coco_metrics, 1):
        metric['outfile_prefix'] = osp.join(out_dir, 'detections' if i == 1 else f'detections_{i}')
    if args.show_dir:
        hook = cfg.default_hooks.visualization
        hook.update(draw=True, test_out_dir=args.show_dir, score_thr=args.score_thr)
    # The checkpoint is read weights-only (pit_det.checkpoint, installed when pit_det is imported).
    if args.bf16:
        # mmengine's TestLoop autocasts each iteration when fp16=True (an autocast around it would
        # be switched off inside): to bf16 on CPU, to the autocast dtype set here on CUDA.
        cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
        torch.set_autocast_dtype('cuda', torch.bfloat16)
    runner = Runner.from_cfg(cfg)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    # mmengine loads load_from non-strictly: another detector's checkpoint would be tested with random weights.
    require_fit(model.state_dict(), weights, args.checkpoint, args.config)
    del weights  # mmengine's runner loads the file itself
    # The test loop built here rather than in runner.test(), which takes a built one as it is: a
    # file with nothing to score is named before a pass over its images.
    require_boxes_to_score(runner.test_loop.evaluator, cfg.test_evaluator)
    metrics = runner.test()
    for key, metric in coco_metrics:  # what the check above cannot see: a metric without ann_file
        ap = [v for k, v in metrics.items() if k.startswith(f'{metric.get("prefix") or "coco"}/bbox_')]
        if ap and all(v == -1 for v in ap):
            raise PitDetError(
                f"no boxes of the config's classes to score (COCO AP -1 from {key}); the detections are in "
                f'{metric["outfile_prefix"]}.bbox.json. {submission_hint(key)}'
            )
    if is_main_process():
        with open(osp.join(out_dir, 'metrics.json'), 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)
        print(f'metrics: {osp.join(out_dir, "metrics.json")}')
        for _, metric in coco_metrics:
            print(f'detections: {metric["outfile_prefix"]}.bbox.json')
        if args.show_dir:
            print(f'pictures: {osp.join(runner.log_dir, args.show_dir)}')
    shutdown_distributed()


if __name__ == '__main__':
    sys.exit(run_tool(main))
