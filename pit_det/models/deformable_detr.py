"""mmdet's Deformable DETR with a selectable multi-scale deformable attention kernel, for images of
any size, traceable by ``torch.export``."""

from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet
from mmdet.models.detectors import DeformableDETR
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList, SampleList
from torch import Tensor

from ..checkpoint import require_pretrained_loaded
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

    The level shapes travel as Python ints (``level_shapes``) beside mmdet's (L, 2) tensor, and
    everything that needs them as numbers (reference points, proposals, the export kernels
    'grid_sample' and 'gather') reads the ints: mmdet reads the tensor's values, which
    ``torch.export`` cannot trace (they are data, not shapes). The results are mmdet's, bit for bit.

    Args:
        msda_impl: which deformable-attention kernel runs, one of ``pit_det.ops.IMPLS``: 'auto'
            (the default: 'fast', or 'stock' where pit-det's C++ kernel cannot be built), 'fast',
            'stock' (mmcv's module unchanged), 'triton', or 'grid_sample' and 'gather' (standard
            ops, for export). The kernel each runs on CPU and on CUDA is the table in
            :mod:`pit_det.ops.ms_deform_attn`, and :func:`pit_det.ops.resolve` logs it.
            ``set_msda_impl(model, impl)`` switches a built model.
        **kwargs: ``DeformableDETR``'s arguments.
    """

    def __init__(self, *args, msda_impl: str = 'auto', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        set_msda_impl(self, msda_impl)

    def init_weights(self) -> None:
        """mmdet's, then a check that a backbone that mmengine's ``Pretrained`` init loaded (mmdet's
        ResNet) holds every tensor of its file (:func:`pit_det.checkpoint.require_pretrained_loaded`);
        pit-det's backbones load their files strictly, through their ``checkpoint_filter``; other
        mmdet backbones (Swin, PVT) convert their files' keys themselves, and are not checked."""
        super().init_weights()
        backbone = self.backbone
        if isinstance(backbone, ResNet) and not backbone.dcn and not backbone.plugins:
            require_pretrained_loaded(backbone)

    def pre_transformer(self, mlvl_feats: Tuple[Tensor], batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """Follows mmdet 3.3.0 ``DeformableDETR.pre_transformer`` (padding masks, position and level
        embeddings, flattening); differs in also giving the level shapes as Python ints: both dicts
        carry ``level_shapes``, [(H_l, W_l)], beside mmdet's (L, 2) ``spatial_shapes`` tensor."""
        batch_size = mlvl_feats[0].shape[0]
        input_h, input_w = batch_data_samples[0].batch_input_shape
        img_shapes = [sample.img_shape for sample in batch_data_samples]
        if all(h == input_h and w == input_w for h, w in img_shapes):  # no padding: no masks (as mmdet)
            masks = [None] * len(mlvl_feats)
            pos_embeds = [self.positional_encoding(None, input=feat) for feat in mlvl_feats]
        else:
            mask = mlvl_feats[0].new_ones((batch_size, input_h, input_w))  # 1 = padding
            for i, (h, w) in enumerate(img_shapes):
                mask[i, :h, :w] = 0
            masks = [F.interpolate(mask[None], size=feat.shape[-2:]).to(torch.bool)[0] for feat in mlvl_feats]
            pos_embeds = [self.positional_encoding(m) for m in masks]

        level_shapes = [tuple(feat.shape[-2:]) for feat in mlvl_feats]
        # (B, C, H_l, W_l) -> (B, H_l * W_l, C), concatenated over levels: (B, S, C)
        feat_flatten = torch.cat([feat.flatten(2).transpose(1, 2) for feat in mlvl_feats], 1)
        pos_flatten = torch.cat(
            [
                pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, pos in enumerate(pos_embeds)
            ],
            1,
        )
        mask_flatten = None if masks[0] is None else torch.cat([m.flatten(1) for m in masks], 1)  # (B, S)
        spatial_shapes = level_shapes_tensor(level_shapes, feat_flatten.device)  # (L, 2)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        if masks[0] is None:
            valid_ratios = mlvl_feats[0].new_ones(batch_size, len(mlvl_feats), 2)
        else:
            valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1)  # (B, L, 2)
        levels = dict(
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            level_shapes=level_shapes,
        )
        encoder_inputs = dict(feat=feat_flatten, feat_mask=mask_flatten, feat_pos=pos_flatten, **levels)
        decoder_inputs = dict(memory_mask=mask_flatten, **levels)
        return encoder_inputs, decoder_inputs

    def forward_encoder(
        self,
        feat: Tensor,
        feat_mask: Optional[Tensor],
        feat_pos: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        valid_ratios: Tensor,
        level_shapes: List[Tuple[int, int]],
    ) -> Dict:
        """Follows mmdet 3.3.0 ``DeformableDETR.forward_encoder`` and
        ``DeformableDetrTransformerEncoder.forward``; differs in computing the reference points from
        ``level_shapes`` (traceable) and handing ``level_shapes`` to the layers, whose deformable
        attention reads them for the 'grid_sample' and 'gather' kernels."""
        reference_points = encoder_reference_points(level_shapes, valid_ratios)
        memory = feat
        for layer in self.encoder.layers:
            memory = layer(
                query=memory,
                query_pos=feat_pos,
                key_padding_mask=feat_mask,
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
                valid_ratios=valid_ratios,
                reference_points=reference_points,
                level_shapes=level_shapes,
            )
        return dict(memory=memory, memory_mask=feat_mask, spatial_shapes=spatial_shapes, level_shapes=level_shapes)

    def pre_decoder(
        self, memory: Tensor, memory_mask: Optional[Tensor], spatial_shapes: Tensor, level_shapes: List[Tuple[int, int]]
    ) -> Tuple[Dict, Dict]:
        """Follows mmdet 3.3.0 ``DeformableDETR.pre_decoder``, two-stage branch (the single-stage
        one is mmdet's, called as is). It differs in two places:

        * the queries are the top ``min(num_queries, N)`` of the N encoder tokens (mmdet's ``topk``
          fails for N < num_queries);
        * the proposals come from ``level_shapes`` (Python ints, traceable), passed on under their
          own name to :meth:`gen_encoder_output_proposals`.

        Returns:
            mmdet's ``decoder_inputs_dict`` and ``head_inputs_dict``.
        """
        if not self.as_two_stage:
            return super().pre_decoder(memory, memory_mask, spatial_shapes)
        batch_size, num_tokens, c = memory.shape
        num_queries = min(self.num_queries, num_tokens)
        output_memory, output_proposals = self.gen_encoder_output_proposals(
            memory, memory_mask, spatial_shapes, level_shapes
        )
        enc_outputs_class = self.bbox_head.cls_branches[self.decoder.num_layers](output_memory)
        enc_outputs_coord_unact = self.bbox_head.reg_branches[self.decoder.num_layers](output_memory) + output_proposals
        enc_outputs_coord = enc_outputs_coord_unact.sigmoid()
        # As mmdet and the official code: the first class channel scores the tokens as foreground.
        topk_proposals = torch.topk(enc_outputs_class[..., 0], num_queries, dim=1)[1]  # (B, num_queries)
        topk_coords_unact = torch.gather(enc_outputs_coord_unact, 1, topk_proposals.unsqueeze(-1).repeat(1, 1, 4))
        topk_coords_unact = topk_coords_unact.detach()
        reference_points = topk_coords_unact.sigmoid()
        pos_trans_out = self.pos_trans_norm(self.pos_trans_fc(self.get_proposal_pos_embed(topk_coords_unact)))
        query_pos, query = torch.split(pos_trans_out, c, dim=2)
        decoder_inputs_dict = dict(query=query, query_pos=query_pos, memory=memory, reference_points=reference_points)
        head_inputs_dict = (
            dict(enc_outputs_class=enc_outputs_class, enc_outputs_coord=enc_outputs_coord) if self.training else dict()
        )
        return decoder_inputs_dict, head_inputs_dict

    def gen_encoder_output_proposals(
        self,
        memory: Tensor,
        memory_mask: Optional[Tensor],
        spatial_shapes: Tensor,
        level_shapes: Optional[List[Tuple[int, int]]] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Follows mmdet 3.3.0 ``DeformableDETR.gen_encoder_output_proposals``: a box (cx, cy,
        0.05 * 2^l, same) at every pixel of every level. It differs in reading the level sizes
        from ``level_shapes`` (Python ints; from ``spatial_shapes`` when not given), which
        ``torch.export`` keeps symbolic where mmdet's reads of the tensor's values would freeze
        them, and in ``arange`` for mmdet's ``linspace`` (the same values).

        Returns:
            memory (B, S, C) transformed for the first-stage head, and the proposals (B, S, 4)
            as logits (inverse sigmoid; +inf where invalid or padding).
        """
        if level_shapes is None:
            level_shapes = [tuple(hw) for hw in spatial_shapes.tolist()]
        bs = memory.shape[0]
        proposals, start = [], 0
        for lvl, (h, w) in enumerate(level_shapes):
            if memory_mask is not None:
                mask = memory_mask[:, start : start + h * w].view(bs, h, w, 1)
                valid_h = (~mask[:, :, 0, 0]).sum(1).unsqueeze(-1)
                valid_w = (~mask[:, 0, :, 0]).sum(1).unsqueeze(-1)
                scale = torch.cat([valid_w, valid_h], 1).view(bs, 1, 1, 2)
            else:
                scale = level_shapes_tensor([(w, h)], memory.device).to(memory.dtype).view(1, 1, 1, 2)
            grid_y, grid_x = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=memory.device),
                torch.arange(w, dtype=torch.float32, device=memory.device),
                indexing='ij',
            )
            grid = torch.cat([grid_x.unsqueeze(-1), grid_y.unsqueeze(-1)], -1)  # (h, w, 2) as (x, y)
            grid = (grid.unsqueeze(0).expand(bs, -1, -1, -1) + 0.5) / scale
            wh = torch.ones_like(grid) * 0.05 * (2.0**lvl)
            proposals.append(torch.cat((grid, wh), -1).view(bs, -1, 4))
            start += h * w
        proposals = torch.cat(proposals, 1)
        valid = ((proposals > 0.01) & (proposals < 0.99)).sum(-1, keepdim=True) == proposals.shape[-1]
        proposals = torch.log(proposals / (1 - proposals))
        if memory_mask is not None:
            proposals = proposals.masked_fill(memory_mask.unsqueeze(-1), float('inf'))
            memory = memory.masked_fill(memory_mask.unsqueeze(-1), float(0))
        proposals = proposals.masked_fill(~valid, float('inf'))
        memory = memory.masked_fill(~valid, float(0))
        return self.memory_trans_norm(self.memory_trans_fc(memory)), proposals

    def forward_decoder(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_mask: Optional[Tensor],
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        valid_ratios: Tensor,
        level_shapes: List[Tuple[int, int]],
    ) -> Dict:
        """Follows mmdet 3.3.0 ``DeformableDETR.forward_decoder``; differs only in handing
        ``level_shapes`` to the cross-attention layers."""
        inter_states, inter_references = self.decoder(
            query=query,
            value=memory,
            query_pos=query_pos,
            key_padding_mask=memory_mask,
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            reg_branches=self.bbox_head.reg_branches if self.with_box_refine else None,
            level_shapes=level_shapes,
        )
        return dict(hidden_states=inter_states, references=[reference_points, *inter_references])

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList, rescale: bool = True) -> SampleList:
        """Follows mmdet 3.3.0 ``DetectionTransformer.predict``; differs in capping the head's
        ``max_per_img`` at the number of (query, class) candidates, which a batch of few queries
        can undercut (mmdet's head reads it from ``test_cfg`` only, hence the temporary
        ``test_cfg``), and in running the head in fp32 under autocast."""
        img_feats = self.extract_feat(batch_inputs)
        head_inputs = self.forward_transformer(img_feats, batch_data_samples)
        # hidden_states: (num_decoder_layers, B, num_queries_used, C)
        candidates = head_inputs['hidden_states'].shape[2] * self.bbox_head.cls_out_channels
        test_cfg = self.bbox_head.test_cfg
        cap = min(test_cfg.get('max_per_img', candidates), candidates)
        # Under autocast the head (class and box branches, box decoding) still runs in fp32: bf16
        # boxes would be off by pixels at image scale, and COCO tools cannot read bf16.
        head_inputs = {k: [t.float() for t in v] if isinstance(v, list) else v.float() for k, v in head_inputs.items()}
        with (
            _attribute(self.bbox_head, 'test_cfg', {**test_cfg, 'max_per_img': cap}),
            torch.autocast(batch_inputs.device.type, enabled=False),
        ):
            results = self.bbox_head.predict(**head_inputs, rescale=rescale, batch_data_samples=batch_data_samples)
        return self.add_pred_to_datasample(batch_data_samples, results)


def level_shapes_tensor(level_shapes: List[Tuple[int, int]], device: torch.device) -> Tensor:
    """[(H_l, W_l)] -> (L, 2) int64, built so that symbolic sizes stay symbolic under
    ``torch.export`` (``torch.tensor`` would freeze them to the example's)."""
    return torch.stack(
        [torch.stack([torch.scalar_tensor(n, dtype=torch.int64, device=device) for n in hw]) for hw in level_shapes]
    )


def encoder_reference_points(level_shapes: List[Tuple[int, int]], valid_ratios: Tensor) -> Tensor:
    """mmdet's ``get_encoder_reference_points`` from Python sizes: every pixel centre of every
    level, normalised, (B, S, L, 2). ``arange(n) + 0.5`` is mmdet's ``linspace(0.5, n - 0.5, n)``
    exactly (all values are exact in fp32) and traces with symbolic n."""
    points = []
    for lvl, (h, w) in enumerate(level_shapes):
        ref_y, ref_x = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=valid_ratios.device) + 0.5,
            torch.arange(w, dtype=torch.float32, device=valid_ratios.device) + 0.5,
            indexing='ij',
        )
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
        points.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]
