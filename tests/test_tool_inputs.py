"""Bad inputs the tools must name in one line before any work (never a traceback, never after minutes
of work), and outputs that must never replace one of the tool's own inputs. Each tool runs in this
process as its ``__main__`` does (``run_tool(main)``), with the arguments a user would give."""

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest
import torch
from mmengine.config import Config
from onnx import TensorProto, helper
from tool_modules import load_tool
from tool_modules import run_in_process as run
from weight_files import toy_checkpoint

from pit_det.analysis.table5 import read_results
from pit_det.checkpoint import CheckpointError, read_state_dict, resumable_meta
from pit_det.config import read_config
from pit_det.datasets.check import check_coco
from pit_det.errors import PitDetError
from pit_det_deploy import DeployError, OnnxDetector
from pit_det_deploy.errors import run_tool
from pit_det_deploy.outputs import output_file, output_folder, picture_paths
from pit_det_deploy.quantize import model_info

ROOT = Path(__file__).resolve().parents[1]
TOY = 'configs/toy/deformable_detr_pit_s_toy.py'


def images(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.full((8, 8, 3), 40 * i, np.uint8))
    return {name: (folder / name).read_bytes() for name in names}


def test_output_paths_are_checked_before_any_work(tmp_path):
    """A folder where a file goes, a file where a folder goes, a path under a file, an output that is
    an input: each a DeployError naming the flag and the path."""
    (tmp_path / 'file').write_text('x')
    (tmp_path / 'folder').mkdir()
    file, folder = tmp_path / 'file', tmp_path / 'folder'
    for call, message in (
        (lambda: output_file(folder), f'--out {folder} is a folder: name the file to write'),
        (lambda: output_file(file / 'x.onnx'), f'--out {file / "x.onnx"}: {file} is a file, not a folder'),
        (
            lambda: output_file(tmp_path / 'x' / '..' / 'file', [file]),
            f'--out {tmp_path}/x/../file is the input {file}',
        ),
        (lambda: output_folder(file, flag='--work-dir'), f'--work-dir {file} is a file: name a folder'),
        (lambda: output_folder(file / 'sub'), f'--out {file / "sub"}: {file} is a file, not a folder'),
    ):
        with pytest.raises(DeployError) as err:
            call()
        assert str(err.value).startswith(message), (str(err.value), message)
    assert output_file(tmp_path / 'new' / 'x.onnx', [tmp_path / 'file']) == tmp_path / 'new' / 'x.onnx'


def test_pictures_never_replace_the_images(tmp_path):
    """The demos' pictures are <name>.png: drawn into the images' own folder they would replace the
    PNGs (or, beside JPEGs, be taken for images by the next run, and detections.json replace a file
    of the user's), and a.jpg and a.png would both become a.png."""
    images(tmp_path / 'in', 'a.png', 'b.jpg')
    files = sorted((tmp_path / 'in').iterdir())
    for chosen in (files, files[1:]):  # with a PNG among them, and JPEGs only
        with pytest.raises(DeployError, match=rf'--out {tmp_path / "in"} holds the images \({chosen[0]} among'):
            picture_paths(chosen, tmp_path / 'in')
    assert picture_paths(files, tmp_path / 'out') == [tmp_path / 'out/a.png', tmp_path / 'out/b.png']
    images(tmp_path / 'in', 'a.jpg')
    with pytest.raises(DeployError, match=r'a\.jpg and .*a\.png would both be drawn to .*out/a\.png'):
        picture_paths(sorted((tmp_path / 'in').iterdir()), tmp_path / 'out')


@pytest.mark.parametrize('tool', ['tools/deploy/onnx_demo.py', 'tools/demo.py'])
def test_demos_refuse_to_draw_over_their_images(tool, tmp_path, monkeypatch, capsys):
    before = images(tmp_path / 'in', 'a.png', 'b.png')
    model = tmp_path / 'model.onnx'
    model.write_bytes(b'not read: refused first')
    argv = [tmp_path / 'in', model, '--out', tmp_path / 'in']
    if tool == 'tools/demo.py':
        argv = [tmp_path / 'in', TOY, model, '--out', tmp_path / 'in']
    code, err = run(tool, argv, monkeypatch, capsys)
    assert code == 1 and err.startswith(f'error: --out {tmp_path / "in"} holds the images'), err
    assert {name: (tmp_path / 'in' / name).read_bytes() for name in before} == before


