"""mmdet's own inference API on pit-det's configs, as docs/training.md's "Python API" snippet uses it:
run as written in a fresh interpreter (pit-det reached only through the config's
``custom_imports``), on a real photograph (matplotlib's sample data), it gives the detections of
``model.predict`` on the photograph preprocessed here by hand (OpenCV resize, normalisation), not
through mmdet's pipeline or data preprocessor."""

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from matplotlib import cbook
from mmdet.datasets import CocoDataset
from mmdet.structures import DetDataSample
from weight_files import perturbed

from pit_det import benchmark as bm

ROOT = Path(__file__).resolve().parents[1]
CONFIG = 'configs/deformable_detr_pit_s.py'  # as the snippet names it, relative to the repository
PHOTO = Path(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))  # a 512 x 600 photograph
# The config's test pipeline and data preprocessor: Resize(scale=(666, 400), keep_ratio=True), then
# mmdet's ImageNet mean and std on RGB.
LONG, SHORT = 666, 400
MEAN, STD = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])


def documented_snippet() -> str:
    """docs/training.md's Python API block, as a user copies it."""
    readme = (ROOT / 'docs/training.md').read_text()
    section = readme.split('## Python API', 1)[1]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


@pytest.fixture(scope='module')
def detector(tmp_path_factory):
    """The shipped PiT-S config's detector with random weights moved off their initialisation, and
    its checkpoint in mmengine's layout with COCO class names in its meta."""
    model = perturbed(bm.build_detector(str(ROOT / CONFIG)))
    path = tmp_path_factory.mktemp('api') / 'pit_s.pth'
    meta = dict(epoch=1, dataset_meta=dict(classes=CocoDataset.METAINFO['classes']))
    torch.save(dict(meta=meta, state_dict=model.state_dict()), path)
    return model, path


def predict_by_hand(model, path: Path):
    """``model.predict`` on the image preprocessed without mmdet's pipeline: keep-ratio resize to at
    most 666 x 400 with OpenCV's bilinear filter, BGR to RGB, (x - mean) / std."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    scale = min(LONG / max(h, w), SHORT / min(h, w))
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    rgb = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)[..., ::-1].copy()
    x = (torch.from_numpy(rgb).permute(2, 0, 1).float() - MEAN[:, None, None]) / STD[:, None, None]
    sample = DetDataSample(
        metainfo=dict(
            ori_shape=(h, w),
            img_shape=(new_h, new_w),
            batch_input_shape=(new_h, new_w),
            scale_factor=(new_w / w, new_h / h),
        )
    )
    with torch.no_grad():
        return model.predict(x[None], [sample], rescale=True)[0].pred_instances


@pytest.mark.slow
def test_documented_snippet_in_a_fresh_interpreter_gives_predict_on_a_hand_preprocessed_photo(detector):
    model, checkpoint = detector
    snippet = documented_snippet().replace('CHECKPOINT', repr(str(checkpoint))).replace("'photo.jpg'", repr(str(PHOTO)))
    report = (
        'import json, sys\n'
        "by_inferencer = result['predictions'][0]\n"
        "print(json.dumps(dict(pit_det_imported='pit_det' in sys.modules, inferencer=by_inferencer,\n"
        "    detector={k: pred.get(k).tolist() for k in ('labels', 'scores', 'bboxes')})))\n"
    )
    proc = subprocess.run(
        [sys.executable, '-c', snippet + report], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got['pit_det_imported']  # by the config's custom_imports: the snippet never imports it

    expected = predict_by_hand(model, PHOTO)
    assert len(expected.labels) == 100  # test_cfg.max_per_img
    for name, pred in got.items():
        if name == 'pit_det_imported':
            continue
        # The same fp32 operations on the same pixels: measured bit-identical (2-core AMD Zen 3).
        assert pred['labels'] == expected.labels.tolist(), name
        assert torch.equal(torch.tensor(pred['bboxes']), expected.bboxes), name
        assert torch.equal(torch.tensor(pred['scores']), expected.scores), name
