"""Where deformable attention samples: the detector-side counterpart of :mod:`.attention`.

Deformable DETR (arXiv 2010.04159, Eq. 3) lets every query read P points per head on each of
the L feature levels, at learned offsets from its reference point, with learned weights. From the
kernel inputs that :func:`pit_det.models.record_sampling` records, this module computes, per
attention layer:

- **level mass**: the share of the attention weight that goes to each level (sums to 1);
- **on-map share**: per level, the share of that level's weight on samples that lie on the map.
  A sample off the map reads zeros (the kernels' zero padding), so its weight is spent on nothing;
- **sampling distance**: the attention-weighted mean distance of the on-map sample points from
  the query's reference point (the box centre for the decoder's box references), in input pixels
  and in tokens of the level sampled (pixels / the level's stride). Off-map samples are left out:
  their distance says how far a query reaches past the image, not where it reads.

All of it is for one unpadded image at a time, as :func:`run_recorded` runs it (the valid ratios
are 1, so normalised coordinates cover the whole input).
"""

import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmdet.utils import get_test_pipeline_cfg
from mmengine.dataset import pseudo_collate
from torch import Tensor, nn

from ..export.wrappers import DetectorCore
from ..models import load_detector, record_sampling
from .table5 import detector_key


@torch.no_grad()
def run_recorded(detector: nn.Module, image: Tensor) -> Tuple[Tensor, Tensor, List[dict]]:
    """The detector on one normalised, unpadded (1, 3, H, W) image with its sampling recorded.

    Returns:
        logits: (Q, K) of the last decoder layer.
        boxes: (Q, 4) (cx, cy, w, h) normalised to the input.
        records: :func:`pit_det.models.record_sampling`'s, encoder layers then decoder layers.
    """
    with record_sampling(detector) as records:
        logits, boxes = DetectorCore(detector.eval())(image)
    return logits[0], boxes[0], records


