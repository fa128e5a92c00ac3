"""The ONNX model of a detector: standard ops only, post-processing inside, facts for the runtime
in its metadata."""

from typing import Dict, Optional

import torch
from torch import Tensor, nn

from pit_det_deploy import metadata as model_metadata
from pit_det_deploy.trt_plugin import to_trt_plugin

from ..errors import PitDetError
from ..models import msda_impl_as
from .program import MAX_DYNAMIC_SIZE, dynamic_image_shapes, min_dynamic_size, require_torch_for_export
from .wrappers import exportable

# Deformable attention in the exported graph (``pit_det.ops.IMPLS``) and the oldest opset that
# has its ops. torch's exporter writes opset 18 and converts down from it, which fails for the
# detectors (the gather table's Pad has no adapter below 18): they come out at 18 whatever is
# asked, and export_onnx says so.
GRAPHS = {'grid_sample': 16, 'gather': 13, 'fused': 13, 'trt_plugin': 13}
# The graph's kernel while it is traced: the standard-op graphs trace their own kernels; 'fused' traces
# pit-det's C++ op (``pit_det::ms_deform_attn``), which the exporter writes as one node (:mod:`.fused_node`);
# 'trt_plugin' is the fused graph with TensorRT's plugin node in its place (:mod:`pit_det_deploy.trt_plugin`).
_TRACED_IMPL = {'grid_sample': 'grid_sample', 'gather': 'gather', 'fused': 'fast', 'trt_plugin': 'fast'}


def max_opset() -> int:
    """The newest opset that this torch's ONNX exporter writes and the installed onnx knows."""
    import onnx

    try:
        from torch.onnx._constants import ONNX_MAX_OPSET  # torch's own bound (23 in torch 2.13)
    except ImportError:
        ONNX_MAX_OPSET = onnx.defs.onnx_opset_version()
    return min(ONNX_MAX_OPSET, onnx.defs.onnx_opset_version())


def _fused_translation() -> dict:
    from .fused_node import TRANSLATION  # onnxscript's parser: only for this graph

    return TRANSLATION


def export_onnx(
    detector: nn.Module,
    image: Tensor,
    path: str,
    dynamic: bool = False,
    opset: int = 18,
    min_size: Optional[int] = None,
    metadata: Optional[dict] = None,
    msda: str = 'grid_sample',
) -> Dict[str, object]:
    """The detector with post-processing as an ONNX model at ``path``, its deformable attention as
    ``msda`` says:

    * ``'grid_sample'``: one GridSample per level, standard ops (the faster of the two standard-op graphs);
    * ``'gather'``: Gather and arithmetic, no GridSample, for runtimes without a correct GridSample
      such as TensorRT (not yet run in TensorRT);
    * ``'fused'``: one node per attention, pit-det's op, which its onnxruntime and OpenVINO
      libraries run (:mod:`pit_det_deploy.fused`; the fastest in both, docs/export.md);
    * ``'trt_plugin'``: one node per attention, TensorRT's ``MultiscaleDeformableAttnPlugin_TRT``
      (:mod:`pit_det_deploy.trt_plugin`; not yet run in TensorRT; no CPU runtime has it).

    Returns the facts stored in its metadata (``pit_det`` key, JSON): input range, graph kind and
    whatever ``metadata`` adds.

    Raises:
        PitDetError: an unknown ``msda``, an ``opset`` without the graph's ops, one the exporter
            could not convert the graph to (nothing is written then), or a torch too old for the
            export.
    """
    import onnx

    require_torch_for_export(dynamic)
    if msda not in GRAPHS:
        raise PitDetError(f'--msda {msda!r}: choose one of {sorted(GRAPHS)}')
    if opset < GRAPHS[msda]:
        raise PitDetError(f'opset {opset} is not supported: the {msda} graph needs opset >= {GRAPHS[msda]}')
    if opset > max_opset():
        raise PitDetError(
            f"opset {opset} is not supported: torch {torch.__version__}'s exporter writes up to {max_opset()}"
        )
    H, W = image.shape[-2:]
    info = dict(metadata or {}, input_shape=[H, W], dynamic=dynamic, opset=opset, msda=msda)
    shapes = None
    if dynamic:
        info['min_size'] = min_size or min_dynamic_size(detector)
        info['max_size'] = MAX_DYNAMIC_SIZE
        shapes = dynamic_image_shapes(info['min_size'], info['max_size'])
    traced = _TRACED_IMPL[msda]
    # The C++ kernel ('fast') is traced as pit_det::ms_deform_attn, which only the onnxscript
    # translation of :mod:`.fused_node` writes (as one node); the standard-op graphs need none.
    translation = _fused_translation() if traced == 'fast' else None
    with torch.no_grad(), msda_impl_as(detector, traced):
        # onnxscript's graph optimiser (0.7.2) left a dangling input in these graphs
        # ('sigmoid_1_min_1' is not ... output of a previous node); onnxruntime optimises at load.
        program = torch.onnx.export(
            exportable(detector),
            (image,),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=shapes,
            input_names=['image'],
            output_names=['boxes', 'scores', 'labels'],
            optimize=False,
            verbose=False,
            custom_translation_table=translation,
        )
    model = program.model_proto
    written = next(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))
    if written != opset:  # the exporter falls back to its own opset when it cannot convert
        raise PitDetError(
            f"torch's ONNX exporter could not convert this {msda} graph to opset {opset} (it "
            f'wrote opset {written}); export with --opset {written}'
        )
    if msda == 'trt_plugin':
        model = to_trt_plugin(model)
    model_metadata.write(model, info)
    onnx.save(model, path)
    return info
