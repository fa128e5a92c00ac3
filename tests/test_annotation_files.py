"""Malformed annotation files and class names that do not match the config: a message naming the
file, entry and field (or the class names and the fix), never a traceback, in the checker, the
dataset and the training tool."""

import codecs
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from mmdet.registry import DATASETS

import pit_det  # noqa: F401  registers the dataset
from pit_det.datasets.check import check_coco
from pit_det.datasets.toy import make_split
from pit_det.errors import DatasetError

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
TOY_CLASSES = ('rectangle', 'ellipse', 'triangle')


# (name, how the json is broken, problem kind, text the message must hold: entry and field)
ENTRY_CASES = [
    (
        'nan_box',
        lambda c: c['annotations'][0]['bbox'].__setitem__(2, float('nan')),
        'non_finite_box',
        "annotations[0] (id 1): field 'bbox' [",
        'nan',
    ),
    (
        'inf_box',
        lambda c: c['annotations'][1]['bbox'].__setitem__(0, float('inf')),
        'non_finite_box',
        "annotations[1] (id 2): field 'bbox'",
        'inf',
    ),
    (
        'string_in_box',
        lambda c: c['annotations'][0]['bbox'].__setitem__(1, '12'),
        'non_numeric_box',
        "annotations[0] (id 1): field 'bbox'",
        "'12'",
    ),
    (
        'three_numbers',
        lambda c: c['annotations'][0]['bbox'].pop(),
        'wrong_type',
        "annotations[0] (id 1): field 'bbox' must hold 4 numbers",
        '',
    ),
    (
        'no_bbox',
        lambda c: c['annotations'][2].pop('bbox'),
        'missing_field',
        "annotations[2] (id 3): field 'bbox' missing",
        '',
    ),
    (
        'no_annotation_id',
        lambda c: c['annotations'][0].pop('id'),
        'missing_field',
        "annotations[0]: field 'id' missing",
        '',
    ),
    (
        'no_file_name',
        lambda c: c['images'][3].pop('file_name'),
        'missing_field',
        "images[3] (id 4): field 'file_name' missing",
        '',
    ),
    (
        'fractional_image_id',  # string ids are valid (test_tool_inputs.py evaluates them)
        lambda c: c['images'][0].__setitem__('id', 1.5),
        'wrong_type',
        "images[0] (id 1.5): field 'id' must be int or str, got float",
        '',
    ),
    (
        'no_category_name',
        lambda c: c['categories'][1].pop('name'),
        'missing_field',
        "categories[1] (id 2): field 'name' missing",
        '',
    ),
    (
        'no_area',  # bbox-only exports: mmdet stopped at KeyError: 'area'
        lambda c: c['annotations'][0].pop('area'),
        'missing_field',
        "annotations[0] (id 1): field 'area' missing",
        'w * h',
    ),
    (
        'string_area',
        lambda c: c['annotations'][1].__setitem__('area', '12'),
        'wrong_type',
        "annotations[1] (id 2): field 'area' must be a finite number, got str",
        '',
    ),
    (
        'annotation_not_object',
        lambda c: c['annotations'].__setitem__(0, [1, 2, 3, 4]),
        'wrong_type',
        'annotations[0]: an object expected, got list',
        '',
    ),
]
TOP_CASES = [
    ('no_images', lambda c: c.pop('images'), "field 'images' missing"),
    ('annotations_dict', lambda c: c.__setitem__('annotations', {}), "field 'annotations' must be a list, got dict"),
]


def _write_case(tmp_path: Path, breaker) -> Path:
    coco = make_split(tmp_path, 'val', 6, seed=3)
    assert len(coco['annotations']) >= 3 and coco['annotations'][0]['id'] == 1
    breaker(coco)
    path = tmp_path / 'annotations' / 'instances_val2017.json'
    # allow_nan: Python's json writes NaN / Infinity, as tools that produce such files do.
    path.write_text(json.dumps(coco, allow_nan=True))
    return path


def _build_dataset(path: Path, classes=TOY_CLASSES):
    return DATASETS.build(
        dict(
            type='CheckedCocoDataset',
            ann_file=str(path),
            data_root='',
            data_prefix=dict(img=str(path.parents[1] / 'val2017') + '/'),
            metainfo=dict(classes=classes),
            pipeline=[],
            test_mode=True,
        )
    )