def top_queries(logits: Tensor, k: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The k best (query, class) pairs, as the head's post-processing ranks them: sigmoid scores,
    top-k over all pairs. Returns (queries, labels, scores), each (k,)."""
    num_classes = logits.shape[-1]
    scores, index = logits.sigmoid().flatten().topk(min(k, logits.numel()))
    return index // num_classes, index % num_classes, scores


def reference_centres(record: dict) -> Tensor:
    """(B, Q, L, 2) reference points of a record: the points, or the centres of box references."""
    return record['reference_points'][..., :2]


def level_mass(record: dict) -> Tensor:
    """(L,) share of the attention weight on each level, averaged over images, queries and heads."""
    return record['attention_weights'].sum(-1).mean(dim=(0, 1, 2))


def on_map(record: dict) -> Tensor:
    """(B, Q, M, L, P) True where a sample lies on its level's map: normalised x and y in [0, 1].

    Within half a token of the edge, bilinear interpolation reads partly the zero padding; such
    samples count as on the map, since their centre is."""
    loc = record['sampling_locations']  # (B, Q, M, L, P, 2)
    return ((loc >= 0) & (loc <= 1)).all(dim=-1)


def on_map_share(record: dict) -> Tensor:
    """(L,) share of each level's attention weight on samples on the map (NaN for a level
    without weight)."""
    weight = record['attention_weights']  # (B, Q, M, L, P)
    return (weight * on_map(record)).sum(dim=(0, 1, 2, 4)) / weight.sum(dim=(0, 1, 2, 4))


def sampling_distance(record: dict, input_hw: Tuple[int, int]) -> Dict[str, Tensor]:
    """Attention-weighted mean distance of the on-map samples (:func:`on_map`) from the reference
    point.

    Returns:
        ``pixels`` (L,) and ``tokens`` (L,): per level, the weight-weighted mean distance within
        that level (input pixels; tokens of that level), and ``pixels_all`` (): over all levels.
        NaN where no weight lands on the map.
    """
    loc = record['sampling_locations']  # (B, Q, M, L, P, 2)
    weight = record['attention_weights'] * on_map(record)  # (B, Q, M, L, P), zero off the map
    offset = loc - reference_centres(record)[:, :, None, :, None, :]  # (B, Q, M, L, P, 2)
    H, W = input_hw
    pixels = (offset * offset.new_tensor([W, H])).norm(dim=-1)  # (B, Q, M, L, P)
    level_wh = record['spatial_shapes'].flip(-1).to(offset.dtype)  # (L, 2) as (W_l, H_l)
    tokens = (offset * level_wh[:, None, :]).norm(dim=-1)
    per_level = weight.sum(dim=(0, 1, 2, 4))  # (L,); 0 / 0 = NaN for a level read nowhere on the map
    return dict(
        pixels=(weight * pixels).sum(dim=(0, 1, 2, 4)) / per_level,
        tokens=(weight * tokens).sum(dim=(0, 1, 2, 4)) / per_level,
        pixels_all=(weight * pixels).sum() / weight.sum(),
    )


def summarize(records: List[dict], input_hw: Tuple[int, int]) -> Dict[str, Dict[str, List]]:
    """Per part ('encoder', 'decoder'): for each layer, its level mass, per-level on-map share,
    per-level distances in pixels and tokens, and its all-level distance in pixels (plain lists,
    for JSON; NaN where no weight lands on the map)."""
    out: Dict[str, Dict[str, List]] = {}
    for record in records:
        part = record['module'].split('.')[0]
        stats = out.setdefault(
            part, dict(level_mass=[], on_map=[], distance_px=[], distance_tokens=[], distance_px_all=[])
        )
        dist = sampling_distance(record, input_hw)
        stats['level_mass'].append(level_mass(record).tolist())
        stats['on_map'].append(on_map_share(record).tolist())
        stats['distance_px'].append(dist['pixels'].tolist())
        stats['distance_tokens'].append(dist['tokens'].tolist())
        stats['distance_px_all'].append(dist['pixels_all'].item())
    return out


def mean_over_images(per_image: List[Dict[str, Dict[str, list]]]) -> Dict[str, Dict[str, list]]:
    """Element-wise mean of :func:`summarize` results, over the images where
    a value is defined (a distance is NaN on an image whose samples all fall off the map)."""
    out = {}
    for part in per_image[0]:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # all-NaN stays NaN
            out[part] = {
                key: np.nanmean([np.asarray(s[part][key], dtype=float) for s in per_image], axis=0).tolist()
                for key in per_image[0][part]
            }
    return out


def encoder_token(record: dict, input_hw: Tuple[int, int], xy_input: Tuple[float, float]) -> int:
    """Index of the finest level's token at input pixel ``xy_input``."""
    H_l, W_l = record['spatial_shapes'][0].tolist()
    col = min(max(int(xy_input[0] / input_hw[1] * W_l), 0), W_l - 1)
    row = min(max(int(xy_input[1] / input_hw[0] * H_l), 0), H_l - 1)
    return row * W_l + col


class RecordedDetector:
    """A trained detector, its test pipeline and its name; :meth:`run` records its deformable attention."""

    def __init__(self, config: str, checkpoint: str) -> None:
        self.name = detector_key(config) or Path(config).stem
        self.model = load_detector(config, checkpoint)
        self.pipeline = Compose(get_test_pipeline_cfg(self.model.cfg))
        self.classes = self.model.dataset_meta['classes']

    def run(self, path: Path) -> Tuple[torch.Tensor, torch.Tensor, List[dict], Tuple[int, int], np.ndarray]:
        """(logits, boxes, records, input (H, W), scale (w, h)) of one image through the test pipeline."""
        data = self.pipeline(dict(img_path=str(path), img_id=0))
        batch = self.model.data_preprocessor(pseudo_collate([data]), False)
        image, sample = batch['inputs'], batch['data_samples'][0]
        logits, boxes, records = run_recorded(self.model, image)
        return logits, boxes, records, tuple(image.shape[-2:]), np.asarray(sample.scale_factor)
