"""Pooling-based Vision Transformer (PiT) as a multi-scale detection backbone.

Paper: Byeongho Heo, Sangdoo Yun, Dongyoon Han, Sanghyuk Chun, Junsuk Choe, Seong Joon Oh,
"Rethinking Spatial Dimensions of Vision Transformers", ICCV 2021, arXiv:2103.16302.
Architecture follows the official code (github.com/naver-ai/pit, Apache-2.0) and timm's
``models/pit.py``; the parameter layout is timm's (>= 0.9), so their weights load directly.

A PiT is a ViT with two pooling layers between three transformer stages. The pooling
layer (paper Fig. 4) reshapes the spatial tokens to a (C, H, W) map, halves the grid and
doubles the channels with a stride-2 depthwise convolution, and maps the class (and
distillation) tokens to the new width with a fully-connected layer.
"""

import re
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS
from mmengine.model.weight_init import trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checkpoint import StateDict
from .base import TransformerBackbone, init_linear_trunc_normal
from .layers import Block, pad_to_grid, resize_pos_embed

# Paper Table 1. Channels of stage i are base_dim * heads[i]. PiT-B uses a 14-pixel
# patch with stride 7 (31 x 31 tokens at 224), as in the official code and timm.
ARCH_SETTINGS: Dict[str, dict] = {
    'ti': dict(patch_size=16, stride=8, base_dim=32, depths=(2, 6, 4), heads=(2, 4, 8)),
    'xs': dict(patch_size=16, stride=8, base_dim=48, depths=(2, 6, 4), heads=(2, 4, 8)),
    's': dict(patch_size=16, stride=8, base_dim=48, depths=(2, 6, 4), heads=(3, 6, 12)),
    'b': dict(patch_size=14, stride=7, base_dim=64, depths=(3, 6, 4), heads=(4, 8, 16)),
}


class ConvEmbedding(nn.Module):
    """Overlapping patch embedding: a ``patch_size`` conv with ``stride``."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, (H - patch) // stride + 1, (W - patch) // stride + 1)."""
        return self.conv(x)


class Pooling(nn.Module):
    """PiT pooling: depthwise 3x3 stride-2 conv on the map, FC on the class tokens."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1, groups=in_dim)
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W), (B, T, C) -> (B, 2C, ceil(H/2), ceil(W/2)), (B, T, 2C)."""
        return self.conv(x), self.fc(tokens)


class PiTStage(nn.Module):
    """An optional pooling layer followed by ``depth`` transformer blocks over
    [class tokens; spatial tokens]."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        pool: Optional[Pooling],
        drop_rate: float,
        attn_drop_rate: float,
        drop_path_rates: Sequence[float],
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.blocks = nn.Sequential(
            *[
                Block(dim, num_heads, mlp_ratio, drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr)
                for dpr in drop_path_rates
            ]
        )
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, C_in, H, W), (B, T, C_in) -> (B, C, H', W'), (B, T, C)."""
        if self.pool is not None:
            x, tokens = self.pool(x, tokens)
        B, C, H, W = x.shape
        num_tokens = tokens.shape[1]
        seq = torch.cat([tokens, x.flatten(2).transpose(1, 2)], dim=1)
        for blk in self.blocks:
            if self.with_cp and seq.requires_grad:
                seq = checkpoint(blk, seq, use_reentrant=False)
            else:
                seq = blk(seq)
        return seq[:, num_tokens:].transpose(1, 2).reshape(B, C, H, W), seq[:, :num_tokens]