@pytest.mark.parametrize('name,breaker,kind,where,value', ENTRY_CASES, ids=[c[0] for c in ENTRY_CASES])
def test_malformed_entries_are_named_by_checker_and_dataset(tmp_path, name, breaker, kind, where, value):
    path = _write_case(tmp_path, breaker)
    report, _ = check_coco(path, tmp_path / 'val2017')
    assert report.counts[kind] == 1 and report.num_errors == 1, dict(report.counts)
    (example,) = report.examples[kind]
    assert example.startswith(where) and value in example
    with pytest.raises(DatasetError) as err:
        _build_dataset(path)
    message = str(err.value)
    assert message.startswith(f'{path}: 1 malformed entries') and where in message and 'validate_dataset.py' in message


@pytest.mark.parametrize('name,breaker,text', TOP_CASES, ids=[c[0] for c in TOP_CASES])
def test_files_that_are_not_coco_are_named(tmp_path, name, breaker, text):
    path = _write_case(tmp_path, breaker)
    for call in (lambda: check_coco(path, tmp_path), lambda: _build_dataset(path)):
        with pytest.raises(DatasetError, match=re.escape(f'{path}: {text}')):
            call()


@pytest.mark.parametrize(
    'content,text',
    [
        ('{"images": [', 'not a readable json file (Expecting value: line 1'),
        ('', 'not a readable json file'),
        ('[1, 2]', 'the file must hold a json object, got list'),
    ],
)
def test_unparsable_json_is_named(tmp_path, content, text):
    path = tmp_path / 'broken.json'
    path.write_text(content)
    for call in (lambda: check_coco(path, tmp_path), lambda: _build_dataset(path)):
        with pytest.raises(DatasetError, match=re.escape(f'{path}: {text}')):
            call()


def _build_train_dataset(path: Path, **options):
    return DATASETS.build(
        dict(
            type='CheckedCocoDataset',
            ann_file=str(path),
            data_prefix=dict(img=str(path.parents[1] / 'val2017') + '/'),
            metainfo=dict(classes=TOY_CLASSES),
            pipeline=[],
            **options,
        )
    )


def _string_id_for_the_first_image(coco: dict) -> None:
    first = coco['images'][0]['id']
    coco['images'][0]['id'] = f'img-{first}'
    for ann in coco['annotations']:
        ann['image_id'] = f'img-{first}' if ann['image_id'] == first else ann['image_id']


@pytest.mark.parametrize('defect', ['byte_order_mark', 'zero_annotation_id', 'mixed_image_ids'])
def test_what_only_coco_evaluation_trips_over_is_refused_for_evaluation_only(tmp_path, defect):
    """pycocotools' reader stops at a UTF-8 byte-order mark (after a whole training epoch, at the first
    validation), counts a match to annotation id 0 as none (AP fell without a word), and COCOeval
    sorts the image ids, which fails on numbers mixed with strings. Training reads all three well:
    the checker warns, an evaluation split is refused before inference."""
    breakers = {
        'byte_order_mark': lambda c: None,
        'zero_annotation_id': lambda c: c['annotations'][0].__setitem__('id', 0),
        'mixed_image_ids': _string_id_for_the_first_image,
    }
    path = _write_case(tmp_path, breakers[defect])
    if defect == 'byte_order_mark':
        path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    report, _ = check_coco(path, tmp_path / 'val2017')
    assert dict(report.counts) == {defect: 1} and report.num_errors == 0
    assert f'  warning {defect}: 1 (' in report.summary(6, 12)  # described, as the checker tool prints it
    example = {
        'byte_order_mark': 'starts with a UTF-8 byte-order mark',
        'zero_annotation_id': 'annotations[0] (id 0)',
        'mixed_image_ids': "images: ids mix numbers (2...) and strings ('img-1'...)",
    }
    with pytest.raises(
        DatasetError, match=re.escape(f'{path}: COCO evaluation (pycocotools) would fail or score it wrong: ')
    ) as err:
        _build_dataset(path)
    assert example[defect] in str(err.value)
    assert len(_build_train_dataset(path)) == 6


