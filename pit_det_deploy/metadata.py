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


def parse(props: Mapping[str, str]) -> Dict:
    """The entry out of a runtime's view of the metadata (``{}`` when the model has none)."""
    return json.loads(props[KEY]) if KEY in props else {}


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
    info = parse({p.key: p.value for p in model.metadata_props})
    if not info:
        raise DeployError(f'{path}: no {KEY} metadata; it was not written by tools/deploy/export.py')
    return model, info


def from_openvino(model: Any) -> Dict:
    """The entry as OpenVINO keeps ONNX ``metadata_props`` (its model's ``rt_info``)."""
    if model.has_rt_info(['framework', KEY]):
        return json.loads(model.get_rt_info(['framework', KEY]).astype(str))
    return {}