def test_export_refuses_what_would_destroy_an_input_or_fail_late(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / 'epoch_1.pth'
    checkpoint.write_bytes(b'a trained checkpoint')
    tool = 'tools/deploy/export.py'
    for extra, message in (
        (['--out', checkpoint], f'error: --out {checkpoint} is the input {checkpoint}'),
        (['--out', tmp_path / 'm.onnx', '--shape', '0', '0'], 'error: --shape 0 0: both sides at least 1 pixel'),
        (['--out', tmp_path / 'm.onnx', '--dynamic', '--min-size', '-5'], 'error: --min-size -5: from 1 to 4096'),
        (['--out', tmp_path], f'error: --out {tmp_path} is a folder'),
    ):
        code, err = run(tool, [TOY, checkpoint, *extra], monkeypatch, capsys)
        assert code == 1 and err.startswith(message), (extra, err)
    assert checkpoint.read_bytes() == b'a trained checkpoint' and not (tmp_path / 'm.onnx').exists()


def test_onnx_eval_refuses_to_write_over_its_inputs_and_names_a_broken_annotation_file(tmp_path, monkeypatch, capsys):
    model, ann = tmp_path / 'm.onnx', tmp_path / 'val.json'
    model.write_bytes(b'a model')
    (tmp_path / 'img').mkdir()
    tool = 'tools/deploy/onnx_eval.py'
    for out in (model, ann):
        ann.write_text('{}')
        code, err = run(tool, [model, '--ann', ann, '--img-dir', tmp_path / 'img', '--out', out], monkeypatch, capsys)
        assert code == 1 and err.startswith(f'error: --out {out} is the input'), err
    assert model.read_bytes() == b'a model' and ann.read_text() == '{}'
    for text, what in (
        ('{"images": [', 'JSONDecodeError'),
        ('[]', 'AssertionError'),
        ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', "KeyError: 'file_name'"),
    ):
        ann.write_text(text)
        code, err = run(tool, [model, '--ann', ann, '--img-dir', tmp_path / 'img'], monkeypatch, capsys)
        assert code == 1 and err.startswith(f'error: {ann}: not a COCO detection json ({what}'), err
        assert 'validate_dataset.py' in err and 'Traceback' not in err
    ann.write_text(json.dumps(dict(images=[], annotations=[], categories=[dict(id=1, name='a')])))
    code, err = run(tool, [model, '--ann', ann, '--img-dir', tmp_path / 'img'], monkeypatch, capsys)
    assert code == 1 and err == f'error: {ann}: no images: nothing to score AP against\n'  # not AP -1
    mixed = dict(
        images=[
            dict(id=1, file_name='a.png', width=8, height=8),
            dict(id='img-2', file_name='b.png', width=8, height=8),
        ],
        annotations=[dict(id=1, image_id='img-2', category_id=1, bbox=[1, 1, 4, 4], area=16, iscrowd=0)],
        categories=[dict(id=1, name='a')],
    )
    ann.write_text(json.dumps(mixed))
    code, err = run(tool, [model, '--ann', ann, '--img-dir', tmp_path / 'img'], monkeypatch, capsys)
    assert code == 1 and err == (
        f'error: {ann}: image ids mix int and str, which COCO evaluation cannot sort; '
        'give every image the same kind of id\n'
    )


def test_onnx_eval_scores_a_set_with_string_image_ids_as_with_numbers(tmp_path, monkeypatch, capsys):
    """pycocotools' ``loadImgs`` takes a string id for a list of one-letter ids, which stopped
    onnx_eval on every file with string ids. A stand-in model that returns each image's true boxes
    scores AP 1 on the same set with its ids as numbers and as strings."""
    truth = {0: [[2.0, 3.0, 12.0, 15.0]], 1: [[5.0, 5.0, 20.0, 25.0], [1.0, 1.0, 6.0, 9.0]]}  # x1, y1, x2, y2

    class Detector:  # the image's first pixel says which image it is
        classes, info = ['a'], {}

        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, image):
            boxes = np.array(truth[int(image[0, 0, 0]) // 100], np.float32)
            return boxes, np.full(len(boxes), 0.9, np.float32), np.zeros(len(boxes), np.int64)

    monkeypatch.setattr('pit_det_deploy.detector.OnnxDetector', Detector)
    (tmp_path / 'img').mkdir()
    for i in truth:
        cv2.imwrite(str(tmp_path / 'img' / f'{i}.png'), np.full((32, 32, 3), 100 * i, np.uint8))
    (tmp_path / 'm.onnx').write_bytes(b'')
    for kind, image_id in (('int', lambda i: i + 1), ('str', lambda i: f'img-{i + 1}')):
        boxes = [(i, box) for i in truth for box in truth[i]]
        coco = dict(
            images=[dict(id=image_id(i), file_name=f'{i}.png', width=32, height=32) for i in truth],
            annotations=[
                dict(id=n, image_id=image_id(i), category_id=1, bbox=[x1, y1, x2 - x1, y2 - y1], area=1, iscrowd=0)
                for n, (i, (x1, y1, x2, y2)) in enumerate(boxes, start=1)
            ],
            categories=[dict(id=1, name='a')],
        )
        ann, out = tmp_path / f'{kind}.json', tmp_path / f'{kind}_metrics.json'
        ann.write_text(json.dumps(coco))
        argv = [tmp_path / 'm.onnx', '--ann', ann, '--img-dir', tmp_path / 'img', '--out', out]
        code, err = run('tools/deploy/onnx_eval.py', argv, monkeypatch, capsys)
        assert code == 0, err
        metrics = json.loads(out.read_text())
        assert metrics['bbox_mAP'] == 1.0 and metrics['images'] == 2, kind


# Annotation files on which COCOeval gives AP -1 for a detector of class 'a' on the image with id 1:
# no boxes (a test-dev file), or only boxes COCOeval leaves out.
BOX = dict(id=1, image_id=1, category_id=1, bbox=[1, 1, 4, 4], area=16, iscrowd=0)  # of class 'a' on image 1
NOTHING_TO_SCORE = {
    'no boxes': [],
    'crowds only': [dict(BOX, iscrowd=1)],
    'other classes only': [dict(BOX, category_id=2)],
    'boxes off its images only': [dict(BOX, image_id=2)],
    "areas outside COCOeval's range only": [dict(BOX, area=-1), dict(BOX, id=2, area=1.5e10)],
}


@pytest.mark.parametrize('case', NOTHING_TO_SCORE)
def test_onnx_eval_refuses_a_file_with_nothing_to_score_before_inference(tmp_path, monkeypatch, capsys, case):
    """And scores the model's classes only, as mmdet's CocoMetric does: COCOeval's default, every
    category of the file, averaged in class 'b' at AP 0 ('other classes only')."""
    calls = []

    class Detector:  # a stand-in model that records each image it is given, and finds BOX
        classes, info = ['a'], {}

        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, image):
            calls.append(image.shape)
            return np.array([[1.0, 1.0, 5.0, 5.0]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int64)

    monkeypatch.setattr('pit_det_deploy.detector.OnnxDetector', Detector)
    images(tmp_path / 'img', 'a.png')
    (tmp_path / 'm.onnx').write_bytes(b'')
    ann, out = tmp_path / 'val.json', tmp_path / 'metrics.json'
    coco = dict(
        images=[dict(id=1, file_name='a.png', width=8, height=8)],
        annotations=NOTHING_TO_SCORE[case],
        categories=[dict(id=1, name='a'), dict(id=2, name='b')],
    )
    ann.write_text(json.dumps(coco))
    argv = [tmp_path / 'm.onnx', '--ann', ann, '--img-dir', tmp_path / 'img', '--out', out]
    code, err = run('tools/deploy/onnx_eval.py', argv, monkeypatch, capsys)
    assert code == 1 and err == (
        f"error: {ann}: no boxes of the model's classes (other than crowds) on its images: nothing to score AP "
        'against (COCOeval gives AP -1)\n'
    )
    assert calls == [] and not out.exists()
    # An entry without a field COCOeval reads: named before inference, not after.
    ann.write_text(json.dumps(dict(coco, annotations=[{k: v for k, v in BOX.items() if k != 'iscrowd'}])))
    code, err = run('tools/deploy/onnx_eval.py', argv, monkeypatch, capsys)
    assert code == 1 and err.startswith(f"error: {ann}: not a COCO detection json (KeyError: 'iscrowd')"), err
    assert calls == []
    # With BOX added the file is scored: AP 1, whatever else it holds. Area 0 is in COCOeval's range.
    ann.write_text(json.dumps(dict(coco, annotations=[*coco['annotations'], dict(BOX, id=9, area=0)])))
    code, err = run('tools/deploy/onnx_eval.py', argv, monkeypatch, capsys)
    assert code == 0 and calls == [(8, 8, 3)], err
    assert json.loads(out.read_text())['bbox_mAP'] == pytest.approx(1.0, abs=1e-12)  # not 0.5, with class 'b'


def test_the_metrics_to_score_are_read_as_mmengine_builds_them(tmp_path):
    """One metric, a list, or a dict with ``metrics`` (mmengine 0.10.7's build_evaluator): each
    COCO metric checked, the file without boxes named; an entry COCOeval cannot read named too."""
    from mmdet.evaluation.metrics import CocoMetric

    from pit_det.datasets.check import require_boxes_to_score
    from pit_det.errors import DatasetError

    files = {}
    for name, boxes in (
        ('scored', [BOX]),
        ('empty', []),
        ('no_iscrowd', [{k: v for k, v in BOX.items() if k != 'iscrowd'}]),
    ):
        files[name] = tmp_path / f'{name}.json'
        files[name].write_text(
            json.dumps(
                dict(
                    images=[dict(id=1, file_name='a.png', width=8, height=8)],
                    annotations=boxes,
                    categories=[dict(id=1, name='a')],
                )
            )
        )

    def metrics(*names):
        built = [CocoMetric(ann_file=str(files[n])) for n in names]
        for metric in built:
            metric.dataset_meta = dict(classes=('a',))
        return SimpleNamespace(metrics=built), [dict(type='CocoMetric', ann_file=str(files[n])) for n in names]

    evaluator, cfgs = metrics('scored', 'empty')
    for form, key in ((cfgs, 'test_evaluator.1'), (dict(type='Evaluator', metrics=cfgs), 'test_evaluator.metrics.1')):
        with pytest.raises(DatasetError, match=f"^{files['empty']}: no boxes of the config's classes") as error:
            require_boxes_to_score(evaluator, form)
        # The submission's option for this form (mmengine's --cfg-options takes list indices).
        assert str(error.value).endswith(f'For a test-dev submission: --cfg-options {key}.format_only=True')
    evaluator, cfgs = metrics('scored')
    require_boxes_to_score(evaluator, cfgs[0])  # one metric with boxes to score: nothing raised
    evaluator, cfgs = metrics('no_iscrowd')
    with pytest.raises(DatasetError, match=f'^{files["no_iscrowd"]}: COCO evaluation cannot read its annotations'):
        require_boxes_to_score(evaluator, cfgs[0])


def test_an_empty_image_list_is_an_error_of_the_checker(tmp_path):
    ann = tmp_path / 'empty.json'
    ann.write_text(json.dumps(dict(images=[], annotations=[], categories=[dict(id=1, name='a')])))
    report, _ = check_coco(ann, tmp_path)
    assert report.num_errors == 1 and report.counts['no_images'] == 1


def test_an_option_inside_a_key_the_config_sets_to_none_names_the_fix(tmp_path, monkeypatch, capsys):
    """The documented ``model.backbone.init_cfg.checkpoint=PATH`` on a toy config (init_cfg None):
    mmengine's TypeError is one line naming the option and how to set the whole entry."""
    argv = [TOY, '--work-dir', tmp_path / 'work', '--cfg-options', 'model.backbone.init_cfg.checkpoint=x.pth']
    code, err = run('tools/train.py', argv, monkeypatch, capsys)
    assert code == 1 and err.count('\n') == 1, err[-2000:]
    assert err.startswith(
        f'error: --cfg-options: model.backbone.init_cfg.checkpoint: {TOY} sets model.backbone.init_cfg to None'
    )
    assert "init_cfg=dict(type='Pretrained', checkpoint=PATH)" in err


def test_auto_scale_lr_on_a_config_without_its_base_batch_names_the_entry(tmp_path, monkeypatch, capsys):
    """mmdet's configs set ``auto_scale_lr``; a user's config may not: mmengine stopped at an AttributeError."""
    config = tmp_path / 'no_auto_scale_lr.py'
    config.write_text(f"_base_ = '{ROOT / TOY}'\nauto_scale_lr = None\n")
    code, err = run('tools/train.py', [config, '--work-dir', tmp_path / 'work', '--auto-scale-lr'], monkeypatch, capsys)
    assert code == 1 and err.startswith(
        f'error: --auto-scale-lr: {config} has no auto_scale_lr = dict(base_batch_size=N)'
    )
    assert not (tmp_path / 'work').exists()


def test_training_zero_epochs_is_refused(tmp_path, monkeypatch, capsys):
    argv = [TOY, '--work-dir', tmp_path / 'work', '--cfg-options', 'train_cfg.max_epochs=0']
    code, err = run('tools/train.py', argv, monkeypatch, capsys)
    assert code == 1 and err.startswith('error: train_cfg.max_epochs=0: train at least one epoch'), err


def test_a_strip_is_drawn_and_a_pipeline_that_cannot_take_it_is_named(tmp_path, monkeypatch, capsys):
    """A 4000 x 2 image: the shipped test pipeline (SafeResize) takes it; with mmdet's Resize, which
    rounds its height to 0 pixels at the toy scale (128 x 128, keep ratio), OpenCV stops, and the demo
    names the image, its size and the fix."""
    checkpoint = toy_checkpoint(tmp_path)
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'strip.png'), np.full((2, 4000, 3), 90, np.uint8))
    argv = [tmp_path / 'in', TOY, checkpoint, '--out', tmp_path / 'out', '--score-thr', '0']
    code, err = run('tools/demo.py', argv, monkeypatch, capsys)
    assert code == 0 and cv2.imread(str(tmp_path / 'out' / 'strip.png')).shape == (2, 4000, 3), err[-2000:]
    # A checkpoint without meta: the config's class names (mmdet's init_detector gives COCO's).
    (record,) = json.loads((tmp_path / 'out' / 'detections.json').read_text())
    assert record['detections'] and {d['name'] for d in record['detections']} <= {'rectangle', 'ellipse', 'triangle'}

    mmdet_resize = tmp_path / 'mmdet_resize.py'  # the toy config as written with mmdet's own Resize
    text = (ROOT / TOY).read_text().replace("type='SafeResize'", "type='Resize'")
    mmdet_resize.write_text(text.replace("_base_ = '../", f"_base_ = '{ROOT}/configs/"))
    code, err = run(
        'tools/demo.py', [tmp_path / 'in', mmdet_resize, checkpoint, '--out', tmp_path / 'out2'], monkeypatch, capsys
    )
    assert code == 1, err[-2000:]
    assert f'error: {tmp_path / "in" / "strip.png"}: the test pipeline cannot take this 4000 x 2 image' in err
    assert "use pit-det's SafeResize" in err


