"""mmdet's Deformable DETR with a selectable multi-scale deformable attention kernel, for images of
any size."""
from contextlib import contextmanager
from typing import Dict, Iterator, Tuple

import torch
from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from torch import Tensor

from .msda import set_msda_impl


@contextmanager
def _attribute(obj, name: str, value) -> Iterator[None]:
    """Set ``obj.name = value`` for the duration of the block."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@MODELS.register_module()
class PitDeformableDETR(DeformableDETR):
    """``DeformableDETR`` (Zhu et al., arXiv 2010.04159) whose deformable attention runs on
    ``msda_impl``, and which predicts on images of any size; everything else, the state-dict keys
    included, is mmdet's.

    Two-stage Deformable DETR takes its ``num_queries`` decoder queries as the top-scoring encoder
    tokens. An image giving fewer tokens than that (a 20 x 2000 strip, an 8 x 8 icon, a small test
    scale) makes mmdet's ``topk`` fail ("selected index k out of range"). Here such a batch takes
    all of its ``N < num_queries`` tokens as queries, in training and inference; the decoder and
    the Hungarian matching work on any number of queries, and prediction returns at most
    ``min(max_per_img, N * num_classes)`` detections. Batches with at least ``num_queries`` tokens
    run exactly mmdet's code.

    Args:
        msda_impl: 'auto' (pit-det's CPU kernel when it builds, else mmcv's), 'fast' (pit-det's
            CPU kernel, an error if it cannot be built) or 'stock' (mmcv's code unchanged).
            On GPU every choice runs mmcv's CUDA kernel. ``set_msda_impl(model, impl)``
            switches a built model.
        **kwargs: ``DeformableDETR``'s arguments.
    """

    def __init__(self, *args, msda_impl: str = 'auto', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        set_msda_impl(self, msda_impl)

    def pre_decoder(self, memory: Tensor, memory_mask: Tensor, spatial_shapes: Tensor) -> Tuple[Dict, Dict]:
        """mmdet's, taking ``min(num_queries, N)`` proposals from ``memory`` (B, N, C)."""
        num_tokens = memory.shape[1]
        if not self.as_two_stage or num_tokens >= self.num_queries:
            return super().pre_decoder(memory, memory_mask, spatial_shapes)
        with _attribute(self, 'num_queries', num_tokens):
            return super().pre_decoder(memory, memory_mask, spatial_shapes)

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList, rescale: bool = True) -> SampleList:
        """mmdet's ``DetectionTransformer.predict``, with the head's ``max_per_img`` capped at the
        number of (query, class) candidates, which a batch of few queries can undercut, and the
        head in fp32 under autocast."""
        img_feats = self.extract_feat(batch_inputs)
        head_inputs = self.forward_transformer(img_feats, batch_data_samples)
        # hidden_states: (num_decoder_layers, B, num_queries_used, C)
        candidates = head_inputs['hidden_states'].shape[2] * self.bbox_head.cls_out_channels
        test_cfg = self.bbox_head.test_cfg
        cap = min(test_cfg.get('max_per_img', candidates), candidates)
        # Under autocast the head (class and box branches, box decoding) still runs in fp32: bf16
        # boxes would be off by pixels at image scale, and COCO tools cannot read bf16.
        head_inputs = {k: [t.float() for t in v] if isinstance(v, list) else v.float() for k, v in head_inputs.items()}
        with _attribute(self.bbox_head, 'test_cfg', {**test_cfg, 'max_per_img': cap}), \
                torch.autocast(batch_inputs.device.type, enabled=False):
            results = self.bbox_head.predict(**head_inputs, rescale=rescale, batch_data_samples=batch_data_samples)
        return self.add_pred_to_datasample(batch_data_samples, results)
