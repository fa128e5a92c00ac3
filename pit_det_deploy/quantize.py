"""INT8 post-training quantization of an exported detector, calibrated on images of the data set.

onnxruntime's static quantization writes a QDQ model: QuantizeLinear / DequantizeLinear pairs
around the matmuls, int8 weights per output channel, int8 activations with symmetric ranges from
the calibration images (min / max). OpenVINO turns such a model into INT8 kernels; symmetric
int8 activations are what its CPU plugin runs fastest (with asymmetric uint8 activations the same
model ran about as fast as fp32; docs/export.md). The same file runs in onnxruntime.

Which matmuls stay fp32 is chosen by what they compute, read from the module path that torch's
exporter stores on every node (:data:`KEEP_FP32`).
"""

import argparse
import ast
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Sequence, Tuple

import numpy as np

from . import fused, metadata
from .errors import DeployError

# Groups of matmuls that can stay fp32, each by what torch's exporter recorded of the node.
KEEP_FP32 = {
    # The class and box branches of every decoder layer and of the two-stage proposals: boxes
    # are regressed as small offsets, where int8 steps are coarse.
    'head': 'the detection head (class and box branches)',
    # The projection that predicts deformable attention's sampling offsets and weights: an
    # offset error moves the sample.
    'sampling': "deformable attention's sampling-offset and weight projection",
    # Activation x activation products (q @ k^T, attention @ v) of the backbone and decoder
    # self-attention: both sides need calibrated ranges, and softmax inputs are wide.
    'attention': 'self-attention scores and their product with the values',
}
DEFAULT_KEEP = ('head',)
# The ops that become INT8: the transformers' matmuls, and the convolutions (R50's backbone and
# neck, the patch embeddings, PiT's pooling). Deformable attention's sampling stays fp32 where it is
# GridSample or the fused op (pit_det_deploy.fused); the gather graph's weighting MatMul is quantized.
QUANTIZED_OPS = ('MatMul', 'Gemm', 'Conv')


def _group(node) -> str:
    """Which :data:`KEEP_FP32` group a MatMul / Gemm node belongs to ('' for none)."""
    meta = {p.key: p.value for p in node.metadata_props}
    if 'pkg.torch.onnx.class_hierarchy' not in meta:
        return ''
    classes = ast.literal_eval(meta['pkg.torch.onnx.class_hierarchy'])
    scopes = ast.literal_eval(meta.get('pkg.torch.onnx.name_scopes', '[]'))
    if any(scope.startswith('detector.bbox_head') for scope in scopes):
        return 'head'
    if classes[-1] in ('aten.scaled_dot_product_attention.default', 'aten.bmm.default'):
        return 'attention'
    if len(classes) > 1 and classes[-2].endswith('.MSDeformAttn') and classes[-1] == 'aten.linear.default':
        return 'sampling'
    return ''


def keep_groups(names: Sequence[str], option: str = '--keep-fp32') -> Tuple[str, ...]:
    """``--keep-fp32``'s names as one group set: in :data:`KEEP_FP32`'s order, repeats dropped, so
    that 'attention head' and 'head attention' name the same model; ``['none']`` is no group.

    Raises:
        DeployError: an unknown name, or 'none' beside a group (``option``: the flag named).
    """
    names = list(names)
    if 'none' in names:
        if len(names) > 1:
            raise DeployError(f'{option} {" ".join(names)}: none keeps no group in fp32; give it alone')
        return ()
    unknown = sorted(set(names) - set(KEEP_FP32))
    if unknown:
        raise DeployError(f'{option} {", ".join(map(repr, unknown))}: choose from {", ".join(KEEP_FP32)} or none')
    return tuple(group for group in KEEP_FP32 if group in names)


def add_keep_fp32_argument(parser: argparse.ArgumentParser, help_prefix: str) -> None:
    """``--keep-fp32 GROUP ...`` (default :data:`DEFAULT_KEEP`), as tools/deploy/quantize.py and the tools
    that run it take it; :func:`keep_groups` turns the names given into one group set."""
    parser.add_argument(
        '--keep-fp32',
        nargs='+',
        default=list(DEFAULT_KEEP),
        metavar='GROUP',
        help=f'{help_prefix}: {", ".join(KEEP_FP32)} or none (default: {" ".join(DEFAULT_KEEP)})',
    )


