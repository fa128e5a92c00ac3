"""Every Table 5 detector predicts and trains on images that give fewer encoder tokens than its
300 two-stage queries (strips, icons), through the shipped pipelines; normal images give exactly
mmdet's results; a detection depends on its batch neighbours, so AP is evaluated one image per batch."""

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import pit_det  # noqa: F401  registers the transforms and the detector
from pit_det.models import build_detector

ROOT = Path(__file__).resolve().parents[1]
NAMES = ['r50', 'pit_s', 'vit_s', 'vit_s_pyramid']
init_default_scope('mmdet')  # as the Runner does: nested transforms resolve in mmdet's registry
# (height, width); the last two resize to one pixel a side (mmdet's Resize makes it zero: OpenCV stops).
ODD_SIZES = [(20, 2000), (2000, 20), (12, 5000), (8, 8), (300, 12), (2, 4000), (3000, 1)]


# How many tokens reach the 300 two-stage queries is the backbone's and the pipeline's doing, and
# pit-det's code that differs from mmdet's runs once per forward or in every layer alike: the few-token
# and padded-batch tests build one encoder and two decoder layers (box refinement passes boxes from one
# to the next), the other layers being the same module again; single images are compared with mmdet at
# the shipped depth. Backbones, necks, queries and pipelines are the shipped ones.
SHALLOW = {'model.encoder.num_layers': 1, 'model.decoder.num_layers': 2}


def build(config: str, options: dict = None, **model_options):
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    cfg.merge_from_dict(options or {})
    cfg.model.update(model_options)
    # Random weights: loading the shipped init_cfg is tested in test_shipped_configs.py.
    return cfg, build_detector(cfg).train()


def encoder_tokens(model) -> list:
    """A list that receives the number of encoder tokens of each forward."""
    seen = []
    model.encoder.layers[-1].register_forward_hook(
        lambda m, args, kwargs, out: seen.append(out.shape[1]), with_kwargs=True
    )
    return seen


def sample(tmp_path: Path, hw, pipeline, box_fraction=(0.1, 0.1, 0.6, 0.7)):
    """One image of size ``hw`` with one box, through ``pipeline`` (the config's)."""
    h, w = hw
    path = tmp_path / f'{h}x{w}.png'
    rng = np.random.default_rng(h * 10007 + w)
    cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    x1, y1, x2, y2 = box_fraction
    box = [x1 * w, y1 * h, max(x2 * w, x1 * w + 1), max(y2 * h, y1 * h + 1)]
    results = dict(
        img_path=str(path), img_id=0, height=h, width=w, instances=[dict(bbox=box, bbox_label=5, ignore_flag=0)]
    )
    return Compose(pipeline)(results)


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_predict_and_train_on_images_with_few_tokens(tmp_path, name):
    cfg, model = build(f'deformable_detr_{name}.py', SHALLOW)
    assert len(model.encoder.layers) == 1 and model.num_queries == 300
    tokens = encoder_tokens(model)
    model.eval()
    for hw in ODD_SIZES:
        packed = sample(tmp_path, hw, cfg.test_pipeline)
        with torch.no_grad():
            (result,) = model.test_step(dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]))
        pred = result.pred_instances
        assert len(pred) == 100, hw  # 80 classes x at least 4 tokens > max_per_img
        assert torch.isfinite(pred.bboxes).all() and torch.isfinite(pred.scores).all()
        h, w = hw  # boxes come back in the original image's coordinates, clipped to it
        assert (pred.bboxes[:, 0::2] >= 0).all() and (pred.bboxes[:, 0::2] <= w).all()
        assert (pred.bboxes[:, 1::2] >= 0).all() and (pred.bboxes[:, 1::2] <= h).all()
    # The strips stay below 300 tokens after the test resize (long side 666); it scales an 8 x 8
    # image up to 400 x 400, and 300 x 12 gives 237 to 452 tokens depending on the backbone.
    assert max(tokens[:3]) < 300 and tokens[3] > 300, tokens

    model.train()
    np.random.seed(0)  # the train pipeline's random resize / crop
    del tokens[:]
    for hw in ODD_SIZES:  # one image a batch: a batch of strips would be padded to a square
        packed = sample(tmp_path, hw, cfg.train_pipeline)
        data = model.data_preprocessor(dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]), True)
        losses = model.loss(data['inputs'], data['data_samples'])
        total = sum(v for k, v in losses.items() if 'loss' in k)
        assert torch.isfinite(total), hw
        model.zero_grad()
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), hw
    # The 12 x 5000 strip stays below 300 tokens through either train branch (resize, or resize-crop-resize).
    assert tokens[2] < 300, tokens


