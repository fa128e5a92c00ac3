"""Transformer pieces shared by the PiT and ViT backbones.

Parameter names follow timm's ``vision_transformer.Block`` (``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), which is also the layout of the
official DeiT and PiT checkpoints, so their weights load without renaming.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): in training, each sample's residual branch is dropped
    with probability ``drop_prob`` and the kept ones scaled by ``1 / (1 - drop_prob)``; identity
    in eval. timm's ``DropPath`` semantics and random draws (one Bernoulli per sample), so training
    runs reproduce; pit-det's own, so that importing pit-det does not import timm (about 1 s of
    every tool's start)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # one draw per sample
        return x * mask.div_(keep) if keep > 0 else x * mask  # drop_prob 1: every branch dropped, no 0 / 0

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}'


class Attention(nn.Module):
    """Multi-head self-attention computed with ``F.scaled_dot_product_attention``."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim={dim} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, with dropout after each."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def resize_pos_embed(pos_embed: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bicubically resample a (1, C, h, w) position embedding to (1, C, *size).

    Returned unchanged when the grid already matches, so that inputs of the
    pretraining size reproduce the reference model exactly.
    """
    if tuple(pos_embed.shape[-2:]) == tuple(size):
        return pos_embed
    return F.interpolate(pos_embed, size=size, mode='bicubic', align_corners=False)


def pad_to_grid(x: torch.Tensor, patch_size: int, stride: int) -> torch.Tensor:
    """Zero-pad a (B, C, H, W) image on the bottom / right so a ``patch_size`` conv
    with ``stride`` covers every pixel: the last window ends at or past the border.

    Raises:
        ValueError: if H or W is smaller than one patch.
    """
    H, W = x.shape[-2:]
    if H < patch_size or W < patch_size:
        raise ValueError(f'input of {H}x{W} pixels is smaller than one {patch_size}x{patch_size} patch')
    # Padding by 0 is a copy, not a branch: the graph stays the same for every size (torch.export).
    return F.pad(x, (0, -(W - patch_size) % stride, 0, -(H - patch_size) % stride))
