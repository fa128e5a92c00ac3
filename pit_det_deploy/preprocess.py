"""The shipped test pipeline in numpy and OpenCV: ``SafeResize(keep_ratio=True)`` (mmdet's
``Resize`` keeping at least a pixel a side) and ``DetDataPreprocessor``'s normalisation, computed
as mmcv / mmdet compute them (same sizes, same interpolation), so that the exported graph sees the
pixels PyTorch sees. (``PadToMinSize`` only acts on images under 16 pixels after the resize, such
as a 4000 x 2 strip: below any exported model's input range, so the deployed detector refuses them
with the size.)"""

from typing import Sequence, Tuple

import cv2
import numpy as np


def rescale_size(width: int, height: int, scale: Sequence[int]) -> Tuple[int, int]:
    """mmcv's ``rescale_size``, at least one pixel a side as pit-det's ``SafeResize``: the largest
    size with the aspect ratio kept whose long side fits ``max(scale)`` and short side
    ``min(scale)``; (new_width, new_height)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(1, int(width * factor + 0.5)), max(1, int(height * factor + 0.5))


def prepare(image_bgr: np.ndarray, spec: dict) -> Tuple[np.ndarray, Tuple[float, float]]:
    """An (H, W, 3) uint8 BGR image -> the network input.

    Args:
        image_bgr: as ``cv2.imread`` gives it (mmdet loads images the same way).
        spec: the ``preprocess`` entry of the model's metadata (``pit_det.export.preprocessing_of``).

    Returns:
        input: (1, 3, h, w) float32, normalised.
        scale_factor: (w_scale, h_scale), resized over original size; boxes divide by it.
    """
    h, w = image_bgr.shape[:2]
    new_w, new_h = rescale_size(w, h, spec['resize_scale'])
    image = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    scale_factor = (new_w / w, new_h / h)
    x = image.astype(np.float32)
    if spec['bgr_to_rgb']:
        x = x[..., ::-1]
    x = (x - np.asarray(spec['mean'], np.float32)) / np.asarray(spec['std'], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), scale_factor
