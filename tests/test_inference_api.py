"""mmdet's own inference API on pit-det's configs: DetInferencer, and init_detector with
inference_detector, on a real photograph (matplotlib's sample data), give the detections that
tools/demo.py gives."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matplotlib import cbook
from mmdet.datasets import CocoDataset
from weight_files import perturbed

from pit_det import benchmark as bm

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs/deformable_detr_pit_s.py'
PHOTO = Path(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))  # a 512 x 600 photograph


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the shipped PiT-S config in mmengine's layout: random weights moved off
    their initialisation, COCO class names in its meta."""
    model = perturbed(bm.build_detector(str(CONFIG)))
    path = tmp_path_factory.mktemp('api') / 'pit_s.pth'
    meta = dict(epoch=1, dataset_meta=dict(classes=CocoDataset.METAINFO['classes']))
    torch.save(dict(meta=meta, state_dict=model.state_dict()), path)
    return path


@pytest.mark.slow
def test_det_inferencer_and_init_detector_give_the_demos_detections(checkpoint, tmp_path):
    from mmdet.apis import DetInferencer, inference_detector, init_detector
    proc = subprocess.run([sys.executable, 'tools/demo.py', str(PHOTO), str(CONFIG), str(checkpoint),
                           '--out', str(tmp_path / 'demo'), '--score-thr', '0'],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = json.loads((tmp_path / 'demo' / 'detections.json').read_text())[0]['detections']
    assert len(expected) == 100  # test_cfg.max_per_img
    labels = torch.tensor([d['label'] for d in expected])
    boxes, scores = torch.tensor([d['bbox'] for d in expected]), torch.tensor([d['score'] for d in expected])

    # mmdet's own entry point: before pit-det's loader lookup it raised "LoadImageFromFile is not
    # found in the test pipeline".
    inferencer = DetInferencer(model=str(CONFIG), weights=str(checkpoint), device='cpu', show_progress=False)
    by_inferencer = inferencer(str(PHOTO), return_datasamples=True)['predictions'][0].pred_instances
    by_inference_detector = inference_detector(init_detector(str(CONFIG), str(checkpoint), device='cpu'),
                                               str(PHOTO)).pred_instances
    for pred in (by_inferencer, by_inference_detector):
        # demo.py rounds boxes to 0.01 px and scores to 1e-4 (half of each, plus float32 rounding).
        assert torch.equal(pred.labels, labels)
        assert (pred.bboxes - boxes).abs().max() <= 0.005 + 1e-4
        assert (pred.scores - scores).abs().max() <= 5e-5 + 1e-7
