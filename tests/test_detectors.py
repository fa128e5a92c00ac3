"""The three Table 5 detectors (and the ViT pyramid variant): configs, loss, predict."""

from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

import pit_det  # noqa: F401
from pit_det import models

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
NAMES = ['r50', 'pit_s', 'vit_s', 'vit_s_pyramid']


def load(name: str) -> Config:
    return Config.fromfile(str(CONFIGS / f'deformable_detr_{name}.py'))


def build_detector(cfg: Config):
    """Random weights (no pretrained files on test machines), in training mode."""
    return models.build_detector(cfg).train()


def make_batch(model, num_boxes, hw=(160, 208)):
    # Two-stage selects its 300 queries among the encoder tokens, so the image must give
    # at least 300 (ViT-S at 160 x 208: 3 x 10 x 13 + 5 x 7 = 425).

    H, W = hw
    samples = []
    for n in num_boxes:
        s = DetDataSample(
            metainfo=dict(img_shape=hw, ori_shape=hw, pad_shape=hw, batch_input_shape=hw, scale_factor=(1.0, 1.0))
        )
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[10.0, 20.0, 90.0, 100.0]])[:n], labels=torch.tensor([5])[:n]
        )
        samples.append(s)
    inputs = [torch.randint(0, 256, (3, H, W), dtype=torch.uint8) for _ in num_boxes]
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)


@pytest.mark.parametrize('name', NAMES)
def test_loss_backward_and_predict(name):
    model = build_detector(load(name)).train()
    for num_boxes in ([0], [1], [0, 1]):  # empty ground truth, one box, mixed batch
        data = make_batch(model, num_boxes)
        losses = model.loss(data['inputs'], data['data_samples'])
        assert {'loss_cls', 'loss_bbox', 'loss_iou', 'enc_loss_cls', 'd0.loss_cls'} <= set(losses)
        total = sum(v for k, v in losses.items() if 'loss' in k)
        assert torch.isfinite(total)
        model.zero_grad()
        total.backward()
        if num_boxes == [1]:
            assert losses['loss_bbox'] > 0
            grads = [p.grad for n, p in model.backbone.named_parameters() if p.requires_grad]
            assert grads and all(g is not None for g in grads)
    model.eval()
    data = make_batch(model, [0, 1])
    with torch.no_grad():
        results = model.predict(data['inputs'], data['data_samples'])
    assert len(results) == 2
    for r in results:
        pred = r.pred_instances
        assert pred.bboxes.shape == (100, 4) and pred.scores.shape == (100,) and pred.labels.shape == (100,)
        assert torch.isfinite(pred.bboxes).all() and (pred.labels < 80).all()


@pytest.mark.parametrize('name', NAMES)
def test_common_settings(name):
    cfg = load(name)
    m = cfg.model
    assert m.type == 'PitDeformableDETR' and m.msda_impl == 'auto'  # mmdet's detector, kernel selectable
    assert m.with_box_refine and m.as_two_stage
    assert m.num_feature_levels == 4 and m.neck.num_outs == 4 and m.num_queries == 300
    # Schedule: 50 epochs, lr x0.1 at 40, AdamW 2e-4 / 1e-4, clip 0.1, 0.1x lr where the paper has it.
    assert cfg.train_cfg.max_epochs == 50
    (sched,) = cfg.param_scheduler
    assert sched.type == 'MultiStepLR' and sched.milestones == [40] and sched.gamma == 0.1
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and opt.lr == 2e-4 and opt.weight_decay == 1e-4
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.1
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert all(keys[k].lr_mult == 0.1 for k in ('backbone', 'sampling_offsets', 'reference_points'))
    assert cfg.auto_scale_lr.base_batch_size == 32 and cfg.train_dataloader.batch_size == 2
    # Half resolution.
    resize_choice = cfg.train_pipeline[3]
    plain, crop = resize_choice.transforms
    scales = [(400 - 16 * i, 666) for i in range(11)]
    assert plain[0].scales == scales and crop[2].scales == scales
    assert [s[0] for s in crop[0].scales] == [200, 250, 300] and crop[1].crop_size == (192, 300)
    assert {plain[0].resize_type, crop[0].resize_type, crop[2].resize_type} == {'SafeResize'}  # a 4000 x 2 strip
    resize = next(t for t in cfg.test_pipeline if t.type == 'SafeResize')
    assert sorted(resize.scale) == [400, 666]
    assert cfg.train_dataloader.dataset.pipeline == cfg.train_pipeline
    assert cfg.val_dataloader.dataset.pipeline == cfg.test_pipeline
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.val_evaluator.ann_file == 'data/coco/annotations/instances_val2017.json'


@pytest.mark.parametrize(
    'name,backbone,strides',
    [
        ('r50', 'ResNet', None),
        ('pit_s', 'PiT', (8, 16, 32)),
        ('vit_s', 'ViT', (16, 16, 16)),
        ('vit_s_pyramid', 'ViTPyramid', (8, 16, 32)),
    ],
)
def test_neck_follows_backbone(name, backbone, strides):
    cfg = load(name)
    assert cfg.model.backbone.type == backbone
    if strides is None:
        assert cfg.model.neck.in_channels == [512, 1024, 2048]
        return
    model = MODELS.build(dict(cfg.model.backbone, init_cfg=None))
    assert list(model.out_channels) == cfg.model.neck.in_channels
    assert model.out_strides == strides
    if backbone == 'ViT':
        assert cfg.model.backbone.out_indices == (1, 7, 11)  # layers 2, 8, 12
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