def test_string_image_ids_evaluate_as_their_numbers_do(tmp_path, monkeypatch, capsys):
    """Some exporters write image ids as strings; pycocotools and mmdet take them. The same set
    with its ids as strings gives the same metrics as with numbers."""
    from pit_det.datasets.toy import make_split

    torch.manual_seed(0)
    checkpoint = toy_checkpoint(tmp_path)
    metrics = {}
    for kind in ('int', 'str'):
        root = tmp_path / kind
        coco = make_split(root, 'val', 3, seed=4)
        if kind == 'str':
            for img in coco['images']:
                img['id'] = f'img-{img["id"]}'
            for ann in coco['annotations']:
                ann['image_id'] = f'img-{ann["image_id"]}'
        (root / 'annotations' / 'instances_val2017.json').write_text(json.dumps(coco))
        argv = [TOY, checkpoint, '--data-root', root, '--work-dir', root / 'work']
        code, err = run('tools/test.py', argv, monkeypatch, capsys)
        assert code == 0, err[-2000:]
        metrics[kind] = json.loads((root / 'work' / 'metrics.json').read_text())
        detections = json.loads((root / 'work' / 'detections.bbox.json').read_text())
        assert {d['image_id'] for d in detections} == {img['id'] for img in coco['images']}
    assert metrics['str'] == metrics['int'] and metrics['int']['coco/bbox_mAP'] >= 0


