"""The trained detector to export, and what a runtime must know of it besides its weights."""
from typing import Dict

from mmdet.registry import MODELS
from mmengine.config import Config
from torch import nn

from ..checkpoint import read_state_dict, safe_torch_load
from ..errors import CheckpointError, PitDetError


def build_detector(cfg: Config, checkpoint: str) -> nn.Module:
    """The config's detector with every weight from ``checkpoint`` (read weights-only).

    Raises:
        CheckpointError: the checkpoint does not fit the config: missing or unexpected weights,
            or shapes that differ, each named with both files.
    """
    model_cfg = cfg.model.copy()
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone = dict(model_cfg.backbone, init_cfg=None)  # the checkpoint has every weight
    detector = MODELS.build(model_cfg)
    state = read_state_dict(checkpoint)
    own = detector.state_dict()
    problems = []
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(v.shape)}'
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    for name, keys in (('missing from the checkpoint', missing), ('not in the model', unexpected),
                       ('with other shapes', shapes)):
        if keys:
            problems.append(f'{len(keys)} weights {name}: {keys[:5]}' + (' ...' if len(keys) > 5 else ''))
    if problems:
        raise CheckpointError(f'{checkpoint} does not match {cfg.filename}: ' + '; '.join(problems))
    detector.load_state_dict(state)
    return detector.eval()


def classes_of(cfg: Config, checkpoint: str) -> list:
    """Class names: the checkpoint's ``meta.dataset_meta``, else the config's test set, else COCO's."""
    meta = safe_torch_load(checkpoint, map_location='cpu')
    meta = meta.get('meta', {}) if isinstance(meta, dict) else {}
    classes = (meta.get('dataset_meta') or {}).get('classes')
    if classes is None:
        classes = (cfg.test_dataloader.dataset.get('metainfo') or {}).get('classes')
    if classes is None:
        from mmdet.datasets import CocoDataset
        classes = CocoDataset.METAINFO['classes']
    return list(classes)


def preprocessing_of(cfg: Config) -> Dict[str, object]:
    """What runs before the exported graph, read from the config: the test pipeline's resize and
    the data preprocessor's normalisation (see :mod:`pit_det_deploy.preprocess`)."""
    resize = next((t for t in cfg.test_pipeline if t['type'] == 'Resize'), None)
    if resize is None or not resize.get('keep_ratio', False):
        raise PitDetError(f'{cfg.filename}: export needs a test pipeline with Resize(keep_ratio=True)')
    pre = cfg.model.data_preprocessor
    return dict(resize_scale=list(resize['scale']),
                mean=list(pre.get('mean', [0.0] * 3)), std=list(pre.get('std', [1.0] * 3)),
                bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)))
