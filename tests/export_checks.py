"""What the export tests share: running a tool, mmdet's predict on one image, an exported graph in
onnxruntime or OpenVINO, and the comparison of their detections (tests/test_export.py,
tests/test_export_tools.py)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from mmdet.structures import DetDataSample

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
# onnxruntime computes in fp32 like PyTorch, summing in other orders. Measured on random-weight
# PiT-S / ViT-S / R50 at 256 x 320: boxes up to 1.3e-4 px (4e-7 of the image side, a few fp32
# ulps of the normalised box the head predicts), scores up to 1.2e-7 (1 ulp near 1).
BOX_TOL_PER_PX, SCORE_TOL = 1e-6, 1e-6


def run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs
    )


def run_without_torch(script: str, *args) -> subprocess.CompletedProcess:
    """The tool ``script`` with torch and OpenMMLab made unimportable: a deploy runtime without them."""
    code = (
        'import runpy, sys\n'
        "for name in ('torch', 'torchvision', 'mmcv', 'mmdet', 'mmengine', 'pit_det', 'timm'):\n"
        '    sys.modules[name] = None\n'
        f'sys.argv = {[script, *map(str, args)]!r}\n'
        f"runpy.run_path({script!r}, run_name='__main__')\n"
    )
    return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=600)


def predict(model, image: torch.Tensor):
    """mmdet's predict on an unpadded normalised batch, boxes in its pixels (no rescale)."""
    hw = tuple(image.shape[-2:])
    sample = DetDataSample(metainfo=dict(batch_input_shape=hw, img_shape=hw, ori_shape=hw))
    with torch.no_grad():
        pred = model.predict(image, [sample], rescale=False)[0].pred_instances
    return pred.bboxes.numpy(), pred.scores.numpy(), pred.labels.numpy()


def pair_detections(a: list, b: list, same) -> list:
    """Pairs each detection of ``a`` with the first unpaired one of ``b`` that ``same(x, y)``
    accepts. Both lists are in score order, and ``same`` holds scores to a tolerance, so only
    detections whose scores tie within it (a trained model's near-equal low scores, whose order fp32
    rounding may swap) can trade places.

    Returns:
        the ranks in ``b`` of ``a``'s detections; ``None`` for one without a match.
    """
    free, pairs = list(range(len(b))), []
    for x in a:
        j = next((j for j in free if same(x, b[j])), None)
        pairs.append(j)
        if j is not None:
            free.remove(j)
    return pairs


def assert_same_detections(onnx_out, torch_out, size: int):
    """Same detections in score order, up to the order of tied scores: labels equal, scores within
    ``SCORE_TOL``, boxes within ``BOX_TOL_PER_PX`` of the image's longer side."""
    boxes, scores, labels = (x[0] if x.ndim > 1 and x.shape[0] == 1 else x for x in onnx_out)
    ref_boxes, ref_scores, ref_labels = torch_out
    assert boxes.shape == ref_boxes.shape and len(boxes) > 0
    ref = list(zip(ref_boxes, ref_scores, ref_labels))
    got = list(zip(boxes, scores, labels))

    def same(x, y):
        return (
            x[2] == y[2]
            and abs(float(x[1]) - float(y[1])) <= SCORE_TOL
            and np.abs(x[0] - y[0]).max() <= BOX_TOL_PER_PX * size
        )

    pairs = pair_detections(ref, got, same)
    assert None not in pairs, [i for i, j in enumerate(pairs) if j is None]
    # Out of place only within a tie: both scores of a swapped pair equal within the tolerance.
    assert all(abs(float(ref_scores[i]) - float(ref_scores[j])) <= 2 * SCORE_TOL for i, j in enumerate(pairs))


RUNTIMES = ('onnxruntime', 'openvino')


def run_graph(path, runtime: str, x: np.ndarray):
    """The exported graph's outputs on ``x`` in onnxruntime or OpenVINO (CPU, fp32)."""
    from pit_det_deploy.runtime import load_graph

    return load_graph(str(path), runtime)({'image': x})


def image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
