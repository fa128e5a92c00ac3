"""mmdet's own inference API on pit-det's configs.

mmdet 3.3.0's ``DetInferencer._init_pipeline`` finds the test pipeline's image loader by its type
name, ``'LoadImageFromFile'``, to swap in its ``InferencerLoader`` (which also takes arrays), and
raises ``ValueError: LoadImageFromFile is not found in the test pipeline`` otherwise. pit-det's
configs load images with ``SafeLoadImageFromFile`` (a subclass that survives unreadable files in
long runs), so the lookup below also matches it. Only the lookup changes: mmdet's method does the
swap, as for its own configs. ``init_detector`` / ``inference_detector`` need no change.
"""
from typing import Tuple, Union

from mmdet.apis import DetInferencer

from .datasets.transforms import SafeLoadImageFromFile

_LOADER_NAMES = ('SafeLoadImageFromFile', 'pit_det.SafeLoadImageFromFile', SafeLoadImageFromFile)
_mmdet_get_transform_idx = DetInferencer._get_transform_idx


def _get_transform_idx(self, pipeline_cfg, name: Union[str, Tuple[str, type]]) -> int:
    """mmdet 3.3.0's lookup; where it looks for ``LoadImageFromFile`` and finds none, pit-det's
    loader's index."""
    index = _mmdet_get_transform_idx(self, pipeline_cfg, name)
    if index == -1 and 'LoadImageFromFile' in name:
        index = _mmdet_get_transform_idx(self, pipeline_cfg, _LOADER_NAMES)
    return index


DetInferencer._get_transform_idx = _get_transform_idx
