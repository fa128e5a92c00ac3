# Deformable DETR (box refinement + two-stage) with a PiT-S backbone on half-resolution
# COCO: the PiT-S row of PiT (arXiv 2103.16302) Table 5. Identical to deformable_detr_r50.py
# except for the backbone and the neck's input channels.
_base_ = './deformable_detr_r50.py'

# ImageNet PiT-S weights, official release pit_s_809.pth (naver-ai/pit on GitHub); timm's
# `pit_s_224.in1k` files load too. Override with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH.
pretrained = 'checkpoints/pit_s_809.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PiT',
        arch='s',
        out_indices=(0, 1, 2),  # the three stages: strides 8 / 16 / 32
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    neck=dict(in_channels=[144, 288, 576]),
)  # mmdet R50: 512 / 1024 / 2048
