"""Detectors as self-contained graphs: ``torch.export`` programs and ONNX models.

What is exported is everything between preprocessing and the original image: a normalised,
unpadded image batch goes in (the normalisation and BGR -> RGB of mmdet's ``DetDataPreprocessor``
stay outside), and either the head's raw outputs or post-processed detections come out
(:mod:`.wrappers`). Boxes are in the input's pixels; dividing them by the test pipeline's resize
factor gives original-image boxes, which is all mmdet's ``rescale=True`` does.

* :mod:`.wrappers`: the modules that are exported;
* :mod:`.program`: ``torch.export`` (pit-det's custom op kept), static or dynamic in H and W;
* :mod:`.detector`: the trained detector to export (every weight must fit) and what a runtime must
  know of it (classes, preprocessing);
* :mod:`.to_onnx`: the ONNX model ``tools/deploy/export.py`` writes and ``pit_det_deploy`` runs.
"""

from ..models.build import build_detector
from .detector import preprocessing_of
from .program import MIN_TORCH, dynamic_image_shapes, export_program, min_dynamic_size, require_torch_for_export
from .to_onnx import GRAPHS, export_onnx
from .wrappers import DetectorCore, DetectorWithPostprocess, exportable

__all__ = [
    'GRAPHS',
    'MIN_TORCH',
    'DetectorCore',
    'DetectorWithPostprocess',
    'build_detector',
    'dynamic_image_shapes',
    'export_onnx',
    'export_program',
    'exportable',
    'min_dynamic_size',
    'preprocessing_of',
    'require_torch_for_export',
]
