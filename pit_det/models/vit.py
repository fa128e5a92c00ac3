"""Vision Transformer (DeiT) as a detection backbone emitting chosen block outputs.

Papers: Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, arXiv:2010.11929;
Touvron et al., "Training data-efficient image transformers & distillation through
attention" (DeiT), ICML 2021, arXiv:2012.12877. The parameter layout is that of the
official DeiT checkpoints and timm's ``VisionTransformer``, so their weights load directly.

For detection the PiT paper (Sec. 4.2) takes ViT-S features after layers 2, 8 and 12,
mirroring the positions of PiT's pooling layers; all three are at stride 16.
"""

from typing import Dict, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS
from mmengine.model.weight_init import trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checkpoint import StateDict
from .base import TransformerBackbone, init_linear_trunc_normal
from .layers import Block, pad_to_grid, resize_pos_embed

# DeiT Table 1: ViT-Ti / ViT-S / ViT-B (= DeiT-Ti / DeiT-S / DeiT-B), 12 blocks, patch 16.
ARCH_SETTINGS: Dict[str, dict] = {
    'ti': dict(embed_dim=192, depth=12, num_heads=3),
    's': dict(embed_dim=384, depth=12, num_heads=6),
    'b': dict(embed_dim=768, depth=12, num_heads=12),
}


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches projected by a strided conv."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H // patch, W // patch)."""
        return self.proj(x)


@MODELS.register_module()
class ViT(TransformerBackbone):
    """ViT / DeiT backbone returning raw outputs of chosen blocks as NCHW maps.

    Outputs are taken before the final norm, one per ``out_indices`` entry, all at
    stride ``patch_size``. The image is zero-padded on the bottom / right to a multiple
    of the patch size, and the position embedding, stored at its pretraining grid (14 x 14
    at 224), is resized bicubically to the token grid in ``forward``.

    Args:
        arch: One of ``'ti'``, ``'s'``, ``'b'``.
        out_indices: 0-based block indices to return; the default (1, 7, 11) are layers
            2, 8 and 12 as in the PiT paper.
        distilled: Whether the model has DeiT's distillation token (never returned).
        img_size: Pretraining image size that fixes the stored position-embedding grid.
        patch_size: Patch size and stride of the embedding.
        mlp_ratio: Hidden width of the MLP relative to the embedding width.
        drop_rate: Dropout after the position embedding, attention projection and MLP.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth, increasing linearly over the blocks.
        frozen_stages: -1 freezes nothing; 0 freezes the patch embedding, position
            embedding and tokens; k > 0 also freezes blocks 0..k-1. Frozen parts stay in
            eval mode and get no gradient.
        with_cp: Activation checkpointing in every block.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads official DeiT or timm
            ViT weights through :func:`checkpoint_filter_fn`.

    Attributes:
        out_channels: Channels of each returned map.
        out_strides: Stride of each returned map relative to the input.
    """

    def __init__(
        self,
        arch: str = 's',
        out_indices: Sequence[int] = (1, 7, 11),
        distilled: bool = False,
        img_size: int = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        frozen_stages: int = -1,
        with_cp: bool = False,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if arch not in ARCH_SETTINGS:
            raise ValueError(f'unknown ViT arch {arch!r}; expected one of {sorted(ARCH_SETTINGS)}')
        cfg = ARCH_SETTINGS[arch]
        self.arch = arch
        embed_dim, depth = cfg['embed_dim'], cfg['depth']
        self.patch_size = patch_size
        self.out_indices = tuple(out_indices)
        if not self.out_indices or any(i not in range(depth) for i in self.out_indices):
            raise ValueError(f'out_indices={out_indices!r} must be a non-empty subset of range({depth})')
        if not -1 <= frozen_stages <= depth:
            raise ValueError(f'frozen_stages={frozen_stages} must be in [-1, {depth}]')
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp
        self.num_tokens = 2 if distilled else 1
        self.grid = img_size // patch_size

        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        # Layout of DeiT / timm: the class (and distillation) token positions come first.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens + self.grid**2, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, cfg['num_heads'], mlp_ratio, drop=drop_rate, attn_drop=attn_drop_rate, drop_path=p)
                for p in dpr
            ]
        )

        self.out_channels = (embed_dim,) * len(self.out_indices)
        self.out_strides = (patch_size,) * len(self.out_indices)
        self._init_random()
        self._freeze_stages()

    def _init_random(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            trunc_normal_(self.dist_token, std=0.02)
        init_linear_trunc_normal(self.blocks)

    def frozen_parts(self) -> list:
        if self.frozen_stages < 0:
            return []
        tokens = [p for p in (self.pos_embed, self.cls_token, self.dist_token) if p is not None]
        return [self.patch_embed, *tokens, *self.blocks[: self.frozen_stages]]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Args:
            x: (B, 3, H, W) images, H and W >= ``patch_size``.

        Returns:
            One (B, C, ceil(H / 16), ceil(W / 16)) map per ``out_indices`` entry.
        """
        x = self.patch_embed(pad_to_grid(x, self.patch_size, self.patch_size))
        B, C, H, W = x.shape
        pos_tokens, pos_grid = self.pos_embed[:, : self.num_tokens], self.pos_embed[:, self.num_tokens :]
        pos_grid = pos_grid.reshape(1, self.grid, self.grid, C).permute(0, 3, 1, 2)
        pos_grid = resize_pos_embed(pos_grid, (H, W)).flatten(2).transpose(1, 2)
        tokens = self.cls_token if self.dist_token is None else torch.cat([self.cls_token, self.dist_token], 1)
        seq = torch.cat([(tokens + pos_tokens).expand(B, -1, -1), x.flatten(2).transpose(1, 2) + pos_grid], 1)
        seq = self.pos_drop(seq)
        outs = []
        for i, blk in enumerate(self.blocks[: max(self.out_indices) + 1]):
            seq = checkpoint(blk, seq, use_reentrant=False) if self.with_cp and seq.requires_grad else blk(seq)
            if i in self.out_indices:
                outs.append(seq[:, self.num_tokens :].transpose(1, 2).reshape(B, C, H, W))
        return tuple(outs)


def checkpoint_filter_fn(state_dict: StateDict) -> StateDict:
    """Convert official DeiT or timm ViT weights to this backbone's layout.

    Both already share the layout; classifier heads (``head``, ``head_dist``), the final
    ``norm`` / ``fc_norm`` (outputs are taken before it) and timm's pre-logits are dropped.
    """
    return {k: v for k, v in state_dict.items() if not k.startswith(('head', 'norm.', 'fc_norm.', 'pre_logits.'))}


ViT.checkpoint_filter = staticmethod(checkpoint_filter_fn)
