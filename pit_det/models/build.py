"""The one way to build a detector from a config: seeded random weights, or every weight from a
checkpoint."""

import copy
import logging
from typing import Optional, Union

import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.logging import MMLogger
from torch import nn

from ..checkpoint import read_checkpoint, require_fit
from ..config import load_config, read_config


def build_detector(
    config: Union[str, Config], checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None, seed: int = 0
) -> nn.Module:
    """The config's detector, in eval mode, with ``cfg`` and ``dataset_meta`` set as mmdet's
    ``init_detector`` sets them (``inference_detector`` takes it).

    Args:
        config: config file or ``Config``.
        checkpoint: a checkpoint holding every weight of the detector (read weights-only; a
            mismatch is an error naming what differs). Without it: random weights, seeded
            (mmdet's ``init_weights``), as latency and tests want them.
        cfg_options: overrides merged into the config first, e.g. ``{'model.num_queries': 100}``.
        seed: the seed of the random weights.

    The backbone's pretrained ``init_cfg`` is never loaded: the checkpoint has every weight, and
    random weights need no ImageNet files on disk.

    Raises:
        CheckpointError: the checkpoint does not fit the config.
    """
    import pit_det  # noqa: F401  registers the backbones and the detector

    cfg = read_config(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model_cfg = copy.deepcopy(cfg.model)  # mmdet's __init__ edits the head's config in place
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone = dict(model_cfg.backbone, init_cfg=None)
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    if checkpoint is None:
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every parameter's initialiser
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
        meta = {}
    else:
        state, meta = read_checkpoint(checkpoint)  # the file is read once, weights and meta together
        require_fit(model.state_dict(), state, checkpoint, cfg.filename)
        model.load_state_dict(state)
    model.cfg = cfg
    model.dataset_meta = dataset_meta(cfg, meta)
    return model.eval()


def load_detector(config: str, checkpoint: str, device: str = 'cpu') -> nn.Module:
    """A trained detector for mmdet's ``inference_detector`` and test pipeline, as mmdet's
    ``init_detector`` makes one (the config's default scope set, ``cfg`` and ``dataset_meta``), but
    with every weight from ``checkpoint`` or an error: ``init_detector`` loads what fits and logs
    the rest, so another detector's checkpoint would run with random weights.

    Args:
        config: config file, read as the tools read it (:func:`pit_det.config.load_config`).
        checkpoint: a checkpoint holding every weight of the detector.
        device: where the detector runs, e.g. 'cpu' or 'cuda:0'.

    Raises:
        CheckpointError: the checkpoint does not fit the config.
    """
    from mmengine.registry import init_default_scope

    cfg = load_config(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))  # the test pipeline's transforms are mmdet's
    return build_detector(cfg, checkpoint).to(device)


def dataset_meta(cfg: Config, checkpoint_meta: dict) -> dict:
    """The classes a detector names: its checkpoint's ``meta['dataset_meta']`` (keys lowercased,
    as mmdet 3.3.0's ``init_detector`` does), else the config's test set, else COCO's.

    mmdet's ``init_detector`` goes from the checkpoint straight to COCO's names, which named a toy
    detector's classes as COCO's where its file had no meta (a safetensors file never has)."""
    meta = {k.lower(): v for k, v in (checkpoint_meta.get('dataset_meta') or {}).items()}
    if meta.get('classes') is None:
        test_set = (cfg.get('test_dataloader') or {}).get('dataset') or {}
        classes = (test_set.get('metainfo') or {}).get('classes')
        if classes is None:
            from mmdet.datasets import CocoDataset

            classes = CocoDataset.METAINFO['classes']
        meta['classes'] = classes
    meta['classes'] = list(meta['classes'])
    return meta
