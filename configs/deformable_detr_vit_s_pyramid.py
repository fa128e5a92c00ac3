# ViT-S Deformable DETR whose three levels are resampled to strides 8 / 16 / 32 (a simple
# pyramid in the style of ViTDet: 2x transposed conv / identity / 2x max-pool on layers
# 2, 8 and 12), so the detector sees the same level strides as with PiT-S and ResNet-50.
# The paper's ViT-S (deformable_detr_vit_s.py) feeds all three at stride 16. Differences:
# stride-8 level 4x the tokens of the stride-16 one (more encoder cost, finer small
# objects), and the extra level is at stride 64 instead of 32.
_base_ = './deformable_detr_vit_s.py'

model = dict(backbone=dict(type='ViTPyramid', scale_factors=(2.0, 1.0, 0.5)))