@MODELS.register_module()
class PiT(TransformerBackbone):
    """PiT backbone returning its stage outputs as NCHW feature maps.

    Any input size of at least one patch is accepted: the image is zero-padded on the
    bottom / right so the strided patch embedding covers every pixel, and the position
    embedding, stored at its 224-pixel pretraining grid, is resized bicubically to the
    token grid in ``forward``. For PiT-S at 224 x 224 the stages are 27, 14 and 7 tokens
    wide with 144, 288 and 576 channels.

    Args:
        arch: One of ``'ti'``, ``'xs'``, ``'s'``, ``'b'`` (paper Table 1).
        out_indices: Stages to return, from (0, 1, 2).
        distilled: Whether the model has a distillation token (DeiT-style distilled
            checkpoints, e.g. ``pit_s_distill_819.pth``). It is never returned.
        img_size: Pretraining image size that fixes the stored position-embedding grid.
        mlp_ratio: Hidden width of the MLP relative to the embedding width.
        drop_rate: Dropout after the position embedding, attention projection and MLP.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth, increasing linearly over all blocks.
        frozen_stages: -1 freezes nothing; 0 freezes the patch embedding, position
            embedding and class tokens; k > 0 also freezes stages 0..k-1 (with their
            pooling). Frozen parts stay in eval mode and get no gradient.
        with_cp: Activation checkpointing in every block (saves memory, costs time).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads official naver-ai
            or timm weights through :func:`checkpoint_filter_fn`.

    Attributes:
        out_channels: Channels of each returned map.
        out_strides: Nominal stride of each returned map relative to the input.
    """

    def __init__(
        self,
        arch: str = 's',
        out_indices: Sequence[int] = (0, 1, 2),
        distilled: bool = False,
        img_size: int = 224,
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
            raise ValueError(f'unknown PiT arch {arch!r}; expected one of {sorted(ARCH_SETTINGS)}')
        cfg = ARCH_SETTINGS[arch]
        self.arch = arch
        self.patch_size, self.stride = cfg['patch_size'], cfg['stride']
        depths, heads = cfg['depths'], cfg['heads']
        dims = [cfg['base_dim'] * h for h in heads]
        num_stages = len(depths)
        self.out_indices = tuple(out_indices)
        if not self.out_indices or any(i not in range(num_stages) for i in self.out_indices):
            raise ValueError(f'out_indices={out_indices!r} must be a non-empty subset of {tuple(range(num_stages))}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} must be in [-1, {num_stages}]')
        self.frozen_stages = frozen_stages
        self.num_tokens = 2 if distilled else 1

        grid = (img_size - self.patch_size) // self.stride + 1
        self.patch_embed = ConvEmbedding(in_channels, dims[0], self.patch_size, self.stride)
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], grid, grid))
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_tokens, dims[0]))
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages = []
        for i, (depth, num_heads) in enumerate(zip(depths, heads)):
            pool = Pooling(dims[i - 1], dims[i]) if i > 0 else None
            start = sum(depths[:i])
            stages.append(
                PiTStage(
                    dims[i],
                    depth,
                    num_heads,
                    mlp_ratio,
                    pool,
                    drop_rate,
                    attn_drop_rate,
                    dpr[start : start + depth],
                    with_cp=with_cp,
                )
            )
        self.transformers = nn.ModuleList(stages)

        self.out_channels = tuple(dims[i] for i in self.out_indices)
        self.out_strides = tuple(self.stride * 2**i for i in self.out_indices)
        self._init_random()
        self._freeze_stages()

    def _init_random(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        init_linear_trunc_normal(self.transformers)

    def frozen_parts(self) -> list:
        if self.frozen_stages < 0:
            return []
        return [self.patch_embed, self.pos_embed, self.cls_token, *self.transformers[: self.frozen_stages]]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Args:
            x: (B, 3, H, W) images, H and W >= patch size (16; 14 for PiT-B).

        Returns:
            One (B, C_i, H_i, W_i) map per ``out_indices`` entry, with
            H_0 = ceil((H - patch) / stride) + 1 and each later stage halving it
            (rounded up); C_i = ``out_channels[i]``.
        """
        x = self.patch_embed(pad_to_grid(x, self.patch_size, self.stride))
        x = self.pos_drop(x + resize_pos_embed(self.pos_embed, x.shape[-2:]))
        tokens = self.cls_token.expand(x.shape[0], -1, -1)
        outs = []
        for i, stage in enumerate(self.transformers[: max(self.out_indices) + 1]):
            x, tokens = stage(x, tokens)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


def checkpoint_filter_fn(state_dict: StateDict) -> StateDict:
    """Convert official naver-ai/pit or timm PiT weights to this backbone's layout.

    - official (``pools.N.{conv,fc}``): the pooling after stage N becomes ``transformers.{N+1}.pool``;
    - timm < 0.9 (``transformers.N.pool``, pooling at the end of stage N): likewise shifted by one;
    - timm >= 0.9 (``transformers.{N+1}.pool``): already this layout.
    Classifier heads and the final norm (applied to the class token only) are dropped.
    """
    old_timm = any(k.startswith('transformers.0.pool.') for k in state_dict)
    out = {}
    for k, v in state_dict.items():
        if k.startswith(('head', 'norm.')):
            continue
        k = re.sub(r'^pools\.(\d+)\.', lambda m: f'transformers.{int(m.group(1)) + 1}.pool.', k)
        if old_timm:
            k = re.sub(r'^transformers\.(\d+)\.pool\.', lambda m: f'transformers.{int(m.group(1)) + 1}.pool.', k)
        out[k] = v
    return out


PiT.checkpoint_filter = staticmethod(checkpoint_filter_fn)
