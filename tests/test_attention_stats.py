"""Attention entropy / distance (PiT Sec. 3.3) on constructed attention, and the tool end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmdet.registry import MODELS

import pit_det  # noqa: F401
from pit_det.analysis.attention import (
    analyze_backbone,
    attention_distance,
    attention_entropy,
    block_statistics,
    token_positions,
)

ROOT = Path(__file__).resolve().parents[1]


def test_uniform_attention_has_entropy_log_n():
    n = 49
    attn = torch.full((2, 3, n, n), 1.0 / n)
    torch.testing.assert_close(attention_entropy(attn), torch.full((2, 3, n), math.log(n)))


def test_attention_to_self_has_zero_entropy_and_distance():
    pos = token_positions(5, 7)
    attn = torch.eye(35)
    assert attention_entropy(attn).abs().max() < 1e-6
    assert attention_distance(attn, pos, pos).abs().max() < 1e-6


def test_known_offset_gives_known_distance():
    h, w = 4, 8
    pos = token_positions(h, w)
    attn = torch.zeros(h * w, h * w)
    for y in range(h):  # every query attends to the token 2 columns to its right (wrapping)
        for x in range(w):
            attn[y * w + x, y * w + (x + 2) % w] = 1.0
    dist = attention_distance(attn, pos, pos).reshape(h, w)
    torch.testing.assert_close(dist[:, : w - 2], torch.full((h, w - 2), 2 / w))
    torch.testing.assert_close(dist[:, w - 2 :], torch.full((h, 2), (w - 2) / w))
    # Half weight on self, half on the token one row down: distance 0.5 * (1 / h).
    attn = 0.5 * torch.eye(h * w)
    for i in range(h * w - w):
        attn[i, i + w] += 0.5
    torch.testing.assert_close(attention_distance(attn, pos, pos)[:w], torch.full((w,), 0.5 / h))
    torch.testing.assert_close(attention_entropy(attn)[:w], torch.full((w,), math.log(2)))


def test_block_statistics_excludes_prefix_tokens_and_chunks():
    """With zero qkv weights every spatial query attends uniformly to the spatial keys only."""
    model = MODELS.build(dict(type='ViT', arch='ti', out_indices=(0,)))
    attn = model.blocks[0].attn
    torch.nn.init.zeros_(attn.qkv.weight)
    torch.nn.init.zeros_(attn.qkv.bias)
    x = torch.randn(2, 1 + 6 * 5, 192)
    for chunk in (7, 1024):
        ent, dist = block_statistics(attn, x, num_prefix=1, grid=(6, 5), chunk=chunk)
        assert ent == pytest.approx(math.log(30), rel=1e-5)
        pos = token_positions(6, 5)
        assert dist == pytest.approx(torch.cdist(pos, pos).mean().item(), rel=1e-5)


@pytest.mark.parametrize(
    'cfg,num_layers', [(dict(type='PiT', arch='ti'), 11), (dict(type='ViT', arch='ti', out_indices=(11,)), 11)]
)
def test_analyze_backbone_gives_one_value_per_layer(cfg, num_layers):
    backbone = MODELS.build(cfg)
    images = torch.randn(2, 3, 64, 96)
    res = analyze_backbone(backbone, images)
    assert len(res['entropy']) == len(res['distance']) == num_layers  # last block skipped
    # Block 0 recomputed from first principles in float64, without chunks: its input tokens, the
    # spatial ones only, softmax(q k^T / sqrt(d)), -sum p log p and sum p |x_q - x_k| on the grid.
    blk = backbone.transformers[0].blocks[0] if cfg['type'] == 'PiT' else backbone.blocks[0]
    seen = {}
    hook = blk.attn.register_forward_hook(lambda m, a, o: seen.setdefault('x', a[0]))
    with torch.no_grad():
        h, w = backbone.eval()(images)[0].shape[-2:]
    hook.remove()
    x = seen['x'].double()
    B, N, C = x.shape
    heads = blk.attn.num_heads
    qkv = torch.nn.functional.linear(x, blk.attn.qkv.weight.double(), blk.attn.qkv.bias.double())
    q, k = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)[:2, :, :, backbone.num_tokens :]
    p = (q @ k.transpose(-2, -1) / math.sqrt(C // heads)).softmax(-1)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing='ij')
    pos = torch.stack([(xs.flatten() + 0.5) / w, (ys.flatten() + 0.5) / h], 1)
    assert p.shape[-1] == h * w
    assert res['entropy'][0] == pytest.approx(-(p * p.log()).sum(-1).mean().item(), rel=1e-5)
    assert res['distance'][0] == pytest.approx((p * torch.cdist(pos, pos)).sum(-1).mean().item(), rel=1e-5)
    if cfg['type'] == 'PiT':
        assert res['stage'] == [0, 0] + [1] * 6 + [2] * 3


@pytest.mark.slow
def test_tool_end_to_end(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f'{i}.png'), rng.integers(0, 255, (40 + 8 * i, 56, 3), dtype=np.uint8))
    out = tmp_path / 'out'
    proc = subprocess.run(
        [
            sys.executable,
            'tools/analysis/analyze_attention.py',
            '--backbone',
            'pit_ti=random',
            '--backbone',
            'vit_ti=random',
            '--images',
            images,
            '--size',
            '48',
            '64',
            '--out-dir',
            out,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / 'attention_stats.json').read_text())
    assert data['meta']['num_images'] == 3
    assert len(data['layers']['pit_ti']['entropy']) == 11 and len(data['layers']['vit_ti']['distance']) == 11
    png = cv2.imread(str(out / 'attention_stats.png'))
    assert png is not None and png.shape[0] > 100
