"""Train a detector with mmengine's Runner.

Examples:
    python tools/train.py configs/deformable_detr_pit_s.py
    python tools/train.py configs/deformable_detr_pit_s.py --resume            # latest in work dir
    python tools/train.py configs/deformable_detr_pit_s.py --resume work_dirs/x/epoch_20.pth
    bash tools/dist_train.sh configs/deformable_detr_pit_s.py 8               # torchrun, 8 GPUs
"""

import argparse
import os
import sys

import torch
from mmdet.utils import setup_cache_size_limit_of_dynamo
from mmengine.config import Config
from mmengine.runner import Runner

from pit_det.checkpoint import find_resumable_checkpoint, resumable_meta
from pit_det.config import ConfigOptions, load_config, shutdown_distributed
from pit_det.datasets.check import require_boxes_to_score
from pit_det.errors import PitDetError, run_tool
from pit_det.precision import amp_optim_wrapper, without_low_precision


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--data-root', help='COCO-layout data root overriding the config')
    parser.add_argument(
        '--amp',
        nargs='?',
        const='float16',
        choices=['float16', 'bfloat16'],
        help="mixed precision on a GPU (mmengine's AmpOptimWrapper): --amp is float16, --amp bfloat16 is bf16",
    )
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale lr linearly to the actual total batch (base: auto_scale_lr.base_batch_size)',
    )
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from PATH, or from the latest checkpoint in the work dir if no PATH',
    )
    parser.add_argument(
        '--validate-first',
        action='store_true',
        help='validate the initial model before training (metrics_before_train.json)',
    )
    parser.add_argument(
        '--cfg-options', nargs='+', action=ConfigOptions, help='override config entries, e.g. train_cfg.max_epochs=12'
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config, args.launcher, args.cfg_options, args.data_root, args.work_dir)
    epochs = cfg.get('train_cfg', {}).get('max_epochs')
    if epochs is not None and epochs < 1:  # mmengine would exit 0 having trained nothing
        raise PitDetError(f'train_cfg.max_epochs={epochs}: train at least one epoch')
    if args.amp:
        if not torch.cuda.is_available():  # AmpOptimWrapper asserts a GPU (mmengine 0.10.7)
            raise PitDetError(
                f"--amp: mmengine's AmpOptimWrapper trains in mixed precision on GPUs only. On CPU, "
                f'train in fp32: {without_low_precision(sys.argv)}'
            )
        cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper, None if args.amp == 'float16' else args.amp)
    if args.auto_scale_lr:
        if not (cfg.get('auto_scale_lr') or {}).get('base_batch_size'):  # mmengine would stop at an AttributeError
            raise PitDetError(
                f'--auto-scale-lr: {args.config} has no auto_scale_lr = dict(base_batch_size=N), the total '
                'batch its learning rate is set for (the shipped configs set it)'
            )
        cfg.auto_scale_lr.enable = True
    if args.validate_first:
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='ValidateBeforeTrainHook')]
    if args.resume == 'auto':
        # The newest *complete* checkpoint of the work dir; none: start from scratch.
        latest = find_resumable_checkpoint(cfg.work_dir)
        cfg.resume, cfg.load_from = latest is not None, latest
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    # resume=True without load_from (--cfg-options): mmengine resumes from the work dir's latest.
    resume_from = (cfg.get('load_from') or find_resumable_checkpoint(cfg.work_dir)) if cfg.get('resume') else None
    if resume_from is not None:
        meta = resumable_meta(resume_from)  # mmengine would stop at a KeyError on a weights-only file
        if cfg.get('randomness', {}).get('seed') is None:
            # Without a fixed seed mmengine draws one per run, and the samplers it builds before
            # resuming would shuffle with it; the checkpoint's seed keeps the resumed run's data
            # order and augmentations those of the interrupted run.
            cfg.randomness = dict(cfg.get('randomness', {}), seed=meta.get('seed'))
    return cfg


def main() -> None:
    args = parse_args()
    setup_cache_size_limit_of_dynamo()
    cfg = build_config(args)
    # Every checkpoint, the run's own on resume included, is read weights-only and written
    # atomically (pit_det.checkpoint, installed in mmengine by load_config: pit_det.integration).
    runner = Runner.from_cfg(cfg)
    # The loops built here, in the order of mmengine 0.10.7's runner.train() (train, then val: the
    # samplers' seeds and the visualizer's class names as there), which takes built ones as they
    # are: a val file with nothing to score is named before training, not as AP -1 at each validation.
    runner.train_loop  # the property builds the loop
    if runner.val_loop is not None:
        require_boxes_to_score(runner.val_loop.evaluator, cfg.val_evaluator, 'val_evaluator')
    runner.train()
    shutdown_distributed()


if __name__ == '__main__':
    sys.exit(run_tool(main))
