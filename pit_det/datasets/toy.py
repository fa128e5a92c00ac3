"""A small, deterministic COCO-format detection set for machines without COCO.

Images (80-128 px a side) are textured backgrounds (smooth noise, stripes or checks in muted colours) with
0-4 non-overlapping solid objects of three categories -- rectangle, ellipse, triangle -- of random
colour (a hue band per category), size (12-44 px) and aspect ratio (1:2 to 2:1); about 10% of images are empty.
Everything derives from one seed, so the same call always writes the same files.
"""

import json
from pathlib import Path
from typing import Dict, List, Tuple, Union

import cv2
import numpy as np

CATEGORIES = [dict(id=1, name='rectangle'), dict(id=2, name='ellipse'), dict(id=3, name='triangle')]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Muted (grey-ish) base colour so that the saturated objects stand out.
    base = rng.uniform(70, 180) + rng.uniform(-20, 20, size=3)
    kind = rng.integers(3)
    if kind == 0:  # smooth noise: upsampled coarse noise
        coarse = rng.normal(0, 20, size=(h // 12 + 2, w // 12 + 2, 3)).astype(np.float32)
        tex = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # stripes at a random angle and period
        yy, xx = np.mgrid[0:h, 0:w]
        angle, period = rng.uniform(0, np.pi), rng.uniform(5, 16)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        tex = (wave[..., None] * rng.uniform(8, 20, size=3)).astype(np.float32)
    else:  # checks
        cell = int(rng.integers(6, 16))
        yy, xx = np.mgrid[0:h, 0:w]
        tex = ((((yy // cell) + (xx // cell)) % 2)[..., None] * rng.uniform(-20, 20, size=3)).astype(np.float32)
    img = base + tex + rng.normal(0, 4, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# Each category draws its colours from its own hue band (OpenCV hue, 0-180) with random
# saturation and brightness: colour is a cue a model trained from scratch picks up within
# minutes, shape is the second one.
HUE_BANDS = {1: (-12, 12), 2: (45, 80), 3: (100, 135)}


def _colour(rng: np.random.Generator, category: int) -> Tuple[int, int, int]:
    lo, hi = HUE_BANDS[category]
    hsv = np.uint8([[[int(rng.integers(lo, hi + 1)) % 180, rng.integers(150, 256), rng.integers(140, 256)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _iou(a: List[float], b: List[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _draw(rng: np.random.Generator, img: np.ndarray, boxes: List[List[float]]) -> Union[Tuple[int, List[float]], None]:
    h, w = img.shape[:2]
    size = rng.uniform(12, 44)
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    bw, bh = int(min(w - 2, size * np.sqrt(aspect))), int(min(h - 2, size / np.sqrt(aspect)))
    x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
    box = [float(x0), float(y0), float(bw), float(bh)]
    if any(_iou(box, b) > 0 for b in boxes):  # no occlusion: every object fully visible
        return None
    cat = int(rng.integers(1, 4))
    colour = _colour(rng, cat)
    if cat == 1:
        cv2.rectangle(img, (x0, y0), (x0 + bw - 1, y0 + bh - 1), colour, thickness=-1)
    elif cat == 2:
        cv2.ellipse(img, (x0 + bw // 2, y0 + bh // 2), (bw // 2, bh // 2), 0, 0, 360, colour, thickness=-1)
        # cv2.ellipse covers the centre +- the half axes: 2 * (bw // 2) + 1 pixels from x0.
        box = [float(x0), float(y0), float(2 * (bw // 2) + 1), float(2 * (bh // 2) + 1)]
    else:  # apex on a random edge, so the triangle spans the whole box
        apex = int(rng.integers(4))
        if apex == 0:
            pts = [(x0 + int(rng.integers(0, bw)), y0), (x0, y0 + bh - 1), (x0 + bw - 1, y0 + bh - 1)]
        elif apex == 1:
            pts = [(x0 + int(rng.integers(0, bw)), y0 + bh - 1), (x0, y0), (x0 + bw - 1, y0)]
        elif apex == 2:
            pts = [(x0, y0 + int(rng.integers(0, bh))), (x0 + bw - 1, y0), (x0 + bw - 1, y0 + bh - 1)]
        else:
            pts = [(x0 + bw - 1, y0 + int(rng.integers(0, bh))), (x0, y0), (x0, y0 + bh - 1)]
        cv2.fillPoly(img, [np.array(pts, dtype=np.int32)], colour)
    return cat, box


def make_split(
    root: Union[str, Path], split: str, num_images: int, seed: int, size_range: Tuple[int, int] = (80, 128)
) -> Dict:
    """Write ``root/{split}2017/*.png`` and ``root/annotations/instances_{split}2017.json``.

    Returns:
        The COCO dict written.
    """
    root = Path(root)
    img_dir = root / f'{split}2017'
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        img = _background(rng, h, w)
        boxes: List[List[float]] = []
        num_objects = 0 if rng.random() < 0.1 else int(rng.integers(1, 5))
        for _ in range(num_objects):
            drawn = _draw(rng, img, boxes)
            if drawn is None:
                continue
            cat, box = drawn
            boxes.append(box)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=cat,
                    bbox=box,
                    area=box[2] * box[3],
                    iscrowd=0,
                )
            )
        name = f'{image_id:06d}.png'
        cv2.imwrite(str(img_dir / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append(dict(id=image_id, file_name=name, height=h, width=w))
    coco = dict(
        images=images,
        annotations=annotations,
        categories=[dict(c) for c in CATEGORIES],
        info=dict(description=f'pit-det toy set, split {split}, seed {seed}'),
    )
    with open(root / 'annotations' / f'instances_{split}2017.json', 'w') as f:
        json.dump(coco, f)
    return coco


def make_toy_coco(
    root: Union[str, Path] = 'data/toy_coco',
    num_train: int = 600,
    num_val: int = 100,
    seed: int = 0,
    num_test: int = 0,
) -> Path:
    """Write train, val and (``num_test`` > 0) test splits, each from its own seed, under ``root``;
    a split is skipped when its annotation file already exists with the requested image count.

    The test split is held out: the toy recipe was tuned on val, so comparisons that must not
    rest on the tuning images (``tools/analysis/table5_toy.py``) are scored on test."""
    root = Path(root)
    splits = [('train', num_train, seed), ('val', num_val, seed + 1)] + (
        [('test', num_test, seed + 2)] if num_test else []
    )
    for split, num, split_seed in splits:
        ann = root / 'annotations' / f'instances_{split}2017.json'
        if ann.is_file():
            with open(ann) as f:
                info = json.load(f)
            description = info.get('info', {}).get('description', '')
            if len(info['images']) == num and description.endswith(f'seed {split_seed}'):
                continue
        make_split(root, split, num, split_seed)
    return root