@pytest.mark.parametrize('kind', ['missing', 'text'])
def test_a_checkpoint_that_cannot_be_read_is_named_before_the_runner_is_built(tmp_path, monkeypatch, capsys, kind):
    checkpoint = tmp_path / 'epoch_12.pth'
    if kind == 'text':
        checkpoint.write_text('epoch_12.pth')  # e.g. last_checkpoint's content given as the file
    built = []
    argv = [TOY, checkpoint, '--work-dir', tmp_path / 'work']
    runner = SimpleNamespace(from_cfg=lambda cfg: built.append(cfg))
    code, err = run('tools/test.py', argv, monkeypatch, capsys, Runner=runner)
    assert code == 1 and built == [], err[-2000:]
    assert (
        err
        == {
            'missing': f'error: checkpoint file not found: {checkpoint}\n',
            'text': f'error: {checkpoint}: not a readable PyTorch checkpoint (pop from empty list)\n',
        }[kind]
    )


def test_training_with_nothing_to_score_in_validation_stops_before_the_first_iteration(tmp_path, monkeypatch, capsys):
    """A val file whose boxes are all crowds (or none): tools/train.py trained and logged AP -1 at every
    validation. It stops before the first iteration, naming the file; the option it prints trains."""
    from mmengine.runner import EpochBasedTrainLoop

    from pit_det.datasets.toy import make_split

    make_split(tmp_path, 'train', 4, seed=0)
    coco = make_split(tmp_path, 'val', 2, seed=1)
    ann = tmp_path / 'annotations' / 'instances_val2017.json'
    ann.write_text(json.dumps(dict(coco, annotations=[dict(a, iscrowd=1) for a in coco['annotations']])))
    argv = [TOY, '--data-root', tmp_path, '--work-dir', tmp_path / 'work', '--cfg-options', 'train_cfg.max_epochs=1']
    trained = []
    monkeypatch.setattr(EpochBasedTrainLoop, 'run', lambda *a: trained.append(1))
    code, err = run('tools/train.py', argv, monkeypatch, capsys)
    assert code == 1 and trained == [], err[-2000:]
    assert err == (
        f"error: {ann}: no boxes of the config's classes (other than crowds) on its images: COCO evaluation would "
        "give AP -1 at every validation during training. Give val_evaluator's ann_file boxes to score, or train "
        'without validation: --cfg-options val_cfg=None val_dataloader=None val_evaluator=None\n'
    ), err[-2000:]
    monkeypatch.undo()
    fix = err.split('--cfg-options ')[1].split()
    code, err = run('tools/train.py', [*argv, '--cfg-options', *fix], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()


# Boxes of other classes only: the dataset names them before (test_annotation_files.py).
@pytest.mark.parametrize('case', ['no boxes', 'crowds only'])
def test_scoring_a_file_with_nothing_to_score_is_refused_before_inference(tmp_path, monkeypatch, capsys, case):
    """pycocotools gives AP -1 where no ground-truth box is of a class scored; tools/test.py wrote
    those and exited 0, after a whole pass over the images. A test-dev file with format_only runs."""
    from pit_det.datasets.toy import make_split

    coco = make_split(tmp_path, 'val', 2, seed=4)
    boxes = {'no boxes': [], 'crowds only': [dict(a, iscrowd=1) for a in coco['annotations']]}[case]
    ann = tmp_path / 'annotations' / 'instances_val2017.json'
    ann.write_text(json.dumps(dict(coco, annotations=boxes)))
    checkpoint = toy_checkpoint(tmp_path)
    argv = [TOY, checkpoint, '--data-root', tmp_path, '--work-dir', tmp_path / 'work']
    predicted = []
    monkeypatch.setattr('pit_det.models.deformable_detr.PitDeformableDETR.predict', lambda *a, **k: predicted.append(1))
    code, err = run('tools/test.py', argv, monkeypatch, capsys)
    assert code == 1, err[-2000:]
    assert err == (
        f"error: {ann}: no boxes of the config's classes (other than crowds) on its images: COCO evaluation "
        'would give AP -1 after running on every image. For a test-dev submission: --cfg-options '
        'test_evaluator.format_only=True\n'
    ), err[-2000:]
    assert predicted == [] and not (tmp_path / 'work' / 'metrics.json').exists()
    if case == 'no boxes':
        monkeypatch.undo()
        # The submission the message names: detections written, nothing scored.
        code, err = run(
            'tools/test.py', [*argv, '--cfg-options', 'test_evaluator.format_only=True'], monkeypatch, capsys
        )
        assert code == 0, err[-2000:]
        detections = tmp_path / 'work' / 'detections.bbox.json'
        assert len(json.loads(detections.read_text())) == 2 * 100
    else:
        monkeypatch.undo()
        # A metric without ann_file scores the dataset's own boxes, which the check before inference
        # cannot see: AP -1 after the run is refused, the detections kept.
        detections = tmp_path / 'work' / 'detections.bbox.json'
        options = [
            'test_evaluator.ann_file=None',
            'test_dataloader.dataset.pipeline.4.meta_keys=(img_id,img_path,ori_shape,img_shape,scale_factor,instances)',
        ]
        code, err = run('tools/test.py', [*argv, '--cfg-options', *options], monkeypatch, capsys)
        assert code == 1 and err.endswith(
            "error: no boxes of the config's classes to score (COCO AP -1 from test_evaluator); the detections "
            f'are in {detections}. For a test-dev submission: --cfg-options test_evaluator.format_only=True\n'
        ), err[-2000:]
        assert len(json.loads(detections.read_text())) == 2 * 100


def test_an_evaluator_of_several_metrics_writes_each_coco_metrics_detections(tmp_path, monkeypatch, capsys):
    """tools/test.py with ``test_evaluator`` as a list (mmengine's other form) ran into an
    AttributeError: each COCO metric is pointed at the data root and writes its own detections, the
    first where one metric writes them; the metrics are those of one metric."""
    from pit_det.datasets.toy import make_split

    make_split(tmp_path, 'val', 2, seed=4)
    checkpoint = toy_checkpoint(tmp_path)
    cfg = Config.fromfile(TOY)
    cfg.test_evaluator = [cfg.test_evaluator, dict(cfg.test_evaluator, prefix='again')]  # mmengine: one name each
    cfg.dump(str(tmp_path / 'listed.py'))
    metrics = {}
    for name, config in (('one', TOY), ('listed', tmp_path / 'listed.py')):
        argv = [config, checkpoint, '--data-root', tmp_path, '--work-dir', tmp_path / name]
        code, err = run('tools/test.py', argv, monkeypatch, capsys)
        assert code == 0, err[-2000:]
        metrics[name] = json.loads((tmp_path / name / 'metrics.json').read_text())
    assert sorted(p.name for p in (tmp_path / 'listed').glob('detections*.bbox.json')) == [
        'detections.bbox.json',
        'detections_2.bbox.json',
    ]
    detections = [(tmp_path / name / 'detections.bbox.json').read_text() for name in ('one', 'listed')]
    assert detections[0] == detections[1] == (tmp_path / 'listed' / 'detections_2.bbox.json').read_text()
    again = {k.replace('again/', 'coco/'): v for k, v in metrics['listed'].items() if k.startswith('again/')}
    assert again == metrics['one'] and metrics['listed'].items() >= metrics['one'].items()
    assert metrics['one']['coco/bbox_mAP'] >= 0
    # The submission option the refusals name for a metric of a list (submission_hint) takes effect:
    # that metric writes its detections and scores nothing.
    argv = [tmp_path / 'listed.py', checkpoint, '--data-root', tmp_path, '--work-dir', tmp_path / 'submit']
    code, err = run('tools/test.py', [*argv, '--cfg-options', 'test_evaluator.1.format_only=True'], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert json.loads((tmp_path / 'submit' / 'metrics.json').read_text()) == metrics['one']
    assert (tmp_path / 'submit' / 'detections_2.bbox.json').read_text() == detections[0]


def test_the_demo_draws_every_readable_image_and_names_the_others(tmp_path, monkeypatch, capsys):
    """A zero-byte file among the images stopped the demo there, with no detections.json; a TIFF
    was no image at all."""

    checkpoint = toy_checkpoint(tmp_path)
    images(tmp_path / 'in', 'a.png', 'c.tif')
    (tmp_path / 'in' / 'b.png').write_bytes(b'')
    code, err = run('tools/demo.py', [tmp_path / 'in', TOY, checkpoint, '--out', tmp_path / 'out'], monkeypatch, capsys)
    assert (
        code == 1
        and (
            f'\nerror: cannot read 1 of 3 images ({tmp_path / "in" / "b.png"}): skipped; the others are drawn and in '
            f'{tmp_path / "out" / "detections.json"}\n'
        )
        in err
    ), err[-2000:]
    records = json.loads((tmp_path / 'out' / 'detections.json').read_text())
    assert [Path(r['file']).name for r in records] == ['a.png', 'c.tif']
    assert sorted(p.name for p in (tmp_path / 'out').glob('*.png')) == ['a.png', 'c.png']


def test_an_opset_newer_than_the_exporter_writes_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    from torch.onnx._constants import ONNX_MAX_OPSET

    from pit_det.export.to_onnx import max_opset

    assert 18 <= max_opset() <= ONNX_MAX_OPSET  # the default, up to what torch's exporter writes

    checkpoint = toy_checkpoint(tmp_path)
    argv = [TOY, checkpoint, '--out', tmp_path / 'x.onnx', '--opset', str(max_opset() + 1)]
    code, err = run('tools/deploy/export.py', argv, monkeypatch, capsys)
    assert code == 1 and err == (
        f"error: opset {max_opset() + 1} is not supported: torch {torch.__version__}'s exporter writes up to "
        f'{max_opset()}\n'
    )
    assert not (tmp_path / 'x.onnx').exists()


def test_a_checkpoint_of_another_detector_is_refused_by_test_and_demo(tmp_path, monkeypatch, capsys):
    """mmengine's load_from and mmdet's init_detector load what fits and log the rest: a ResNet-50
    checkpoint would be evaluated or drawn with PiT-S's random weights. Refused, naming what differs."""
    r50 = toy_checkpoint(tmp_path, 'configs/toy/deformable_detr_r50_toy.py', 'r50.pth')
    images(tmp_path / 'in', 'a.png')
    for tool, argv in (
        ('tools/test.py', [TOY, r50, '--work-dir', tmp_path / 'work']),
        ('tools/demo.py', [tmp_path / 'in', TOY, r50, '--out', tmp_path / 'out']),
    ):
        code, err = run(tool, argv, monkeypatch, capsys)
        assert code == 1 and f'error: {r50} does not match {TOY}' in err and 'backbone.' in err, (tool, err[-2000:])
    assert not (tmp_path / 'out' / 'a.png').exists()


def test_resume_from_a_weights_only_checkpoint_names_the_fix(tmp_path):
    """mmengine stopped at KeyError: 'epoch'; a checkpoint without what mmengine's resume reads (the
    message hub, epoch and iteration; no optimizer needed) is refused, with the option that starts a
    new run from its weights."""
    weights = tmp_path / 'weights.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}}, weights)
    with pytest.raises(
        CheckpointError,
        match=rf'--resume {weights}: not a training checkpoint \(no message_hub, meta.epoch, meta.iter\)',
    ):
        resumable_meta(str(weights))
    training = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {}, 'message_hub': {}, 'meta': {'epoch': 1, 'iter': 4, 'seed': 7}}, training)
    assert resumable_meta(str(training))['seed'] == 7


