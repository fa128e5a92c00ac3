"""What a detector exported by ``tools/export.py`` needs at run time, without PyTorch or
OpenMMLab: onnxruntime, numpy and OpenCV.

* :mod:`.preprocess`: the shipped test pipeline (keep-ratio resize as mmcv, minimum padding,
  normalisation), the same pixels as mmdet's;
* :mod:`.detector`: ``OnnxDetector``, an image in, detections in the image's pixels out;
* :mod:`.draw`: the picture and ``detections.json`` entry ``tools/demo.py`` and
  ``tools/onnx_demo.py`` both write, and the images they both take.
"""
from .detector import OnnxDetector
from .draw import detection_record, draw_detections, image_files

__all__ = ['OnnxDetector', 'detection_record', 'draw_detections', 'image_files']
