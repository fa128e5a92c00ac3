"""Detectors as self-contained graphs: ``torch.export`` programs and ONNX models.

What is exported is everything between preprocessing and the original image: a normalised,
unpadded image batch goes in (mmdet's ``DetDataPreprocessor`` does resize-free normalisation and
BGR -> RGB outside), and either the head's raw outputs (:class:`DetectorCore`) or post-processed
detections (:class:`DetectorWithPostprocess`) come out. Boxes are in the input's pixels; dividing
them by the test pipeline's scale factor (see ``tools/onnx_demo.py``) gives original-image boxes,
which is all mmdet's ``rescale=True`` does.
"""
import json
from types import SimpleNamespace
from typing import Dict, Optional, Tuple

import torch
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.config import Config
from torch import Tensor, nn

from .checkpoint import read_state_dict, safe_torch_load
from .errors import CheckpointError, PitDetError
from .models import set_msda_impl


class DetectorCore(nn.Module):
    """Backbone, neck, transformer and head of a Deformable DETR: (B, 3, H, W) -> raw outputs.

    Args:
        detector: a built ``PitDeformableDETR`` in eval mode.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            image: (B, 3, H, W) normalised, every image filling the whole batch shape (no padding,
                so no masks: what mmdet does for such batches too).

        Returns:
            logits: (B, Q, K) class logits of the last decoder layer.
            boxes: (B, Q, 4) boxes (cx, cy, w, h), normalised to the input size.
        """
        B, _, H, W = image.shape
        # What pre_transformer reads of a DetDataSample; not one itself, since DetDataSample
        # deep-copies its metainfo, which symbolic sizes (dynamic export) do not support.
        samples = [SimpleNamespace(batch_input_shape=(H, W), img_shape=(H, W))] * B
        head_inputs = self.detector.forward_transformer(self.detector.extract_feat(image), samples)
        all_logits, all_boxes = self.detector.bbox_head(head_inputs['hidden_states'], head_inputs['references'])
        return all_logits[-1], all_boxes[-1]


class DetectorWithPostprocess(DetectorCore):
    """:class:`DetectorCore` followed by mmdet's ``DeformableDETRHead`` post-processing (sigmoid
    scores, top-k over all query x class pairs, boxes to corners in pixels, clipped to the input)
    for every image of the batch.

    Args:
        detector: a built ``PitDeformableDETR`` in eval mode.
        max_per_img: detections per image; default the head's ``test_cfg.max_per_img``.
    """

    def __init__(self, detector: nn.Module, max_per_img: Optional[int] = None) -> None:
        super().__init__(detector)
        self.max_per_img = max_per_img or detector.bbox_head.test_cfg.get('max_per_img', 100)

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            image: (B, 3, H, W) as for :class:`DetectorCore`.

        Returns:
            boxes: (B, k, 4) float (x1, y1, x2, y2) in input pixels.
            scores: (B, k) float, descending.
            labels: (B, k) int64.
            with k = min(max_per_img, Q * K).
        """
        logits, boxes = super().forward(image)
        B, Q, K = logits.shape
        H, W = image.shape[-2:]
        scores, index = logits.sigmoid().flatten(1).topk(min(self.max_per_img, Q * K), dim=1)  # (B, k)
        labels = index % K
        boxes = bbox_cxcywh_to_xyxy(boxes.gather(1, (index // K)[..., None].expand(-1, -1, 4)))
        size = torch.stack([torch.scalar_tensor(n, dtype=boxes.dtype, device=boxes.device) for n in (W, H, W, H)])
        boxes = torch.minimum((boxes * size).clamp(min=0), size)
        return boxes, scores, labels


def exportable(detector: nn.Module, msda_impl: str, postprocess: bool = True) -> nn.Module:
    """``detector`` in eval mode with ``msda_impl``, wrapped for export."""
    set_msda_impl(detector.eval(), msda_impl)
    return (DetectorWithPostprocess if postprocess else DetectorCore)(detector).eval()


def export_program(detector: nn.Module, image: Tensor, msda_impl: str = 'fast', postprocess: bool = False,
                   dynamic: bool = False) -> torch.export.ExportedProgram:
    """``torch.export`` of the detector on ``image``'s shape (``dynamic``: any height and width).

    With ``msda_impl='fast'`` deformable attention is the custom op ``pit_det::ms_deform_attn``.
    """
    module = exportable(detector, msda_impl, postprocess)
    with torch.no_grad():
        return torch.export.export(module, (image,), dynamic_shapes=dynamic_image_shapes() if dynamic else None,
                                   strict=False)


def dynamic_image_shapes(min_size: int = 256, max_size: int = 4096) -> tuple:
    """Height and width free within [min_size, max_size]; batch 1. The lower bound keeps the
    encoder tokens above the shipped configs' 300 queries (so one graph covers the range)."""
    return ({2: torch.export.Dim('height', min=min_size, max=max_size),
             3: torch.export.Dim('width', min=min_size, max=max_size)},)


