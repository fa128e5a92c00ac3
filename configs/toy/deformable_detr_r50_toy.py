# ResNet-50 Deformable DETR on the toy set: the PiT-S toy recipe (deformable_detr_pit_s_toy.py:
# data, 3 + 3 layers, 50 queries, schedule, seed) with the ResNet-50 backbone and neck of
# ../deformable_detr_r50.py, for Table 5 on the toy set (tools/analysis/table5_toy.py).
#
# From random weights mmdet's R50 settings would not learn: its BatchNorm is frozen
# (requires_grad=False, eval mode), and with zero_init_residual the last norm of every residual
# branch starts at 0, so frozen it keeps every block an identity. Here BatchNorm trains
# (batch 4) and no stage is frozen, as for a backbone trained from scratch.
_base_ = './deformable_detr_pit_s_toy.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),  # strides 8 / 16 / 32, as the PiT-S stages
        frozen_stages=-1,  # mmdet: 1 (the ImageNet stem stays fixed)
        norm_cfg=dict(type='BN', requires_grad=True),  # mmdet: requires_grad=False
        norm_eval=False,  # mmdet: True
        style='pytorch',
        init_cfg=None,
    ),
    neck=dict(in_channels=[512, 1024, 2048]),
)
