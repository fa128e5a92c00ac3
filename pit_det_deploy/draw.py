"""The detection picture of ``tools/demo.py`` and ``tools/deploy/onnx_demo.py``: boxes, class names and
scores over the image, in OpenCV alone so that a PyTorch-free service draws the same."""

from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff'}  # what OpenCV and mmcv decode


def image_files(src: Path) -> List[Path]:
    """``src`` itself if it is a file, else the images in the folder ``src``, sorted.

    Raises:
        FileNotFoundError: ``src`` does not exist, or is a folder without images; names it.
    """
    if not src.exists():
        raise FileNotFoundError(f'no such image or folder: {src}')
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f'no images found at {src}')
    return files


def unreadable_images(unreadable: Sequence[Path], total: int, out: Path) -> str:
    """The demos' report of the images they skipped, after drawing the others."""
    names = ', '.join(map(str, unreadable[:5])) + (f' and {len(unreadable) - 5} more' if len(unreadable) > 5 else '')
    return (
        f'cannot read {len(unreadable)} of {total} images ({names}): skipped; the others are drawn '
        f'and in {out / "detections.json"}'
    )


def color(label: int) -> tuple:
    """A fixed, well-spread BGR colour per class."""
    hsv = np.uint8([[[(label * 47) % 180, 200, 255]]])  # OpenCV hues span 0..179
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_detections(
    image_bgr: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    score_thr: float = 0.3,
) -> np.ndarray:
    """A copy of ``image_bgr`` with every detection scoring at least ``score_thr`` drawn on it.

    Args:
        image_bgr: (H, W, 3) uint8.
        boxes: (k, 4) x1, y1, x2, y2 in the image's pixels; scores (k,); labels (k,) into ``classes``.
    """
    out = image_bgr.copy()
    scale = max(0.35, min(out.shape[:2]) / 600)  # legible on small and large images
    # Best on top, by the score as written; ties by class and box, so that two runtimes whose fp32
    # scores differ in the last bits draw the same picture.
    order = sorted(zip(boxes, scores, labels), key=lambda d: (round(float(d[1]), 2), int(d[2]), *np.rint(d[0])))
    for box, score, label in order:
        if score < score_thr:
            continue
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        c = color(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), c, max(1, int(round(2 * scale))))
        text = f'{classes[int(label)]} {float(score):.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y = max(th + base, y1)
        cv2.rectangle(out, (x1, y - th - base), (x1 + tw, y), c, -1)
        cv2.putText(out, text, (x1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def detection_record(
    path: Path, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, classes: Sequence[str], score_thr: float
) -> dict:
    """One image's entry of the ``detections.json`` both demos write: the detections at or above
    ``score_thr``, boxes (x1, y1, x2, y2) in pixels to 0.01, scores to 1e-4."""
    keep = np.asarray(scores) >= score_thr
    return dict(
        file=str(path),
        detections=[
            dict(
                bbox=[round(float(v), 2) for v in box],
                score=round(float(score), 4),
                label=int(label),
                name=classes[int(label)],
            )
            for box, score, label in zip(np.asarray(boxes)[keep], np.asarray(scores)[keep], np.asarray(labels)[keep])
        ],
    )
