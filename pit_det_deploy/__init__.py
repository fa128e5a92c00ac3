"""What a detector exported by ``tools/deploy/export.py`` needs at run time, without PyTorch or
OpenMMLab: onnxruntime or OpenVINO, numpy and OpenCV.

* :mod:`.runtime`: the two runtimes behind one call, ``load_graph(path, runtime)``, and where
  their time goes, ``op_times``;
* :mod:`.preprocess`: the shipped test pipeline (keep-ratio resize as mmcv, minimum padding,
  normalisation), the same pixels as mmdet's;
* :mod:`.detector`: ``OnnxDetector``, an image in, detections in the image's pixels out;
* :mod:`.errors`: ``DeployError``, an input the user can fix;
* :mod:`.metadata`: the ``pit_det`` entry an export carries (input range, graph, classes,
  preprocessing, precision);
* :mod:`.quantize` and :mod:`.evaluate`: INT8 calibration and COCO AP of an exported model
  (``tools/deploy/quantize.py``, ``tools/deploy/onnx_eval.py``);
* :mod:`.hardware`: the processor a figure was measured on and the precisions it runs natively;
* :mod:`.draw`: the picture and ``detections.json`` entry ``tools/demo.py`` and
  ``tools/deploy/onnx_demo.py`` both write, and the images they both take.
"""

from .detector import OnnxDetector
from .draw import detection_record, draw_detections, image_files
from .errors import DeployError
from .runtime import RUNTIMES, load_graph, op_times

__all__ = [
    'RUNTIMES',
    'DeployError',
    'OnnxDetector',
    'load_graph',
    'op_times',
    'detection_record',
    'draw_detections',
    'image_files',
]