def test_a_file_without_annotations_is_run_on_but_not_trained_on(tmp_path):
    """COCO's test-dev files have no 'annotations': the checker warns, evaluation's dataset reads
    the images, and training stops before its first iteration (mmdet trained on negatives, loss_bbox 0)."""
    path = _write_case(tmp_path, lambda c: c.pop('annotations'))
    report, _ = check_coco(path, tmp_path / 'val2017')
    assert dict(report.counts) == {'no_annotations': 1} and report.num_errors == 0
    assert len(_build_dataset(path)) == 6
    with pytest.raises(DatasetError, match=rf'^{re.escape(str(path))}: no boxes: nothing to train on \(background'):
        _build_train_dataset(path)
    assert len(_build_train_dataset(path, negatives_only=True)) == 6  # background images, on purpose


def test_boxes_with_zero_area_are_named_as_such(tmp_path):
    """mmdet drops a box whose area is 0 (bbox-only exports write it so): the checker counts them,
    and the dataset names that reason, not a degenerate box."""

    def zero_area(coco):
        for ann in coco['annotations']:
            ann['area'] = 0

    path = _write_case(tmp_path, zero_area)
    n = len(json.loads(path.read_text())['annotations'])
    report, _ = check_coco(path, tmp_path / 'val2017')
    assert dict(report.counts) == {'zero_area': n} and report.num_errors == n
    with pytest.raises(DatasetError, match=rf'all {n} boxes are unusable, e.g. annotation 1 of \S+: area 0 \(mmdet'):
        _build_dataset(path)


