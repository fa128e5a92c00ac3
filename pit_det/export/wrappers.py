"""The modules that are exported: a Deformable DETR from normalised image to head outputs
(:class:`DetectorCore`), or to post-processed detections (:class:`DetectorWithPostprocess`)."""

from types import SimpleNamespace
from typing import Optional, Tuple

import torch
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from torch import Tensor, nn


class DetectorCore(nn.Module):
    """Backbone, neck, transformer and head of a Deformable DETR: (B, 3, H, W) -> raw outputs.

    Args:
        detector: a built ``PitDeformableDETR`` in eval mode.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            image: (B, 3, H, W) normalised, every image filling the whole batch shape (no padding,
                so no masks: what mmdet does for such batches too).

        Returns:
            logits: (B, Q, K) class logits of the last decoder layer.
            boxes: (B, Q, 4) boxes (cx, cy, w, h), normalised to the input size.
        """
        B, _, H, W = image.shape
        # What pre_transformer reads of a DetDataSample; not one itself, since DetDataSample
        # deep-copies its metainfo, which symbolic sizes (dynamic export) do not support.
        samples = [SimpleNamespace(batch_input_shape=(H, W), img_shape=(H, W))] * B
        head_inputs = self.detector.forward_transformer(self.detector.extract_feat(image), samples)
        all_logits, all_boxes = self.detector.bbox_head(head_inputs['hidden_states'], head_inputs['references'])
        return all_logits[-1], all_boxes[-1]


class DetectorWithPostprocess(DetectorCore):
    """:class:`DetectorCore` followed by mmdet's ``DeformableDETRHead`` post-processing (sigmoid
    scores, top-k over all query x class pairs, boxes to corners in pixels, clipped to the input)
    for every image of the batch.

    Args:
        detector: a built ``PitDeformableDETR`` in eval mode.
        max_per_img: detections per image; default the head's ``test_cfg.max_per_img``.
    """

    def __init__(self, detector: nn.Module, max_per_img: Optional[int] = None) -> None:
        super().__init__(detector)
        self.max_per_img = max_per_img or detector.bbox_head.test_cfg.get('max_per_img', 100)

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            image: (B, 3, H, W) as for :class:`DetectorCore`.

        Returns:
            boxes: (B, k, 4) float (x1, y1, x2, y2) in input pixels.
            scores: (B, k) float, descending.
            labels: (B, k) int64.
            with k = min(max_per_img, Q * K).
        """
        logits, boxes = super().forward(image)
        B, Q, K = logits.shape
        H, W = image.shape[-2:]
        scores, index = logits.sigmoid().flatten(1).topk(min(self.max_per_img, Q * K), dim=1)  # (B, k)
        labels = index % K
        boxes = bbox_cxcywh_to_xyxy(boxes.gather(1, (index // K)[..., None].expand(-1, -1, 4)))
        size = torch.stack([torch.scalar_tensor(n, dtype=boxes.dtype, device=boxes.device) for n in (W, H, W, H)])
        boxes = torch.minimum((boxes * size).clamp(min=0), size)
        return boxes, scores, labels


def exportable(detector: nn.Module, postprocess: bool = True) -> nn.Module:
    """``detector`` in eval mode, wrapped for export."""
    return (DetectorWithPostprocess if postprocess else DetectorCore)(detector.eval()).eval()
