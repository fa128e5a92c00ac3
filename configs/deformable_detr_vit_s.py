# Deformable DETR (box refinement + two-stage) with a ViT-S (DeiT-S) backbone on
# half-resolution COCO: the ViT-S row of PiT (arXiv 2103.16302) Table 5. As in the paper,
# the three backbone levels are the outputs of layers 2, 8 and 12, all at stride 16; the
# neck's extra level (stride 2 conv) adds a stride-32 map. See
# deformable_detr_vit_s_pyramid.py for a variant with strides 8 / 16 / 32.
_base_ = './deformable_detr_r50.py'

# ImageNet DeiT-S weights, official release deit_small_patch16_224-cd65a155.pth
# (facebookresearch/deit on GitHub); timm's `deit_small_patch16_224.fb_in1k` loads too.
pretrained = 'checkpoints/deit_small_patch16_224-cd65a155.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ViT',
        arch='s',
        out_indices=(1, 7, 11),  # layers 2, 8 and 12
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    neck=dict(in_channels=[384, 384, 384]),
)  # mmdet R50: 512 / 1024 / 2048
