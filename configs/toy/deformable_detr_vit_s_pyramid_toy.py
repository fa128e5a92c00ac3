# ViT-S with resampled levels (strides 8 / 16 / 32, ../deformable_detr_vit_s_pyramid.py) on the
# toy set, with the PiT-S toy recipe (deformable_detr_pit_s_toy.py), from random weights.
_base_ = './deformable_detr_vit_s_toy.py'

model = dict(backbone=dict(type='ViTPyramid', scale_factors=(2.0, 1.0, 0.5)))
