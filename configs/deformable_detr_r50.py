# Deformable DETR, box refinement + two-stage, ResNet-50, on half-resolution COCO 2017:
# the ResNet-50 row of PiT (arXiv 2103.16302) Table 5. Everything not set here is mmdet's
# refine + two-stage config: 300 queries, 4 feature levels (3 backbone + 1 extra),
# 6 + 6 layers, 50 epochs, AdamW lr 2e-4 / wd 1e-4, grad clip 0.1, 0.1x lr for the
# backbone, sampling offsets and reference points, lr x0.1 at epoch 40, and
# auto_scale_lr with base batch 32 (16 GPUs x 2 images).
_base_ = 'mmdet::deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py'

# pit-det's modules, its safe checkpoint reader and atomic writer (pit_det/integration.py).
custom_imports = dict(imports=['pit_det.integration'], allow_failed_imports=False)

# mmdet's DeformableDETR with a selectable deformable-attention kernel (pit_det/models/
# deformable_detr.py); same weights and checkpoints. 'auto': pit-det's C++ kernel on CPU when it
# builds, else mmcv's pure-PyTorch one; mmcv's CUDA kernel on GPU. 'stock' is mmcv unchanged.
model = dict(
    type='PitDeformableDETR',
    msda_impl='auto',
    # mmdet's FocalLoss (gamma 2, alpha 0.25, weight 2 as mmdet's config), calling mmcv's CUDA focal
    # loss only where mmcv has CUDA ops: a GPU machine set up without nvcc trains too
    # (pit_det/models/losses.py).
    bbox_head=dict(loss_cls=dict(type='PortableFocalLoss')),
)

# Standard COCO layout under data/coco; tools/train.py --data-root moves all of it.
data_root = 'data/coco/'
# mmdet's CocoDataset, plus a warning listing the boxes it drops (pit_det/datasets/coco.py).
dataset_type = 'CheckedCocoDataset'

# Half resolution (paper Sec. 4.2): every scale of mmdet's Deformable DETR pipeline halved.
# Training short side 400 - 16 * i for i in 0..10 (240..400; mmdet: 480..800), long side
# at most 666 (mmdet: 1333).
train_scales = [(400 - 16 * i, 666) for i in range(11)]
# Unreadable images are logged and skipped (train) or replaced by a blank one (test) instead
# of killing the run; SafeResize is mmdet's Resize keeping at least a pixel a side (a 4000 x 2
# strip), and images smaller than a 16-pixel patch are padded (pit_det/datasets/transforms.py).
train_pipeline = [
    dict(type='SafeLoadImageFromFile', on_failure='skip', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=train_scales, keep_ratio=True, resize_type='SafeResize')],
            [
                # Crop branch halved too: 200 / 250 / 300 (mmdet: 400 / 500 / 600), long side 2100
                # (4200), crop 192 x 300 (384 x 600).
                dict(
                    type='RandomChoiceResize',
                    scales=[(200, 2100), (250, 2100), (300, 2100)],
                    keep_ratio=True,
                    resize_type='SafeResize',
                ),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(192, 300), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=train_scales, keep_ratio=True, resize_type='SafeResize'),
            ],
        ],
    ),
    dict(type='PadToMinSize', min_size=16),
    dict(type='PackDetInputs'),
]
# Test short side 400, long side at most 666 (mmdet: 800 / 1333).
test_pipeline = [
    dict(type='SafeLoadImageFromFile', on_failure='blank', backend_args=None),
    dict(type='SafeResize', scale=(666, 400), keep_ratio=True),
    dict(type='PadToMinSize', min_size=16),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

# Each sample's augmentation is seeded from (seed, epoch, index), so that a resumed run repeats the
# interrupted one with mmdet's 2 persistent workers (pit_det/datasets/sampler.py).
train_dataloader = dict(
    sampler=dict(type='SeededSampler', shuffle=True),  # mmdet: DefaultSampler
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline),
)
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# Keep the best checkpoint by val AP besides the last ones (mmdet keeps every epoch).
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='coco/bbox_mAP', rule='greater'))

# Stop at the first non-finite loss (saving the state for inspection), keep the random number
# streams of a resumed run those of an uninterrupted one, and draw a progress bar with the ETA and
# the loss on a terminal (pit_det/hooks.py).
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='RNGStateHook'), dict(type='ProgressBarHook')]