def min_dynamic_size(detector: nn.Module, step: int = 32, max_size: int = 4096) -> int:
    """Smallest square side (a multiple of ``step``) at which the detector's encoder gets at least
    ``num_queries`` tokens: below it prediction takes fewer queries (another graph)."""
    detector.eval()
    for size in range(step, max_size + 1, step):
        with torch.no_grad():
            feats = detector.extract_feat(torch.zeros(1, 3, size, size))
        if sum(f.shape[-2] * f.shape[-1] for f in feats) >= detector.num_queries:
            return size
    raise PitDetError(f'no input up to {max_size} px gives {detector.num_queries} encoder tokens')


def build_detector(cfg: Config, checkpoint: str) -> nn.Module:
    """The config's detector with every weight from ``checkpoint`` (read weights-only).

    Raises:
        CheckpointError: the checkpoint does not fit the config: missing or unexpected weights,
            or shapes that differ, each named with both files.
    """
    model_cfg = cfg.model.copy()
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone = dict(model_cfg.backbone, init_cfg=None)  # the checkpoint has every weight
    detector = MODELS.build(model_cfg)
    state = read_state_dict(checkpoint)
    own = detector.state_dict()
    problems = []
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(v.shape)}'
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    for name, keys in (('missing from the checkpoint', missing), ('not in the model', unexpected),
                       ('with other shapes', shapes)):
        if keys:
            problems.append(f'{len(keys)} weights {name}: {keys[:5]}' + (' ...' if len(keys) > 5 else ''))
    if problems:
        raise CheckpointError(f'{checkpoint} does not match {cfg.filename}: ' + '; '.join(problems))
    detector.load_state_dict(state)
    return detector.eval()


def classes_of(cfg: Config, checkpoint: str) -> list:
    """Class names: the checkpoint's ``meta.dataset_meta``, else the config's test set, else COCO's."""
    meta = safe_torch_load(checkpoint, map_location='cpu')
    meta = meta.get('meta', {}) if isinstance(meta, dict) else {}
    classes = (meta.get('dataset_meta') or {}).get('classes')
    if classes is None:
        classes = (cfg.test_dataloader.dataset.get('metainfo') or {}).get('classes')
    if classes is None:
        from mmdet.datasets import CocoDataset
        classes = CocoDataset.METAINFO['classes']
    return list(classes)


def preprocessing_of(cfg: Config) -> Dict[str, object]:
    """What runs before the exported graph, read from the config: the test pipeline's resize and
    the data preprocessor's normalisation (see :mod:`pit_det_deploy.preprocess`)."""
    resize = next((t for t in cfg.test_pipeline if t['type'] == 'Resize'), None)
    if resize is None or not resize.get('keep_ratio', False):
        raise PitDetError(f'{cfg.filename}: export needs a test pipeline with Resize(keep_ratio=True)')
    pre = cfg.model.data_preprocessor
    return dict(resize_scale=list(resize['scale']),
                mean=list(pre.get('mean', [0.0] * 3)), std=list(pre.get('std', [1.0] * 3)),
                bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)))


def export_onnx(detector: nn.Module, image: Tensor, path: str, dynamic: bool = False, opset: int = 18,
                min_size: Optional[int] = None, metadata: Optional[dict] = None) -> Dict[str, object]:
    """The detector with post-processing as an ONNX model at ``path``; deformable attention as
    standard ops (``grid_sample`` -> GridSample). Returns the facts stored in its metadata
    (``pit_det`` key, JSON): input range and whatever ``metadata`` adds.

    Raises:
        PitDetError: ``opset`` below 16 (no GridSample) or a failed export, naming the cause.
    """
    import onnx
    if opset < 16:
        raise PitDetError(f'opset {opset} is not supported: deformable attention needs GridSample (opset >= 16)')
    module = exportable(detector, 'grid_sample', postprocess=True)
    H, W = image.shape[-2:]
    info = dict(metadata or {}, input_shape=[H, W], dynamic=dynamic, opset=opset)
    shapes = None
    if dynamic:
        info['min_size'] = min_size or min_dynamic_size(detector)
        info['max_size'] = 4096
        shapes = dynamic_image_shapes(info['min_size'], info['max_size'])
    with torch.no_grad():
        # onnxscript's graph optimiser (0.7.2) left a dangling input in these graphs
        # ('sigmoid_1_min_1' is not ... output of a previous node); onnxruntime optimises at load.
        program = torch.onnx.export(module, (image,), dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                                    input_names=['image'], output_names=['boxes', 'scores', 'labels'],
                                    optimize=False, verbose=False)
    model = program.model_proto
    onnx.helper.set_model_props(model, {'pit_det': json.dumps(info)})
    onnx.save(model, path)
    return info
