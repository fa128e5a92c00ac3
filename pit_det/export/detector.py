"""What a runtime must know of an exported detector besides its weights (the detector itself:
:func:`pit_det.models.build_detector`)."""

from typing import Dict

from mmengine.config import Config

from ..errors import PitDetError


def _is_scale_resize(transform: dict) -> bool:
    """mmdet's ``Resize`` or a subclass of it (pit-det's ``SafeResize``) that resizes to a
    ``scale``: found by class, so a user's own subclass counts too. The deployed preprocessing
    resizes as mmdet 3.3.0's ``Resize`` computes it (bilinear, cv2); a subclass that resizes
    otherwise needs its own."""
    from mmdet.datasets.transforms import Resize
    from mmdet.registry import TRANSFORMS

    cls = transform['type']
    cls = TRANSFORMS.get(cls) if isinstance(cls, str) else cls  # mmdet's registry, then its parents
    return isinstance(cls, type) and issubclass(cls, Resize) and 'scale' in transform


def preprocessing_of(cfg: Config) -> Dict[str, object]:
    """What runs before the exported graph, read from the config: the test pipeline's resize and
    the data preprocessor's normalisation (see :mod:`pit_det_deploy.preprocess`)."""
    resize = next((t for t in cfg.test_pipeline if _is_scale_resize(t)), None)
    if resize is None or not resize.get('keep_ratio', False):
        raise PitDetError(
            f'{cfg.filename}: export needs a test pipeline with a keep-ratio resize to a scale '
            "(mmdet's Resize or a subclass such as SafeResize, keep_ratio=True)"
        )
    pre = cfg.model.data_preprocessor
    return dict(
        resize_scale=list(resize['scale']),
        mean=list(pre.get('mean', [0.0] * 3)),
        std=list(pre.get('std', [1.0] * 3)),
        bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)),
    )