@pytest.mark.slow
def test_checker_tool_lists_every_problem_without_traceback(tmp_path):
    def several(coco):
        coco['annotations'][0]['bbox'][2] = float('nan')
        coco['annotations'][1]['bbox'][0] = float('-inf')
        coco['annotations'][2].pop('bbox')
        coco['annotations'][3]['bbox'][3] = 'wide'

    path = _write_case(tmp_path, several)
    proc = subprocess.run(
        [sys.executable, 'tools/data/validate_dataset.py', path, tmp_path / 'val2017'],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert '4 errors, 0 warnings' in proc.stdout
    assert 'ERROR non_finite_box: 2' in proc.stdout and 'ERROR non_numeric_box: 1' in proc.stdout
    assert "annotations[0] (id 1): field 'bbox' [" in proc.stdout and '-inf' in proc.stdout
    assert "annotations[2] (id 3): field 'bbox' missing" in proc.stdout and "'wide'" in proc.stdout
    (tmp_path / 'bad.json').write_text('{"images": [')
    proc = subprocess.run(
        [sys.executable, 'tools/data/validate_dataset.py', tmp_path / 'bad.json', tmp_path],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.startswith(f'error: {tmp_path / "bad.json"}: not a readable json file'), proc.stderr


def test_partial_class_mismatch_warns_by_name(tmp_path, mm_log):
    """A json whose triangles are 'hexagon': a config of the json's rectangles and ellipses drops the
    hexagon boxes with a warning naming the category; a deliberate subset trains on that subset."""
    coco = make_split(tmp_path, 'val', 12, seed=4)
    coco['categories'][2]['name'] = 'hexagon'  # triangle boxes now belong to a class the config lacks
    path = tmp_path / 'annotations' / 'instances_val2017.json'
    path.write_text(json.dumps(coco))
    dataset = _build_dataset(path, classes=('rectangle', 'ellipse'))
    num_dropped = sum(a['category_id'] == 3 for a in coco['annotations'])
    assert 0 < num_dropped < len(coco['annotations'])
    assert sum(len(d['instances']) for d in dataset) == len(coco['annotations']) - num_dropped
    out = '\n'.join(mm_log)
    assert f'dropped {num_dropped} of {len(coco["annotations"])} boxes' in out and "category 3 ('hexagon')" in out
    assert len(_build_dataset(path, classes=('rectangle',)).cat_ids) == 1


@pytest.mark.parametrize(
    'categories,classes,what',
    [
        (('rectangle', 'hexagon', 'triangle'), TOY_CLASSES, "['ellipse'] of metainfo.classes are not among"),
        (('rectangle', 'ellipse', 'hexagon'), TOY_CLASSES, "['triangle'] of metainfo.classes are not among"),
        (TOY_CLASSES, ('ellipse', 'rectangle'), "its categories order these classes ['rectangle', 'ellipse']"),
    ],
    ids=['a name missing in the middle', 'the last name missing', 'another order'],
)
def test_config_classes_must_be_json_categories_in_their_order(tmp_path, categories, classes, what):
    """mmdet numbers the classes by the json's order of the names it finds: a name the json lacks
    shifts the labels after it (and a prediction of the last class ended tools/test.py in an
    IndexError after inference), another order trains each class under another's name. Refused before
    any work, naming both lists."""
    coco = make_split(tmp_path, 'val', 12, seed=4)
    for cat, name in zip(coco['categories'], categories):
        cat['name'] = name
    path = tmp_path / 'annotations' / 'instances_val2017.json'
    path.write_text(json.dumps(coco))
    with pytest.raises(DatasetError) as err:
        _build_dataset(path, classes=classes)
    message = str(err.value)
    assert message.startswith(f'{path}: {what}') and f'config metainfo.classes: {list(classes)}' in message
    assert f'categories in the json:  {list(categories)}' in message


@pytest.mark.parametrize('num_in_config_classes,stops', [(1, True), (3, False)])
def test_nearly_all_boxes_of_foreign_classes_stop_unless_a_deliberate_subset(tmp_path, num_in_config_classes, stops):
    """A json with one class name in common with the config ('rectangle'), whose other boxes are
    'car' or 'kite': 1 or 3 of its boxes are rectangles. With one (above 90% foreign) the toy config
    is refused, naming both lists; with three, for its class names the json lacks; the config of just
    'rectangle', a subset of the json's names, trains on that one either way."""
    coco = make_split(tmp_path, 'val', 12, seed=5)
    for cat, name in zip(coco['categories'], ('rectangle', 'car', 'kite')):
        cat['name'] = name
    for i, ann in enumerate(coco['annotations']):
        ann['category_id'] = 1 if i < num_in_config_classes else 2 + i % 2
    n = len(coco['annotations'])
    assert (n - 1) / n >= 0.9 > (n - 3) / n  # the two cases on either side of the limit
    path = tmp_path / 'annotations' / 'instances_val2017.json'
    path.write_text(json.dumps(coco))
    if stops:
        with pytest.raises(DatasetError) as err:
            _build_dataset(path)
        message = str(err.value)
        assert message.startswith(
            f'{path}: {n - 1} of its {n} boxes have categories outside metainfo.classes, '
            "and 2 of the config's class names are not among its categories"
        )
        assert "['rectangle', 'car', 'kite']" in message and "['rectangle', 'ellipse', 'triangle']" in message
    else:
        with pytest.raises(DatasetError, match=r"\['ellipse', 'triangle'\] of metainfo.classes are not among"):
            _build_dataset(path)
    assert sum(len(d['instances']) for d in _build_dataset(path, classes=('rectangle',))) == num_in_config_classes


@pytest.mark.slow
def test_train_stops_before_training_on_foreign_class_names_and_the_fix_works(tmp_path):
    """mmdet#10208: a json whose class names are not the config's. pit-det stops before the first
    iteration naming both lists and the fix; the printed fix then trains and evaluates."""
    for split, n, seed in (('train', 8, 0), ('val', 4, 1)):
        coco = make_split(tmp_path, split, n, seed=seed)
        for cat, name in zip(coco['categories'], ('car', 'bicycle', 'kite')):
            cat['name'] = name
        (tmp_path / f'annotations/instances_{split}2017.json').write_text(json.dumps(coco))
    work = tmp_path / 'work'
    train = [
        sys.executable,
        'tools/train.py',
        str(TOY),
        '--work-dir',
        str(work),
        '--data-root',
        str(tmp_path),
        '--cfg-options',
        'train_cfg.max_epochs=1',
    ]
    proc = subprocess.run(train, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert "none of the config's class names is among its categories" in proc.stderr
    assert "['car', 'bicycle', 'kite']" in proc.stderr and "['rectangle', 'ellipse', 'triangle']" in proc.stderr
    assert 'Epoch(train)' not in proc.stdout + proc.stderr  # stopped before training
    fix = re.search(r'--cfg-options (.*)', proc.stderr).group(1)
    fixed = subprocess.run([*train, *shlex.split(fix)], cwd=ROOT, env=ENV, capture_output=True, text=True)
    log = fixed.stdout + fixed.stderr
    assert fixed.returncode == 0, log[-3000:]
    assert 'dropped' not in log and re.search(r'coco/bbox_mAP: [0-9.]+', log)
