# ViT-S (DeiT-S) Deformable DETR on the toy set: the PiT-S toy recipe (deformable_detr_pit_s_toy.py:
# data, 3 + 3 layers, 50 queries, schedule, seed) with the backbone and neck of
# ../deformable_detr_vit_s.py (layers 2, 8 and 12, all at stride 16), from random weights.
_base_ = './deformable_detr_pit_s_toy.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ViT',
        arch='s',
        out_indices=(1, 7, 11),  # layers 2, 8 and 12
        init_cfg=None,
    ),
    neck=dict(in_channels=[384, 384, 384]),
)