def test_resume_is_checked_before_the_runner_starts(tmp_path, monkeypatch, capsys):
    weights = tmp_path / 'weights.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}}, weights)
    code, err = run('tools/train.py', [TOY, '--resume', weights, '--work-dir', tmp_path / 'work'], monkeypatch, capsys)
    assert code == 1 and err.startswith(f'error: --resume {weights}: not a training checkpoint'), err
    assert f'--cfg-options load_from={weights}' in err


def test_configs_and_config_options_that_cannot_be_read(tmp_path, monkeypatch, capsys):
    broken = tmp_path / 'broken.py'
    broken.write_text("model = dict(type='DeformableDETR'\n")
    with pytest.raises(PitDetError, match=rf'^{broken}: not a Python config: .*\(line '):
        read_config(str(broken))
    with pytest.raises(FileNotFoundError, match='no such config file'):
        read_config(str(tmp_path / 'missing.py'))
    tool = load_tool('tools/deploy/export.py')
    with pytest.raises(SystemExit) as exit_:
        tool.parse_args([TOY, 'x.pth', '--out', 'x.onnx', '--cfg-options', 'model.num_queries'])
    assert exit_.value.code == 2
    assert '--cfg-options model.num_queries: write KEY=VALUE' in capsys.readouterr().err


def test_a_broken_safetensors_file_is_named(tmp_path):
    path = tmp_path / 'model.safetensors'
    path.write_bytes(b'\xff' * 64)
    with pytest.raises(CheckpointError, match=rf'^{path}: not a readable safetensors file'):
        read_state_dict(path)


