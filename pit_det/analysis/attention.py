"""Attention entropy and normalized attention distance per transformer block (PiT paper
Sec. 3.3, eq. 1 and 2, Figure 5).

For a block with attention p_ij from spatial query token i to spatial key token j:

- entropy: ``-sum_j p_ij log p_ij``, averaged over queries, heads and images;
- distance: ``sum_j p_ij * ||pos_i - pos_j||``, averaged likewise, with token positions in
  coordinates relative to the token grid (``((x + 0.5) / W, (y + 0.5) / H)``) so that maps of
  different sizes -- ViT's 14 x 14, PiT's 27 / 14 / 7 -- are comparable.

Only spatial tokens count: the class / distillation tokens are removed as queries and keys
and the softmax is taken over the spatial keys alone. Queries are processed in chunks, so
memory stays bounded (PiT-S stage 1 at 400 x 667 has ~4,000 tokens).
"""

from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch
from mmdet.registry import MODELS
from torch import nn

from ..checkpoint import load_pretrained
from ..models import pit as pit_module
from ..models import vit as vit_module
from ..models.layers import Attention

MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])  # ImageNet, RGB


def token_positions(h: int, w: int) -> torch.Tensor:
    """(h * w, 2) centres of an h x w grid, row-major, as (x / w, y / h) in [0, 1]."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    return torch.stack([(xs.flatten() + 0.5) / w, (ys.flatten() + 0.5) / h], dim=1)


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Per-query entropy (nats) of (..., Nq, Nk) attention rows summing to 1 -> (..., Nq)."""
    return -(attn * torch.log(attn.clamp_min(1e-12))).sum(-1)


def attention_distance(attn: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Per-query expected distance of (..., Nq, Nk) attention, positions (Nq, 2) / (Nk, 2) -> (..., Nq)."""
    return (attn * torch.cdist(q_pos, k_pos)).sum(-1)


@torch.no_grad()
def block_statistics(
    attn_module: Attention, x: torch.Tensor, num_prefix: int, grid: Tuple[int, int], chunk: int = 1024
) -> Tuple[float, float]:
    """Mean entropy and distance of one block's attention.

    Args:
        attn_module: The block's :class:`Attention` (its ``qkv`` weights are used).
        x: (B, T + H * W, C) normalised tokens entering the attention (prefix tokens first).
        num_prefix: T, the number of class / distillation tokens.
        grid: (H, W) of the spatial tokens.
        chunk: Queries per chunk; bounds memory to B * heads * chunk * H * W floats.

    Returns:
        (entropy, distance) averaged over images, heads and spatial queries.
    """
    B, N, C = x.shape
    heads = attn_module.num_heads
    q, k, _ = attn_module.qkv(x).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k = q[:, :, num_prefix:], k[:, :, num_prefix:]
    pos = token_positions(*grid).to(x)
    scale = (C // heads) ** -0.5
    ent = dist = 0.0
    for start in range(0, q.shape[2], chunk):
        p = (q[:, :, start : start + chunk] @ k.transpose(-2, -1) * scale).softmax(-1)
        ent += attention_entropy(p).sum().item()
        dist += attention_distance(p, pos[start : start + chunk], pos).sum().item()
    count = B * heads * q.shape[2]
    return ent / count, dist / count


def _blocks_with_layout(backbone: nn.Module) -> List[Tuple[nn.Module, int]]:
    """(block, output index whose grid it runs on) for every block, in order."""
    if hasattr(backbone, 'transformers'):  # PiT: blocks of stage i run on stage i's grid
        return [(blk, i) for i, stage in enumerate(backbone.transformers) for blk in stage.blocks]
    return [(blk, 0) for blk in backbone.blocks]  # ViT: one grid


@torch.no_grad()
def analyze_backbone(backbone: nn.Module, images: torch.Tensor, skip_last: bool = True) -> Dict[str, List[float]]:
    """Entropy and distance of every block of a PiT / ViT backbone on a batch of images.

    ``backbone`` must return one map per grid: PiT with ``out_indices=(0, 1, 2)``, ViT with its
    last block in ``out_indices`` (so that every block runs). The last block is skipped, as in
    the paper, unless ``skip_last`` is False.

    Returns:
        ``{'entropy': [...], 'distance': [...], 'stage': [...]}``, one entry per analysed block.
    """
    blocks = _blocks_with_layout(backbone)
    inputs: Dict[int, torch.Tensor] = {}
    hooks = [
        blk.attn.register_forward_hook(lambda m, a, o, i=i: inputs.__setitem__(i, a[0]))
        for i, (blk, _) in enumerate(blocks)
    ]
    try:
        outs = backbone.eval()(images)
    finally:
        for h in hooks:
            h.remove()
    grids = [tuple(o.shape[-2:]) for o in outs]
    result = {'entropy': [], 'distance': [], 'stage': []}
    for i, (blk, stage) in enumerate(blocks[:-1] if skip_last else blocks):
        ent, dist = block_statistics(blk.attn, inputs.pop(i), backbone.num_tokens, grids[stage])
        result['entropy'].append(ent)
        result['distance'].append(dist)
        result['stage'].append(stage)
    return result


def build_backbone(spec: str) -> torch.nn.Module:
    """``pit_s=PATH`` / ``vit_s=random``: arch name, then a checkpoint (ImageNet or detector) or 'random'."""
    name, _, source = spec.partition('=')
    kind, _, arch = name.partition('_')
    if kind == 'pit':
        model = MODELS.build(dict(type='PiT', arch=arch, out_indices=(0, 1, 2)))
        filter_fn = pit_module.checkpoint_filter_fn
    elif kind == 'vit':
        model, filter_fn = MODELS.build(dict(type='ViT', arch=arch, out_indices=(11,))), vit_module.checkpoint_filter_fn
    else:
        raise ValueError(f'--backbone {spec!r}: expected pit_<arch>=SOURCE or vit_<arch>=SOURCE')
    if source and source != 'random':
        load_pretrained(model, source, filter_fn)
    return model.eval()


def load_image(path: Path, size: Tuple[int, int]) -> torch.Tensor:
    """The image at ``path`` resized to ``size`` (H, W) and normalised as the backbones were trained: (3, H, W)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f'cannot read image {path}')
    img = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy((img - MEAN) / STD).permute(2, 0, 1).float()
