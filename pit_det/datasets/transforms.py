"""Data-pipeline transforms that keep a multi-day run alive through bad inputs."""

from typing import Optional

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmdet.datasets.transforms import Resize
from mmdet.registry import TRANSFORMS
from mmengine.logging import print_log


@TRANSFORMS.register_module()
class SafeLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that logs an unreadable image with its path instead of crashing.

    In training (``on_failure='skip'``) the sample becomes ``None`` and mmengine's dataset
    draws another one. In evaluation (``on_failure='blank'``) a black image of the size
    recorded in the annotation file stands in, so the image still appears in the results
    and its objects count as missed. After ``max_failures`` failures in one process the run
    stops with an error: past that, the data set itself is broken (check it with
    ``tools/data/validate_dataset.py``).

    Args:
        on_failure: ``'skip'`` or ``'blank'``.
        max_failures: Failures tolerated per process.
        **kwargs: Arguments of ``LoadImageFromFile``.
    """

    failures = 0  # per process, shared by all instances

    def __init__(self, on_failure: str = 'skip', max_failures: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        if on_failure not in ('skip', 'blank'):
            raise ValueError(f"on_failure={on_failure!r}; expected 'skip' or 'blank'")
        self.on_failure = on_failure
        self.max_failures = max_failures

    def transform(self, results: dict) -> Optional[dict]:
        try:
            return super().transform(results)
        except Exception as err:  # missing file, truncated / corrupt data, decoder failure
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        SafeLoadImageFromFile.failures += 1
        action = 'skipped' if self.on_failure == 'skip' else 'replaced by a blank image'
        print_log(
            f'unreadable image {results["img_path"]} ({reason}): {action} '
            f'[{SafeLoadImageFromFile.failures}/{self.max_failures} tolerated]',
            logger='current',
            level=30,
        )
        if SafeLoadImageFromFile.failures > self.max_failures:
            raise RuntimeError(
                f'more than {self.max_failures} unreadable images (last: {results["img_path"]}); '
                f'stopping. Run tools/data/validate_dataset.py on the annotation file and image folder.'
            )
        if self.on_failure == 'skip':
            return None
        h, w = int(results.get('height', 32)), int(results.get('width', 32))
        img = np.zeros((h, w, 3), np.float32 if self.to_float32 else np.uint8)
        results.update(img=img, img_shape=(h, w), ori_shape=(h, w))
        return results


@TRANSFORMS.register_module()
class PadToMinSize(BaseTransform):
    """Zero-pad the image on the bottom / right to at least ``min_size`` pixels a side
    (transformer backbones need one full patch); boxes are unaffected.

    As mmdet's ``Pad``, ``img_shape`` keeps the image's own size and ``pad_shape`` records the
    padded one: Deformable DETR masks the padding out of attention, and predictions are clipped to
    the image, not to the padding.

    Required keys: ``img``. Modified keys: ``img``. Added keys: ``pad_shape``.
    """

    def __init__(self, min_size: int = 16) -> None:
        self.min_size = min_size

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        if h >= self.min_size and w >= self.min_size:
            return results
        pad = ((0, max(0, self.min_size - h)), (0, max(0, self.min_size - w))) + ((0, 0),) * (img.ndim - 2)
        results['img'] = np.pad(img, pad)
        results['pad_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(min_size={self.min_size})'


@TRANSFORMS.register_module()
class SafeResize(Resize):
    """mmdet's ``Resize`` that keeps at least one pixel a side, so that a strip such as a 4000 x 2
    panorama resizes to 666 x 1 (then ``PadToMinSize`` pads it to a patch) instead of stopping the
    run in OpenCV.

    Follows mmdet 3.3.0's ``Resize._resize_img``: with ``keep_ratio`` mmcv rounds each side of
    ``size * factor`` to the nearest integer, and a side under half a pixel became 0. Only those
    sizes change here; every other image gets mmdet's result unchanged. As in mmdet, the boxes
    follow ``scale_factor``, here the per-side factors of the size actually used.
    """

    def _resize_img(self, results: dict) -> None:
        img = results.get('img')
        if img is None or not self.keep_ratio:
            return super()._resize_img(results)
        h, w = img.shape[:2]
        new_w, new_h = mmcv.rescale_size((w, h), results['scale'])
        if new_w >= 1 and new_h >= 1:
            return super()._resize_img(results)
        img = mmcv.imresize(img, (max(new_w, 1), max(new_h, 1)), interpolation=self.interpolation, backend=self.backend)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['scale_factor'] = (img.shape[1] / w, img.shape[0] / h)
        results['keep_ratio'] = True