@pytest.mark.parametrize(
    'extra,message',
    [
        (['--iters', '0'], '--iters 0: at least 1'),
        (['--threads', '-2'], '--threads -2: at least 1'),
        (['--shape', '0', '64'], '--shape 0 64: both sides at least 1 pixel'),
        (['--plot', 'PLOT.json'], '--plot PLOT.json: name a .png'),
        (['configs/missing.py'], 'no such config: configs/missing.py'),
    ],
)
def test_benchmark_arguments_are_checked_before_any_timing(extra, message, capsys):
    """A bad argument after the first detector's timing used to end the run without its JSON."""
    tool = load_tool('tools/analysis/benchmark.py')
    with pytest.raises(SystemExit) as exit_:
        tool.parse_args([TOY, *extra])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_table5_names_a_broken_metrics_or_benchmark_file(tmp_path):
    run_dir = tmp_path / 'pit_s'
    run_dir.mkdir()
    metrics = run_dir / 'metrics.json'
    for text, message in (
        ('{"coco/bbox_mAP": 0.', 'not a JSON file'),
        ('[1, 2]', 'not a JSON object'),
        ('{"coco/bbox_mAP": "abc", "coco/bbox_mAP_50": 0.5, "coco/bbox_mAP_75": 0.3}', "is 'abc', not a number"),
    ):
        metrics.write_text(text)
        with pytest.raises(PitDetError, match=message):
            read_results({'pit_s': str(run_dir)}, paper=False)
    metrics.write_text(json.dumps({'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50': 0.5, 'coco/bbox_mAP_75': 0.3}))
    bench = tmp_path / 'bench.json'
    bench.write_text('{"rows": []}')
    with pytest.raises(PitDetError, match='no results and environment: not a tools/analysis/benchmark.py JSON'):
        read_results({'pit_s': str(run_dir)}, benchmark=str(bench), paper=False)


