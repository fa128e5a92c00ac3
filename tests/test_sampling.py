"""Where deformable attention samples: the recorder (record_sampling) sees exactly what each
module's kernel computes with, the statistics mean what they say, and tools/analysis/visualize_sampling.py
draws and reports them for detectors side by side."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
from mmengine.config import Config
from weight_files import perturbed

from pit_det import benchmark as bm
from pit_det.analysis import sampling as sampling_stats
from pit_det.datasets.toy import make_split
from pit_det.export import DetectorCore
from pit_det.models import MSDeformAttn, record_sampling, set_msda_impl

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'


@pytest.fixture(scope='module')
def toy():
    return perturbed(bm.build_detector(str(TOY), None))


def test_recorded_locations_reproduce_every_modules_output(toy):
    """From the recorded value, locations and weights, mmcv's pure-PyTorch function (and the
    module's own output projection and residual) gives each module's output: 3 encoder and 3
    decoder layers. Recording changes nothing: the detector's outputs are bit-equal."""
    image = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    calls = []
    hooks = [
        m.register_forward_hook(lambda m, args, kwargs, out: calls.append((kwargs['query'], out)), with_kwargs=True)
        for m in toy.modules()
        if isinstance(m, MSDeformAttn)
    ]
    with torch.no_grad():
        plain = DetectorCore(toy)(image)
        calls.clear()
        with record_sampling(toy) as records:
            recorded = DetectorCore(toy)(image)
    for hook in hooks:
        hook.remove()
    assert all(torch.equal(a, b) for a, b in zip(plain, recorded))
    assert [r['module'] for r in records] == [f'encoder.layers.{i}.self_attn' for i in range(3)] + [
        f'decoder.layers.{i}.cross_attn' for i in range(3)
    ]
    assert len(calls) == len(records) == 6
    modules = dict(toy.named_modules())
    for record, (query, out) in zip(records, calls):
        module = modules[record['module']]
        shapes = [tuple(hw) for hw in record['spatial_shapes'].tolist()]
        sampled = multi_scale_deformable_attn_pytorch(
            record['value'], shapes, record['sampling_locations'], record['attention_weights']
        )
        with torch.no_grad():
            rebuilt = module.output_proj(sampled) + query
        torch.testing.assert_close(rebuilt, out, atol=1e-5 * out.abs().max().item(), rtol=0)
        B, Q = query.shape[:2]
        assert record['sampling_locations'].shape == (B, Q, 8, 4, 4, 2)
    assert all(not hasattr(m, 'recorder') or m.recorder is None for m in toy.modules())  # switched off again


def test_stock_modules_cannot_be_recorded_and_say_so(toy):
    set_msda_impl(toy, 'stock')
    try:
        with pytest.raises(ValueError, match="set_msda_impl\\(model, 'fast'\\)"):
            with record_sampling(toy):
                pass
    finally:
        set_msda_impl(toy, 'auto')


def test_statistics_of_a_known_record():
    """One query, one head, two levels (8 x 10 and 4 x 5 tokens) on a 64 x 80 input: all weight on
    level 0 at 4 px right of the reference, 3 px down; level 1 has no weight."""
    H, W = 64, 80
    ref = torch.tensor([0.5, 0.5])
    loc = torch.zeros(1, 1, 1, 2, 2, 2)
    loc[..., 0, :, :] = ref + torch.tensor([4 / W, 3 / H])  # 5 px away
    loc[..., 1, :, :] = ref
    weight = torch.tensor([0.5, 0.5, 0.0, 0.0]).view(1, 1, 1, 2, 2)
    record = dict(
        module='decoder.layers.0.cross_attn',
        sampling_locations=loc,
        attention_weights=weight,
        spatial_shapes=torch.tensor([[8, 10], [4, 5]]),
        reference_points=torch.cat([ref, torch.tensor([0.1, 0.1])]).view(1, 1, 1, 4).expand(1, 1, 2, 4),
    )
    assert sampling_stats.level_mass(record).tolist() == [1.0, 0.0]
    dist = sampling_stats.sampling_distance(record, (H, W))
    assert dist['pixels'][0].item() == pytest.approx(5.0) and dist['pixels_all'].item() == pytest.approx(5.0)
    assert dist['tokens'][0].item() == pytest.approx(5 / 8)  # level 0 has an 8 px stride
    summary = sampling_stats.summarize([record], (H, W))
    assert list(summary) == ['decoder'] and summary['decoder']['distance_px_all'] == [pytest.approx(5.0)]