def fp32_nodes(model, keep: Sequence[str]) -> Dict[str, List[str]]:
    """The names of the MatMul / Gemm nodes of each group in ``keep`` (:func:`keep_groups`'s set).

    Raises:
        DeployError: a name :func:`keep_groups` refuses, or a model without the exporter's node metadata
            (one not written by ``tools/deploy/export.py``).
    """
    keep = keep_groups(keep)
    matmuls = [n for n in model.graph.node if n.op_type in ('MatMul', 'Gemm')]
    if keep and not any(p.key == 'pkg.torch.onnx.class_hierarchy' for n in matmuls for p in n.metadata_props):
        raise DeployError(
            'the model has no module paths on its nodes (not written by tools/deploy/export.py); '
            'quantize it with --keep-fp32 none'
        )
    groups = {name: [] for name in keep}
    for node in matmuls:
        group = _group(node)
        if group in groups:
            groups[group].append(node.name)
    return groups


def fit_to(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A (1, 3, h, w) input cropped or zero-padded (zero: the normalised mean) to ``shape`` (H, W),
    for calibrating a model with a fixed input size on images of other aspect ratios."""
    H, W = shape
    out = np.zeros((1, 3, H, W), np.float32)
    h, w = min(H, x.shape[2]), min(W, x.shape[3])
    out[:, :, :h, :w] = x[:, :, :h, :w]
    return out


def calibration_inputs(images: Sequence[Path], info: dict) -> Iterator[Dict[str, np.ndarray]]:
    """Network inputs of ``images`` as the runtime prepares them (``pit_det_deploy.preprocess``),
    fitted to the model's input size when it has a fixed one."""
    import cv2

    from .preprocess import prepare

    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DeployError(f'cannot read calibration image {path}')
        x, _ = prepare(image, info['preprocess'])
        yield {'image': x if info['dynamic'] else fit_to(x, info['input_shape'])}


class _DropMessage(logging.Filter):
    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.texts)


def model_info(model_path: str) -> dict:
    """The ``pit_det`` metadata of an exported model, with what calibration on images reads.

    Raises:
        DeployError: the file is no ONNX model, not one written by ``tools/deploy/export.py``, or its
            metadata lacks a field (:func:`metadata.require_fields`).
    """
    info = metadata.load(model_path)[1]
    metadata.require_fields(info, model_path)
    return info


def quantize(
    model_path: str, out_path: str, inputs: Iterable[Dict[str, np.ndarray]], keep: Sequence[str] = DEFAULT_KEEP
) -> dict:
    """Writes the INT8 (QDQ) model of ``model_path`` to ``out_path``, calibrated on ``inputs``
    (network inputs, e.g. :func:`calibration_inputs`). Returns its ``pit_det`` metadata: the fp32
    model's, plus ``precision``, the number of calibration inputs and the groups kept in fp32 with
    their node counts.

    Raises:
        DeployError: the model is no fp32 pit-det export, no input was given, or a group is unknown.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    keep = keep_groups(keep)  # the metadata's groups in one order, whoever calls
    model, info = metadata.load(model_path)
    if info.get('precision', 'fp32') != 'fp32':
        raise DeployError(f'{model_path} is already {info["precision"]}; quantize the fp32 export')
    groups = fp32_nodes(model, keep)
    feeds = iter(inputs)
    count = 0

    class Reader(CalibrationDataReader):
        def get_next(self):
            nonlocal count
            feed = next(feeds, None)
            count += feed is not None
            return feed

    # onnxruntime suggests its pre-processing (shape inference, graph fusions) first. Its fusions
    # rename the nodes that --keep-fp32 selects, and without it the INT8 model already runs at
    # about 2x fp32 in OpenVINO (docs/export.md). Its note is dropped, and so is its note on the
    # neck's convolutions: they have no bias (a GroupNorm follows), torch's exporter gives them a zero
    # one built in the graph, and the quantizer leaves that fp32 ("Expected bias ... initializer").
    note = _DropMessage('pre-processing before quantization', 'to be an initializer')
    logging.getLogger().addFilter(note)
    # A fused graph's attention stays one fp32 node, which calibration runs (pit_det_deploy.fused).
    registration = fused.registered_in_every_onnxruntime_model() if fused.uses_fused_op(model) else nullcontext()
    try:
        with registration:
            quantize_static(
                model_path,
                out_path,
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=[n for names in groups.values() for n in names],
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={'ActivationSymmetric': True, 'WeightSymmetric': True},
                calibration_providers=['CPUExecutionProvider'],
            )
    finally:
        logging.getLogger().removeFilter(note)
    if not count:
        Path(out_path).unlink(missing_ok=True)
        raise DeployError('no calibration input: give at least one image')
    info.update(
        precision='int8', calibration_inputs=count, fp32_groups={name: len(names) for name, names in groups.items()}
    )
    quantized = onnx.load(out_path)
    metadata.write(quantized, info)
    onnx.save(quantized, out_path)
    return info
