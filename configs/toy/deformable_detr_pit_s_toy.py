# PiT-S Deformable DETR on the generated toy set (pit_det/datasets/toy.py), for the CPU
# quick start. Same detector as ../deformable_detr_pit_s.py; changed only where the toy
# scale demands it:
#   * data: data/toy_coco, 3 classes (rectangle, ellipse, triangle);
#   * image scale: images are 80-128 px, used as they are (long side <= 128) (no multi-scale / crop);
#   * backbone from random weights (no download possible) and therefore at full lr;
#   * 50 queries instead of 300: at most 4 objects per image, and two-stage picks the queries
#     among the encoder tokens, of which an 80 x 80 image has only 119;
#   * a recipe for a first result in minutes, chosen on the toy set (val AP after training,
#     evaluated in batches of 4; seconds of training on a 2-core Xeon with AVX-512, 128 px images,
#     batch 4). Each AP below is one run (seed 0) on the 100 val images: the seed alone moves this
#     detector by up to 6.6 AP (docs/analysis.md), so only the gaps beyond that (dropout, 900
#     against 450 iterations) are more than noise; the times are measured, the smaller AP gaps are not:
#       6 + 6 layers, dropout 0.1, 900 iterations (6 epochs)        AP 0.352   ~600 s
#       6 + 6 layers, dropout 0.1, 450 iterations                   AP 0.208    289 s
#       3 + 3 layers, dropout 0.1, 450 / 600 iterations             AP 0.213 / 0.217
#       3 + 3 layers, dropout 0,   600 iterations (this config)     AP 0.291    217 s
#     lr, this config otherwise: 1.4e-4 AP 0.278, 2e-4 0.291, 3e-4 0.238 (and 4e-4 lost AP with
#     dropout too: 0.134 against 0.213); no gradient clipping: 0.292, so mmdet's clip stays;
#     - 3 encoder and 3 decoder layers (mmdet: 6 + 6): 0.42 against 0.65 s per iteration;
#     - no dropout: a model trained for minutes from random weights does not overfit, and
#       dropout slowed both its learning and its step (0.34 against 0.37 s);
#     - fused AdamW (torch's single-kernel update; the default on CPU is a Python loop over the
#       parameters): 0.37 against 0.42 s;
#   * schedule: 4 epochs (600 iterations), lr x0.1 after epoch 3, batch 4 (evaluation: 1), validation only at
#     the end (and once before training), frequent logging.
_base_ = '../deformable_detr_pit_s.py'

data_root = 'data/toy_coco/'
metainfo = dict(classes=('rectangle', 'ellipse', 'triangle'))
max_epochs = 4

model = dict(
    num_queries=50,
    backbone=dict(init_cfg=None),
    encoder=dict(num_layers=3, layer_cfg=dict(self_attn_cfg=dict(dropout=0.0), ffn_cfg=dict(ffn_drop=0.0))),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(self_attn_cfg=dict(dropout=0.0), cross_attn_cfg=dict(dropout=0.0), ffn_cfg=dict(ffn_drop=0.0)),
    ),
    bbox_head=dict(num_classes=3),
)

train_pipeline = [
    dict(type='SafeLoadImageFromFile', on_failure='skip', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='SafeResize', scale=(128, 128), keep_ratio=True),
    dict(type='PadToMinSize', min_size=16),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='SafeLoadImageFromFile', on_failure='blank', backend_args=None),
    dict(type='SafeResize', scale=(128, 128), keep_ratio=True),
    dict(type='PadToMinSize', min_size=16),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,  # 2 CPU cores: loading tiny PNGs inline is cheaper than a worker process
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline),
)
# One image per batch where AP is reported (the quick start, table5-toy, tools/test.py): in a batch,
# smaller images are padded, and the transformer backbones attend to the padded tokens (PiT and ViT
# have no padding mask, as in timm and the paper), so at batch 4 an image's detections depended on
# its neighbours (quick start's PiT-S: AP 0.292 at batch 4, 0.304 at batch 1; AMD Zen 4). mmdet's
# COCO configs evaluate at batch 1 too.
val_dataloader = dict(
    batch_size=1,
    num_workers=0,  # 2 CPU cores: loading tiny PNGs inline is cheaper than a worker process
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(fused=True), paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[3], gamma=0.1)]
auto_scale_lr = dict(base_batch_size=4)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=2, max_keep_ckpts=2, save_best=None))
log_processor = dict(window_size=10)
# A fixed seed: the quick start's numbers reproduce run to run.
randomness = dict(seed=0)