def test_few_classes_and_tokens_give_fewer_detections(tmp_path):
    """The toy config (3 classes, 50 queries, long side 128) on a 20 x 2000 strip: 1 x 128 pixels
    padded to 16 x 128, levels of 1 x 15, 1 x 8, 1 x 4 and 1 x 2 = 29 tokens, so 29 x 3 (query,
    class) pairs, fewer than max_per_img (100)."""
    cfg, model = build('toy/deformable_detr_pit_s_toy.py')
    tokens = encoder_tokens(model)
    packed = sample(tmp_path, (20, 2000), cfg.test_pipeline)
    with torch.no_grad():
        (result,) = model.eval().test_step(dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]))
    assert tokens == [29] and len(result.pred_instances) == 29 * 3 and (result.pred_instances.labels < 3).all()


def with_mmdet_reference(name: str, options: dict = None):
    """The shipped config (with ``options``), pit-det's detector (stock kernel) and mmdet's own
    ``DeformableDETR`` with the same weights."""
    cfg, ours = build(f'deformable_detr_{name}.py', options, msda_impl='stock')
    mmdet_cfg = copy.deepcopy(cfg.model)
    mmdet_cfg.pop('msda_impl')
    mmdet_cfg.type = 'DeformableDETR'
    reference = MODELS.build(mmdet_cfg)
    reference.load_state_dict(ours.state_dict())
    return cfg, ours, reference


@pytest.mark.parametrize('name', ['pit_s', 'r50'])
def test_normal_images_give_exactly_mmdets_results(tmp_path, name):
    cfg, ours, reference = with_mmdet_reference(name)
    packed = sample(tmp_path, (480, 640), cfg.test_pipeline)  # 400 x 533 after the test resize
    data = dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']])
    with torch.no_grad():
        (a,) = ours.eval().test_step(copy.deepcopy(data))
        (b,) = reference.eval().test_step(copy.deepcopy(data))
    for key in ('bboxes', 'scores', 'labels'):
        assert torch.equal(a.pred_instances[key], b.pred_instances[key]), key


@pytest.mark.parametrize('name', ['pit_s', 'vit_s'])
def test_padded_batches_give_exactly_mmdets_results_and_losses(tmp_path, name):
    """Two images of different sizes in one batch: padding masks, valid ratios and masked
    proposals go through pit-det's own ``pre_transformer`` / encoder / proposal code; the
    detections and every loss equal mmdet's ``DeformableDETR`` bit for bit."""
    cfg, ours, reference = with_mmdet_reference(name, SHALLOW)
    for pipeline, train in ((cfg.test_pipeline, False), (cfg.train_pipeline, True)):
        np.random.seed(0)
        packed = [sample(tmp_path, hw, pipeline) for hw in ((480, 640), (300, 520))]
        data = dict(inputs=[p['inputs'] for p in packed], data_samples=[p['data_samples'] for p in packed])
        if not train:
            with torch.no_grad():
                results = [m.eval().test_step(copy.deepcopy(data)) for m in (ours, reference)]
            for a, b in zip(*results):
                for key in ('bboxes', 'scores', 'labels'):
                    assert torch.equal(a.pred_instances[key], b.pred_instances[key]), key
            continue
        losses = []
        for m in (ours, reference):
            batch = m.data_preprocessor(copy.deepcopy(data), True)
            assert batch['inputs'].shape[-2:] != batch['data_samples'][1].img_shape  # padded: masks in use
            torch.manual_seed(0)  # the same dropout masks
            losses.append(m.train().loss(batch['inputs'], batch['data_samples']))
        assert losses[0].keys() == losses[1].keys()
        for key in losses[0]:
            assert torch.equal(losses[0][key], losses[1][key]), key


def test_a_detection_depends_on_its_batch_neighbours_so_ap_is_evaluated_one_image_per_batch(tmp_path):
    """A smaller image in a batch is padded, and PiT attends to the padded tokens (no padding mask,
    as in timm and the paper; the encoder's valid ratios do not undo it): its detections change with
    the image it is batched with. So every shipped config evaluates one image per batch, and the AP
    that the quick start, table5-toy and tools/test.py report does not depend on batch composition."""
    cfg, model = build('toy/deformable_detr_pit_s_toy.py')
    small, large = (sample(tmp_path, hw, cfg.test_pipeline) for hw in ((80, 96), (128, 128)))

    def detections(*images):
        data = dict(inputs=[p['inputs'] for p in images], data_samples=[p['data_samples'] for p in images])
        with torch.no_grad():
            return model.eval().test_step(copy.deepcopy(data))[0].pred_instances

    alone, batched = detections(small), detections(small, large)
    assert torch.equal(alone.scores, detections(small).scores)  # deterministic alone
    assert not torch.allclose(alone.scores, batched.scores, atol=1e-4)  # the neighbour's padding moves them
    for config in sorted((ROOT / 'configs').rglob('deformable_detr_*.py')):
        loaded = Config.fromfile(str(config))
        assert loaded.val_dataloader.batch_size == loaded.test_dataloader.batch_size == 1, config.name
