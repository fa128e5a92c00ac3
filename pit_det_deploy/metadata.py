"""The contract between an exported detector and whatever runs it: one JSON entry, ``pit_det``, in
the ONNX model's ``metadata_props``.

``tools/deploy/export.py`` writes it (:func:`pit_det.export.export_onnx`), ``tools/deploy/quantize.py`` copies it
with ``precision`` and the calibration added, and the runtimes read it: the input range
(``input_shape``, ``dynamic``, ``min_size``), the graph (``msda``, ``opset``), ``classes``,
``preprocessing`` and ``precision``. A model without it was not written by pit-det.
"""

import json
from typing import Any, Dict, Mapping, Tuple

from .errors import DeployError, unloadable

KEY = 'pit_det'


def write(model: Any, info: Mapping) -> None:
    """Store ``info`` in ``model`` (an ``onnx.ModelProto``), replacing what was there."""
    import onnx

    onnx.helper.set_model_props(model, {KEY: json.dumps(dict(info))})


# What a runtime needs of the entry to run the detector (``pit_det_deploy.OnnxDetector``).
REQUIRED = ('classes', 'preprocess', 'input_shape', 'dynamic')


def _decode(text: str, source: str) -> Dict:
    again = 'export the model again with tools/deploy/export.py'
    try:
        info = json.loads(text)
    except ValueError as err:
        raise DeployError(f'{source}: its {KEY} metadata is no JSON ({err}); {again}') from None
    if not isinstance(info, dict):
        raise DeployError(f'{source}: its {KEY} metadata is no JSON object; {again}')
    return info


def parse(props: Mapping[str, str], source: str = 'the model') -> Dict:
    """The entry out of a runtime's view of the metadata of ``source`` (``{}`` when it has none).

    Raises:
        DeployError: the entry is no JSON object; names ``source``.
    """
    return _decode(props[KEY], source) if KEY in props else {}


def require_fields(info: Mapping, source: str) -> None:
    """``info`` has every field of :data:`REQUIRED` (and a dynamic model's ``min_size`` / ``max_size``).

    Raises:
        DeployError: naming ``source`` and the fields it lacks.
    """
    needed = REQUIRED + (('min_size', 'max_size') if info.get('dynamic') else ())
    missing = [field for field in needed if field not in info]
    if missing:
        raise DeployError(
            f'{source}: its {KEY} metadata lacks {missing}; export the model again with tools/deploy/export.py'
        )


def load(path: str) -> Tuple[Any, Dict]:
    """The ONNX model at ``path`` (weights left on disk) and its metadata.

    Raises:
        DeployError: the file is no ONNX model, or not one written by ``tools/deploy/export.py``.
    """
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # onnx's own errors on files that are no ONNX model
        raise unloadable(path, e) from None
    info = parse({p.key: p.value for p in model.metadata_props}, path)
    if not info:
        raise DeployError(f'{path}: no {KEY} metadata; it was not written by tools/deploy/export.py')
    return model, info


def from_openvino(model: Any, source: str = 'the model') -> Dict:
    """The entry as OpenVINO keeps ONNX ``metadata_props`` (its model's ``rt_info``); as :func:`parse`."""
    if model.has_rt_info(['framework', KEY]):
        return _decode(model.get_rt_info(['framework', KEY]).astype(str), source)
    return {}
