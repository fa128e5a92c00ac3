"""mmdet's own inference API on pit-det's configs.

mmdet 3.3.0's ``DetInferencer._init_pipeline`` finds the test pipeline's image loader by its type
name, ``'LoadImageFromFile'``, to swap in its ``InferencerLoader`` (which also takes arrays), and
raises ``ValueError: LoadImageFromFile is not found in the test pipeline`` otherwise. pit-det's
configs load images with ``SafeLoadImageFromFile`` (a subclass that survives unreadable files in
long runs). Before mmdet's method runs, that entry becomes the plain ``LoadImageFromFile`` it
extends (without its own two arguments), so mmdet's method does the swap as for its own configs.
``init_detector`` / ``inference_detector`` need no change. :func:`pit_det.integration.install`
makes the change (:func:`accept_pit_det_loader`); importing this module does not.
"""

from contextlib import contextmanager
from typing import Iterator

import cv2
import numpy as np
from mmdet.apis import DetInferencer
from mmengine.config import ConfigDict

from .datasets.transforms import SafeLoadImageFromFile
from .errors import PitDetError

_LOADER_NAMES = ('SafeLoadImageFromFile', 'pit_det.SafeLoadImageFromFile', SafeLoadImageFromFile)
_mmdet_init_pipeline = DetInferencer._init_pipeline


def _init_pipeline(self, cfg: ConfigDict):
    """mmdet 3.3.0's ``_init_pipeline``, after pit-det's loader is written as the one it extends."""
    pipeline = cfg.test_dataloader.dataset.pipeline
    for i, transform in enumerate(pipeline):
        if transform['type'] in _LOADER_NAMES:
            pipeline[i] = dict(
                {k: v for k, v in transform.items() if k not in ('on_failure', 'max_failures')},
                type='LoadImageFromFile',
            )
    return _mmdet_init_pipeline(self, cfg)


_init_pipeline.__wrapped__ = _mmdet_init_pipeline  # inspect finds mmdet's source (tests/test_followed_methods.py)


def accept_pit_det_loader() -> None:
    """Put :func:`_init_pipeline` in front of mmdet's method (idempotent)."""
    DetInferencer._init_pipeline = _init_pipeline


def accepts_pit_det_loader() -> bool:
    return DetInferencer._init_pipeline is _init_pipeline


@contextmanager
def image_named_on_failure(path, image: np.ndarray) -> Iterator[None]:
    """Inference on one image (``image`` as read from ``path``): an OpenCV error in the test pipeline
    becomes one line naming the image and its size. The shipped configs' ``SafeResize`` takes any
    size; mmdet's ``Resize`` rounds a 4000 x 2 strip's height to 0 pixels, and OpenCV stops."""
    try:
        yield
    except cv2.error as err:
        message = str(err).strip().splitlines()[-1]
        raise PitDetError(
            f'{path}: the test pipeline cannot take this {image.shape[1]} x {image.shape[0]} image ({message}); '
            "where a keep-ratio Resize rounds a side to 0 pixels, use pit-det's SafeResize"
        ) from None
