"""An exported detector in onnxruntime or OpenVINO: an image in, detections in the image's
pixels out."""

from typing import List, Tuple

import numpy as np

from . import metadata
from .errors import DeployError
from .preprocess import prepare, rescale_size
from .runtime import load_graph


class OnnxDetector:
    """A model written by ``tools/deploy/export.py`` (or ``tools/deploy/quantize.py``) and the preprocessing
    stored in its metadata.

    Args:
        path: the ``.onnx`` file.
        threads: the runtime's intra-op threads (0: its default).
        runtime: 'onnxruntime' or 'openvino' (:mod:`.runtime`).

    Raises:
        DeployError: the file is not a pit-det export (no ``pit_det`` metadata), or the runtime is
            unknown or not installed.
    """

    def __init__(self, path: str, threads: int = 0, runtime: str = 'onnxruntime') -> None:
        self.graph = load_graph(str(path), runtime, threads)
        if not self.graph.metadata:
            raise DeployError(f'{path}: no pit_det metadata; export the model with tools/deploy/export.py')
        metadata.require_fields(self.graph.metadata, path)
        self.path = str(path)
        self.info = self.graph.metadata
        self.classes: List[str] = self.info['classes']

    def input_size_problem(self, height: int, width: int) -> str:
        """Why an (height, width) network input does not fit this model; '' if it does."""
        info = self.info
        if not info['dynamic']:
            if [height, width] != info['input_shape']:
                return (
                    f'the model takes {info["input_shape"][0]} x {info["input_shape"][1]} inputs only and this '
                    f'image resizes to {height} x {width}; export it with --dynamic'
                )
        elif not (info['min_size'] <= height <= info['max_size'] and info['min_size'] <= width <= info['max_size']):
            return (
                f"this image resizes to {height} x {width}, outside the model's input range "
                f'{info["min_size"]}..{info["max_size"]} per side'
            )
        return ''

    def __call__(self, image_bgr: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 BGR -> boxes (k, 4) x1 y1 x2 y2 in its pixels, scores (k,), labels (k,).

        Raises:
            DeployError: the resized image does not fit the model's input size, saying why.
        """
        h, w = image_bgr.shape[:2]
        new_w, new_h = rescale_size(w, h, self.info['preprocess']['resize_scale'])
        problem = self.input_size_problem(new_h, new_w)
        if problem:
            raise DeployError(problem)
        x, (w_scale, h_scale) = prepare(image_bgr, self.info['preprocess'])
        outputs = self.graph({'image': x})
        if len(outputs) != 3:
            raise DeployError(
                f'{self.path}: {len(outputs)} outputs, not boxes, scores and labels: not a pit-det export'
            )
        boxes, scores, labels = outputs
        return boxes[0] / np.array([w_scale, h_scale, w_scale, h_scale], np.float32), scores[0], labels[0]
