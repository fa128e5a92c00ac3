"""Multi-scale deformable attention as standard ops, for exported graphs: two kernels with the
semantics of the C++ one (bilinear, zero padding, ``align_corners=False``).

* :func:`ms_deform_attn_gather`: no ``GridSample``. Exported to ONNX it is ``Pad``, ``Slice``,
  ``Concat``, ``Gather``, ``Floor``, ``Where``, comparisons and one batched ``MatMul``: ops every
  runtime has had since opset 13, where ``GridSample`` needs opset 16, is missing from TensorRT
  before 8.5 and gives wrong results inside deformable attention in TensorRT 10.14 / 11.1
  (NVIDIA/TensorRT#4813). The four corners and their weights stay exact, unlike the nearest-texel
  ("discrete") sampling of RT-DETRv2.
* :func:`ms_deform_attn_grid_sample`: one ``GridSample`` per level. Unlike mmcv's
  ``multi_scale_deformable_attn_pytorch`` it weights and sums each level's samples as they come
  instead of stacking all levels first: the stack was the graph's largest ``Concat``
  (onnxruntime 1.32's profile of PiT-S: 14% of the whole model).

Which is faster depends on the runtime; ``docs/export.md`` has the measurements.
"""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LevelShapes = Sequence[Tuple[int, int]]


def _level_shapes(spatial_shapes: Tensor, level_shapes: Optional[LevelShapes]) -> LevelShapes:
    """``level_shapes`` if given (symbolic under export), else read from ``spatial_shapes``."""
    return level_shapes if level_shapes is not None else [tuple(hw) for hw in spatial_shapes.tolist()]


def _levels(value: Tensor, level_shapes: LevelShapes):
    """(B, S, M, D) -> each level as (B, M, H, W, D)."""
    B, _, M, D = value.shape
    begin = 0
    for H, W in level_shapes:
        yield value[:, begin : begin + H * W].view(B, H, W, M, D).permute(0, 3, 1, 2, 4)
        begin += H * W


def pair_table(value: Tensor, level_shapes: LevelShapes) -> Tensor:
    """(B, S, M, D) values -> (B, M, S', 2 * D) horizontal pairs of the zero-padded levels.

    Every level gets one row and column of zeros on each side and is flattened row by row, all
    levels one after the other (S' = sum of (H_l + 2) * (W_l + 2)). Row r of the table holds
    the values of flat positions r and r + 1, that is (x, y) and (x + 1, y) for r at (x, y). Two
    rows, r and r + W_l + 2, bring a sample's four bilinear corners.
    """
    B, _, M, D = value.shape
    flat = [F.pad(level, (0, 0, 1, 1, 1, 1)).flatten(2, 3) for level in _levels(value, level_shapes)]
    flat = torch.cat(flat + [flat[0][:, :, :1]], dim=2)  # one more row: position S' - 1 has a right neighbour
    return torch.cat([flat[:, :, :-1], flat[:, :, 1:]], dim=-1)


