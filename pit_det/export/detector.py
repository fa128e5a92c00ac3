"""What a runtime must know of an exported detector besides its weights (the detector itself:
:func:`pit_det.models.build_detector`)."""

from typing import Dict

from mmengine.config import Config

from ..checkpoint import safe_torch_load
from ..errors import PitDetError


def classes_of(cfg: Config, checkpoint: str) -> list:
    """Class names: the checkpoint's ``meta.dataset_meta``, else the config's test set, else COCO's
    (mmdet's ``init_detector`` goes from the checkpoint to COCO's, and named a toy detector's classes
    as COCO's where the file had no meta). A ``.safetensors`` file holds weights only."""
    meta = {} if str(checkpoint).endswith('.safetensors') else safe_torch_load(checkpoint, map_location='cpu')
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
    resize = next((t for t in cfg.test_pipeline if t['type'] in ('Resize', 'SafeResize')), None)
    if resize is None or not resize.get('keep_ratio', False):
        raise PitDetError(f'{cfg.filename}: export needs a test pipeline with Resize or SafeResize (keep_ratio=True)')
    pre = cfg.model.data_preprocessor
    return dict(
        resize_scale=list(resize['scale']),
        mean=list(pre.get('mean', [0.0] * 3)),
        std=list(pre.get('std', [1.0] * 3)),
        bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)),
    )