def test_off_map_samples_count_in_the_share_not_in_the_distance():
    """Level 0: weight 0.3 on a sample 5 px from the reference and 0.2 on one left of the map
    (x < 0), which reads zeros; level 1: all its weight right of the map (x > 1)."""
    H, W = 64, 80
    ref = torch.tensor([0.1, 0.5])
    loc = torch.zeros(1, 1, 1, 2, 2, 2)
    loc[0, 0, 0, 0, 0] = ref + torch.tensor([4 / W, 3 / H])  # on the map, 5 px away
    loc[0, 0, 0, 0, 1] = torch.tensor([-0.05, 0.5])  # 12 px away, off the map
    loc[0, 0, 0, 1, :] = torch.tensor([1.2, 0.5])
    weight = torch.tensor([0.3, 0.2, 0.25, 0.25]).view(1, 1, 1, 2, 2)  # level 0: 0.3 on, 0.2 off
    record = dict(
        module='encoder.layers.0.self_attn',
        sampling_locations=loc,
        attention_weights=weight,
        spatial_shapes=torch.tensor([[8, 10], [4, 5]]),
        reference_points=ref.view(1, 1, 1, 2).expand(1, 1, 2, 2),
    )
    assert sampling_stats.on_map(record).tolist() == [[[[[True, False], [False, False]]]]]
    share = sampling_stats.on_map_share(record)
    assert share.tolist() == [pytest.approx(0.6), 0.0]
    dist = sampling_stats.sampling_distance(record, (H, W))
    assert dist['pixels'][0].item() == pytest.approx(5.0)  # the off-map sample 12 px away is left out
    assert dist['pixels'][1].isnan() and dist['pixels_all'].item() == pytest.approx(5.0)
    summary = sampling_stats.summarize([record], (H, W))['encoder']
    assert summary['on_map'] == [[pytest.approx(0.6), 0.0]]


def test_top_queries_rank_pairs_like_the_head():
    logits = torch.tensor([[0.0, 3.0], [2.0, -1.0], [5.0, 1.0]])
    queries, labels, scores = sampling_stats.top_queries(logits, 3)
    assert queries.tolist() == [2, 0, 1] and labels.tolist() == [0, 1, 0]
    assert torch.equal(scores, torch.sigmoid(torch.tensor([5.0, 3.0, 2.0])))


@pytest.mark.slow
def test_tool_draws_and_compares_two_detectors(toy, tmp_path):
    classes = Config.fromfile(str(TOY)).metainfo['classes']
    ckpt = tmp_path / 'pit_s.pth'
    torch.save(dict(meta=dict(dataset_meta=dict(classes=classes)), state_dict=toy.state_dict()), ckpt)
    r50_cfg = ROOT / 'configs/toy/deformable_detr_r50_toy.py'
    r50 = tmp_path / 'r50.pth'
    torch.save(bm.build_detector(str(r50_cfg), None).state_dict(), r50)
    make_split(tmp_path / 'data', 'val', 3, seed=1)
    images = tmp_path / 'data/val2017'
    proc = subprocess.run(
        [
            sys.executable,
            'tools/analysis/visualize_sampling.py',
            str(TOY),
            str(ckpt),
            str(images),
            '--compare',
            str(r50_cfg),
            str(r50),
            '--out',
            str(tmp_path / 'out'),
            '--draw',
            '1',
            '--top',
            '2',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / 'out/sampling.json').read_text())
    assert list(report['results']) == ['pit_s', 'r50'] and report['meta']['num_images'] == 3
    for name in ('pit_s', 'r50'):
        for part, layers in (('encoder', 3), ('decoder', 3)):
            stats = report['results'][name][part]
            assert len(stats['level_mass']) == layers
            assert np.allclose(np.sum(stats['level_mass'], axis=1), 1.0, atol=1e-5)
            assert np.all((np.asarray(stats['on_map']) >= 0) & (np.asarray(stats['on_map']) <= 1))
            assert all(d > 0 for d in stats['distance_px_all'])
    first = sorted(images.iterdir())[0]
    for name in ('pit_s', 'r50'):
        picture = cv2.imread(str(tmp_path / f'out/{name}_{first.stem}.png'))
        assert picture is not None and picture.shape[1] > picture.shape[0]  # 3 panels side by side
    assert cv2.imread(str(tmp_path / 'out/sampling.png')) is not None
    # An unreadable image is named.
    (images / 'broken.png').write_bytes(b'not an image')
    proc = subprocess.run(
        [
            sys.executable,
            'tools/analysis/visualize_sampling.py',
            str(TOY),
            str(ckpt),
            str(images),
            '--out',
            str(tmp_path / 'out2'),
            '--draw',
            '0',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1 and f'cannot read image {images / "broken.png"}' in proc.stderr