def model_with(tmp_path, metadata, outputs=3):
    """A one-node ONNX model (Identity outputs) carrying ``metadata`` as its pit_det entry."""
    names = ['boxes', 'scores', 'labels'][:outputs]
    graph = helper.make_graph(
        [helper.make_node('Identity', ['image'], [name]) for name in names],
        'g',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 16, 16]) for name in names],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    model.ir_version = 9
    helper.set_model_props(model, {'pit_det': metadata})
    path = tmp_path / 'model.onnx'
    onnx.save(model, path)
    return path


def test_a_model_with_broken_pit_det_metadata_is_named(tmp_path):
    preprocess = dict(resize_scale=[16, 16], mean=[0, 0, 0], std=[1, 1, 1], bgr_to_rgb=False)
    good = dict(classes=['a'], preprocess=preprocess, input_shape=[16, 16], dynamic=False, msda='grid_sample')
    for metadata, message in (
        ('{"classes": [', 'its pit_det metadata is no JSON'),
        ('[1]', 'its pit_det metadata is no JSON object'),
        (json.dumps(dict(good, dynamic=True)), "its pit_det metadata lacks \\['min_size', 'max_size'\\]"),
        (json.dumps({k: v for k, v in good.items() if k != 'classes'}), "its pit_det metadata lacks \\['classes'\\]"),
    ):
        path = model_with(tmp_path, metadata)
        with pytest.raises(DeployError, match=f'^{path}: {message}'):
            OnnxDetector(str(path))
    path = model_with(tmp_path, json.dumps({k: v for k, v in good.items() if k != 'preprocess'}))
    with pytest.raises(DeployError, match=rf"^{path}: its pit_det metadata lacks \['preprocess'\]"):
        model_info(str(path))  # what tools/deploy/quantize.py calibrates with
    detector = OnnxDetector(str(model_with(tmp_path, json.dumps(good), outputs=1)))
    with pytest.raises(DeployError, match='1 outputs, not boxes, scores and labels'):
        detector(np.zeros((16, 16, 3), np.uint8))


def test_sampling_token_must_be_a_pixel(tmp_path, monkeypatch, capsys):
    images(tmp_path / 'in', 'a.png')
    argv = [TOY, 'x.pth', tmp_path / 'in', '--out', tmp_path / 'out', '--token', 'nan', '5']
    code, err = run('tools/analysis/visualize_sampling.py', argv, monkeypatch, capsys)
    assert code == 1 and err.startswith('error: --token nan 5.0: give the pixel as two finite numbers'), err


def test_path_errors_are_one_line(tmp_path, capsys):
    """An OSError about a user's path that no check caught is printed with its path, no traceback."""

    def main():
        open(tmp_path, 'w')

    assert run_tool(main) == 1
    assert capsys.readouterr().err.startswith(f"error: [Errno 21] Is a directory: '{tmp_path}'")
