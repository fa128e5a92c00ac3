"""The mmdet 3.3.0 / mmcv 2.1.0 methods that pit-det's overrides follow, fingerprinted: an upgrade
that changes one fails here and names the pit-det method to re-check against it. (The behaviour
itself is tested against mmdet's classes in test_detectors.py; this says *which* override an
upgrade touches.) Update a fingerprint only after re-reading the override beside the new source."""

import hashlib
import importlib
import inspect

import pytest

# library method -> (its source's sha256, first 16 hex digits; the pit-det method that follows it)
FOLLOWED = {
    'mmdet.models.detectors.deformable_detr.DeformableDETR.pre_transformer': (
        '37f53f05c469c033',
        'pit_det/models/deformable_detr.py PitDeformableDETR.pre_transformer',
    ),
    'mmdet.models.detectors.deformable_detr.DeformableDETR.forward_encoder': (
        'eb6afdb88992f0b3',
        'pit_det/models/deformable_detr.py PitDeformableDETR.forward_encoder',
    ),
    'mmdet.models.layers.transformer.deformable_detr_layers.DeformableDetrTransformerEncoder.forward': (
        '5dcbaf55985d1bdb',
        'pit_det/models/deformable_detr.py PitDeformableDETR.forward_encoder',
    ),
    'mmdet.models.detectors.deformable_detr.DeformableDETR.pre_decoder': (
        'bbda4fe9af5d0d78',
        'pit_det/models/deformable_detr.py PitDeformableDETR.pre_decoder',
    ),
    'mmdet.models.detectors.deformable_detr.DeformableDETR.gen_encoder_output_proposals': (
        '037bc4b8477da430',
        'pit_det/models/deformable_detr.py PitDeformableDETR.gen_encoder_output_proposals',
    ),
    'mmdet.models.detectors.deformable_detr.DeformableDETR.forward_decoder': (
        'daf8c1f1c9546171',
        'pit_det/models/deformable_detr.py PitDeformableDETR.forward_decoder',
    ),
    'mmdet.models.detectors.base_detr.DetectionTransformer.predict': (
        '1c22eb72e6eccbab',
        'pit_det/models/deformable_detr.py PitDeformableDETR.predict',
    ),
    'mmdet.models.losses.focal_loss.FocalLoss.forward': (
        '1aaa9f6c7b14176b',
        'pit_det/models/losses.py PortableFocalLoss.forward',
    ),
    'mmdet.apis.det_inferencer.DetInferencer._init_pipeline': (
        'af0c059ba99746ad',
        'pit_det/inference.py _init_pipeline',
    ),
    'mmcv.ops.multi_scale_deform_attn.MultiScaleDeformableAttention.forward': (
        '1290579202760e62',
        'pit_det/models/msda.py MSDeformAttn.forward',
    ),
}


def fingerprint(path: str) -> str:
    module, cls, method = path.rsplit('.', 2)
    source = inspect.getsource(getattr(getattr(importlib.import_module(module), cls), method))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@pytest.mark.parametrize('path', FOLLOWED)
def test_followed_library_method_is_unchanged(path):
    expected, override = FOLLOWED[path]
    assert fingerprint(path) == expected, f'{path} changed: re-check {override} against it, then update FOLLOWED'