def ms_deform_attn_gather(
    value: Tensor,
    spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    level_shapes: Optional[LevelShapes] = None,
) -> Tensor:
    """Bilinear sampling from one gather over the pair table of all levels.

    Args:
        value: (B, S, M, D) values of M heads, S = sum of H_l * W_l over the L levels.
        spatial_shapes: (L, 2) int64, (H_l, W_l) of each level.
        sampling_locations: (B, Q, M, L, P, 2) normalised (x, y); pixel centres at (i + 0.5) / W.
        attention_weights: (B, Q, M, L, P), already normalised over L * P.
        level_shapes: ``spatial_shapes`` as (possibly symbolic) ints, which the table's slices
            need; read from ``spatial_shapes`` when not given.

    Returns:
        (B, Q, M * D); corners outside their level read zero.
    """
    level_shapes = _level_shapes(spatial_shapes, level_shapes)
    B, _, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    table = pair_table(value, level_shapes)  # (B, M, S', 2D)
    rows_per_image_head = table.shape[2]

    loc = sampling_locations.permute(0, 2, 1, 3, 4, 5)  # (B, M, Q, L, P, 2): heads beside the batch
    attn = attention_weights.permute(0, 2, 1, 3, 4)  # (B, M, Q, L, P)
    hw = spatial_shapes.to(loc.dtype)
    h, w = hw[:, 0, None], hw[:, 1, None]  # (L, 1): broadcast over the points
    padded = (h + 2) * (w + 2)
    start = torch.cumsum(padded, dim=0) - padded  # (L, 1): first table row of each level
    # Top-left corner in pixels (align_corners=False); the padded level has it for x0 in -1..W - 1.
    x = loc[..., 0] * w - 0.5
    y = loc[..., 1] * h - 0.5
    x0, y0 = x.floor(), y.floor()
    inside = (x0 >= -1) & (x0 < w) & (y0 >= -1) & (y0 < h)  # at least one corner on the map; False for NaN
    # Fractions of points off the map (NaN, +-inf, 1e30 among them) set to 0: with a zero weight they
    # would still give NaN (0 * inf), where the C++ and Triton kernels give 0.
    zero = torch.zeros_like(x)
    fx, fy = torch.where(inside, x - x0, zero), torch.where(inside, y - y0, zero)
    attn = torch.where(inside, attn, torch.zeros_like(attn))
    top, bottom = (1 - fy) * attn, fy * attn
    weight = torch.stack([(1 - fx) * top, fx * top, (1 - fx) * bottom, fx * bottom], dim=-1)  # (B, M, Q, L, P, 4)
    top_row = (y0 + 1) * (w + 2) + (x0 + 1) + start  # exact in floating point: S' < 2^24
    top_row = torch.where(inside, top_row, torch.zeros_like(top_row))  # points off the map: row 0, weight 0
    rows = torch.stack([top_row, top_row + w + 2], dim=-1).to(torch.int64)  # (B, M, Q, L, P, 2)
    rows = rows + torch.arange(B * M, device=value.device).view(B, M, 1, 1, 1, 1) * rows_per_image_head

    sampled = table.reshape(-1, 2 * D).index_select(0, rows.reshape(-1))  # (B * M * Q * L * P * 2, 2D)
    # Per query and head: (level, point, top / bottom, left / right) rows of D, as ``weight`` is.
    out = weight.reshape(B * M * Q, 1, L * P * 4).to(value.dtype) @ sampled.view(B * M * Q, L * P * 4, D)
    return out.view(B, M, Q, D).permute(0, 2, 1, 3).reshape(B, Q, M * D)


def ms_deform_attn_grid_sample(
    value: Tensor,
    spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    level_shapes: Optional[LevelShapes] = None,
) -> Tensor:
    """One ``grid_sample`` per level, weighted and summed level by level. Arguments and result as
    :func:`ms_deform_attn_gather`, the same signature.

    bf16 / fp16 values (autocast) are sampled, weighted and summed in fp32 with the fp32 locations,
    and the result is rounded once to their dtype: ``grid_sample`` takes one dtype for values and
    grid, and bf16 locations would be rounded to steps of up to 1/256 of the map (0.33 px on
    PiT-S's 84-pixel-wide level at 400 x 667)."""
    level_shapes = _level_shapes(spatial_shapes, level_shapes)
    B, _, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    dtype = value.dtype
    if dtype in (torch.bfloat16, torch.float16):  # fp32 / fp64 graphs (ONNX export) stay without casts
        value, sampling_locations = value.float(), sampling_locations.float()
        attention_weights = attention_weights.float()
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    # Beyond |2| no corner is on any map; NaN and +-inf there would make grid_sample's interpolation
    # weights NaN, where the C++ and Triton kernels read 0. Such points go to -4, still off the map.
    grids = torch.where(grids.abs() <= 2, grids, torch.full_like(grids, -4.0))
    out = None
    for level, lv in enumerate(_levels(value, level_shapes)):
        lv = lv.permute(0, 1, 4, 2, 3).flatten(0, 1)  # (B * M, D, H, W)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (B * M, Q, P, 2)
        samples = F.grid_sample(lv, grid, mode='bilinear', padding_mode='zeros', align_corners=False)  # (BM, D, Q, P)
        weight = attention_weights[:, :, :, level].transpose(1, 2).reshape(B * M, 1, Q, P)
        term = (samples * weight).sum(-1)  # (B * M, D, Q)
        out = term if out is None else out + term
    return out.view(B, M * D, Q).transpose(1, 2).to(dtype)
