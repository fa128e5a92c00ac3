"""Validate a COCO-format detection set before training on it.

Every problem found is recorded under a kind, with the offending file name or annotation.
Errors make training wrong or impossible; warnings are handled by pit-det's loaders
(converted or padded) but worth knowing about.
"""

import codecs
import json
import math
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import cv2
from PIL import Image

from ..errors import DatasetError

ERRORS = {
    'no_images': 'no images in the file',
    'missing_field': 'required field missing',
    'wrong_type': 'field of the wrong type',
    'non_numeric_box': 'bbox value that is not a number',
    'non_finite_box': 'bbox value that is NaN or infinite',
    'missing_image': 'image file missing',
    'unreadable_image': 'image file unreadable or corrupt',
    'size_mismatch': 'image size differs from the json',
    'degenerate_box': 'box with zero or negative width or height',
    'zero_area': 'annotation with area 0 or less (mmdet drops it; for a box alone, area is w * h)',
    'box_outside_image': 'box extends outside the image',
    'unknown_category': 'annotation with a category id not in categories',
    'unknown_image': 'annotation of an image id not in images',
    'duplicate_image_id': 'image id used more than once',
    'duplicate_annotation_id': 'annotation id used more than once',
    'duplicate_category_id': 'category id used more than once',
}
WARNINGS = {
    'grayscale_image': 'grayscale image (loaded as 3-channel)',
    'alpha_image': 'image with an alpha channel (alpha dropped when loaded)',
    'high_bit_depth_image': '16-bit image (converted to 8-bit when loaded)',
    'palette_image': 'palette image (converted to RGB when loaded)',
    'small_image': 'image smaller than one backbone patch (padded when loaded)',
    'no_annotations': 'no annotations: images to run on (a test-dev file), nothing to train on or score',
    'zero_annotation_id': 'annotation id 0 (evaluation refuses it: pycocotools takes a match to it for none)',
    'byte_order_mark': 'UTF-8 byte-order mark (evaluation refuses it: pycocotools cannot read it)',
    'mixed_image_ids': 'image ids mixing numbers and strings (evaluation refuses it: COCOeval sorts them)',
    'rotated_image': "EXIF-rotated image (loaded rotated: the json's size and boxes must be the rotated image's)",
}


# Image ids may be strings, as some exporters write them: pycocotools and mmdet index and evaluate
# them as they do numbers.
IMAGE_ID = (int, str)
# Fields each entry needs, and their JSON types (bool is excluded from int where it matters).
SCHEMA = {
    'images': {'id': IMAGE_ID, 'file_name': str, 'width': int, 'height': int},
    'annotations': {'id': int, 'image_id': IMAGE_ID, 'category_id': int, 'bbox': list},
    'categories': {'id': int, 'name': str},
}


def _kind_name(kind) -> str:
    return ' or '.join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _type_name(value) -> str:
    return 'null' if value is None else type(value).__name__


def entry_problems(field: str, index: int, entry) -> List[Tuple[str, str]]:
    """Schema problems of ``coco[field][index]``: ``[(kind, 'field[index] (id X): ...')]``.

    Covers missing required fields, wrong types (a category id given as a string, a bbox that is not a
    list of four), bbox values that are not numbers, and bbox values that are NaN or infinite
    (Python's json reads the non-standard ``NaN`` / ``Infinity``).
    """
    if not isinstance(entry, dict):
        return [('wrong_type', f'{field}[{index}]: an object expected, got {_type_name(entry)} {entry!r:.60}')]
    where = f'{field}[{index}]' + (f' (id {entry["id"]!r})' if 'id' in entry else '')
    problems = []
    for name, kind in SCHEMA[field].items():
        if name not in entry:
            problems.append(('missing_field', f'{where}: field {name!r} missing'))
            continue
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and value is None):
            # A width of 640.0 is harmless; an integral float is accepted where an int is due.
            if not (kind is int and isinstance(value, float) and value.is_integer() and name in ('width', 'height')):
                problems.append(
                    (
                        'wrong_type',
                        f'{where}: field {name!r} must be {_kind_name(kind)}, got {_type_name(value)} {value!r:.60}',
                    )
                )
    if field == 'annotations':
        problems += _area_problems(where, entry)
    bbox = entry.get('bbox') if field == 'annotations' else None
    if isinstance(bbox, list):
        if len(bbox) != 4:
            problems.append(('wrong_type', f"{where}: field 'bbox' must hold 4 numbers [x, y, w, h], got {bbox!r:.60}"))
        elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            problems.append(('non_numeric_box', f"{where}: field 'bbox' {bbox!r:.60}"))
        elif not all(math.isfinite(v) for v in bbox):
            problems.append(('non_finite_box', f"{where}: field 'bbox' {bbox}"))
    return problems


def _area_problems(where: str, ann: dict) -> List[Tuple[str, str]]:
    """What mmdet and pycocotools read of an annotation beyond :data:`SCHEMA`: ``area`` (mmdet's
    dataset reads it, and drops boxes with area 0 or less; COCO evaluation's size ranges use it)."""
    problems = []
    area = ann.get('area')
    if 'area' not in ann:
        problems.append(('missing_field', f"{where}: field 'area' missing (for a box alone it is w * h)"))
    elif isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area):
        problems.append(
            ('wrong_type', f"{where}: field 'area' must be a finite number, got {_type_name(area)} {area!r:.60}")
        )
    return problems


def evaluation_problems(path: Union[str, Path], coco: dict) -> List[Tuple[str, str]]:
    """What breaks COCO evaluation (pycocotools) of a file that trains well: a UTF-8 byte-order mark
    (Python's json takes it, pycocotools' reader stops at it), annotation id 0 (pycocotools
    records a match by the matched annotation's id, so a match to id 0 counts as none and AP falls
    without a word), and image ids that mix numbers and strings (COCOeval sorts them, and Python
    cannot order an int and a str). ``[(kind, example)]``."""
    problems = []
    with open(path, 'rb') as f:
        if f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:
            problems.append(('byte_order_mark', f'{path}: starts with a UTF-8 byte-order mark; save it without'))
    for i, ann in enumerate(coco.get('annotations', [])):
        if isinstance(ann, dict) and ann.get('id') == 0 and not isinstance(ann.get('id'), bool):
            problems.append(('zero_annotation_id', f'annotations[{i}] (id 0): number annotations from 1'))
    ids = [img.get('id') for img in coco.get('images', []) if isinstance(img, dict)]
    numbers = [i for i in ids if isinstance(i, (int, float)) and not isinstance(i, bool)]
    strings = [i for i in ids if isinstance(i, str)]
    if numbers and strings:
        problems.append(
            (
                'mixed_image_ids',
                f'images: ids mix numbers ({numbers[0]!r}...) and strings ({strings[0]!r}...); '
                'give every image the same kind of id',
            )
        )
    return problems


def submission_hint(key: str = 'test_evaluator') -> str:
    """What runs a file with nothing to score (a test-dev file), for the metric at ``key``
    (:func:`pit_det.config.metric_configs`): its detections written, no metric computed."""
    return f'For a test-dev submission: --cfg-options {key}.format_only=True'


# What to do about a validation set with nothing to score: training stops before its first iteration.
WITHOUT_VALIDATION = (
    "Give val_evaluator's ann_file boxes to score, or train without validation: "
    '--cfg-options val_cfg=None val_dataloader=None val_evaluator=None'
)


def require_boxes_to_score(evaluator, evaluator_cfg, name: str = 'test_evaluator') -> None:
    """Before inference: each COCO metric of a built test or val loop's ``evaluator`` has
    ground-truth boxes of the dataset's classes to score, unless it only writes the results
    (``format_only``, a test-dev submission). Without any, COCOeval gives AP -1 for every metric,
    after a whole pass over the images (in training, at every validation).

    Args:
        evaluator: mmengine's ``Evaluator`` of the loop, its ``dataset_meta`` set from the dataset.
        evaluator_cfg: the config's evaluator (one metric, a list of them, or a dict with
            ``metrics``), whose ``ann_file`` the error names.
        name: the evaluator's config key, ``'test_evaluator'`` or ``'val_evaluator'``.

    Raises:
        DatasetError: naming the annotation file and the fix: the option for a submission
            (test), or what trains without validation (val).
    """
    from mmdet.evaluation.metrics import CocoMetric

    from pit_det_deploy.evaluate import scored_boxes

    from ..config import metric_configs

    cfgs = metric_configs(evaluator_cfg, name)
    if len(cfgs) != len(evaluator.metrics):
        raise ValueError(f'{len(evaluator.metrics)} metrics built from {len(cfgs)} configs: {evaluator_cfg}')
    for metric, (key, metric_cfg) in zip(evaluator.metrics, cfgs):
        coco = getattr(metric, '_coco_api', None)  # mmdet 3.3.0's CocoMetric: its ann_file, read at __init__
        classes = (metric.dataset_meta or {}).get('classes')
        if not isinstance(metric, CocoMetric) or metric.format_only or coco is None or classes is None:
            continue  # without ann_file, tools/test.py refuses AP -1 after the run
        try:
            nothing_to_score = not scored_boxes(coco, classes)  # the categories CocoMetric evaluates
        except (KeyError, TypeError) as err:  # COCOeval would stop there too, after inference
            raise DatasetError(
                f'{metric_cfg.get("ann_file")}: COCO evaluation cannot read its annotations '
                f'({type(err).__name__}: {err}); tools/data/validate_dataset.py names each malformed entry'
            ) from None
        if nothing_to_score:
            when, fix = (
                ('at every validation during training', WITHOUT_VALIDATION)
                if name == 'val_evaluator'
                else ('after running on every image', submission_hint(key))
            )
            raise DatasetError(
                f"{metric_cfg.get('ann_file')}: no boxes of the config's classes (other than crowds) on its "
                f'images: COCO evaluation would give AP -1 {when}. {fix}'
            )


def top_level_problem(coco) -> Optional[str]:
    """What keeps ``coco`` from being a COCO detection json at all, or None. A missing
    ``'annotations'`` is not a problem: the readers take it as empty (COCO's test-dev files)."""
    if not isinstance(coco, dict):
        return f'the file must hold a json object, got {_type_name(coco)}'
    for field in SCHEMA:
        if field not in coco:
            if field == 'annotations':  # a test-dev file: images to run on, nothing to score
                continue
            return f'field {field!r} missing'
        if not isinstance(coco[field], list):
            return f'field {field!r} must be a list, got {_type_name(coco[field])}'
    return None


class Report:
    """Problems found, by kind: a count and the first few examples of each."""

    def __init__(self, max_examples: int = 5) -> None:
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = defaultdict(list)
        self.max_examples = max_examples

    def add(self, kind: str, example: str) -> None:
        if kind not in ERRORS and kind not in WARNINGS:  # the summary prints only the kinds they describe
            raise KeyError(f'problem kind {kind!r} is described in neither ERRORS nor WARNINGS')
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(example)

    @property
    def num_errors(self) -> int:
        return sum(n for k, n in self.counts.items() if k in ERRORS)

    def summary(self, num_images: int, num_annotations: int) -> str:
        lines = [
            f'{num_images} images, {num_annotations} annotations: '
            f'{self.num_errors} errors, {sum(self.counts.values()) - self.num_errors} warnings'
        ]
        for table, label in ((ERRORS, 'ERROR'), (WARNINGS, 'warning')):
            for kind, text in table.items():
                if self.counts[kind]:
                    lines.append(
                        f'  {label} {kind}: {self.counts[kind]} ({text}), e.g. ' + ', '.join(self.examples[kind])
                    )
        return '\n'.join(lines)


_EXIF_ORIENTATION = 274


def inspect_image(path: Union[str, Path]) -> Tuple[Optional[Tuple[int, int]], List[str]]:
    """Decode one image fully. Returns ((height, width) as the pipeline loads it, or None if
    unreadable, [problem kinds]). mmcv's loader (OpenCV) applies a JPEG's EXIF orientation, so a
    rotated image's size is the rotated one, and the json's boxes must be in that frame."""
    path = Path(path)
    if not path.is_file():
        return None, ['missing_image']
    try:
        with Image.open(path) as img:
            img.load()  # full decode: truncated files fail here
            mode, (w, h) = img.mode, img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return None, ['unreadable_image']
    kinds = []
    if orientation in (5, 6, 7, 8):  # a quarter turn: loaded with width and height swapped
        w, h = h, w
    if orientation not in (1, None):
        kinds.append('rotated_image')
    if mode in ('L', '1', 'I', 'F', 'I;16', 'I;16B', 'I;16L', 'LA'):
        kinds.append('grayscale_image')
    if mode in ('RGBA', 'LA', 'PA'):
        kinds.append('alpha_image')
    if mode == 'P':
        kinds.append('palette_image')
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # PIL reduces 16-bit RGB PNGs to 8 bits silently
    if raw is None:
        return None, ['unreadable_image']
    if raw.dtype.itemsize > 1 or mode.startswith('I'):
        kinds.append('high_bit_depth_image')
    return (h, w), kinds


def check_coco(
    ann_file: Union[str, Path], img_dir: Union[str, Path], min_size: int = 16, workers: int = 0, progress: bool = False
) -> Tuple[Report, dict]:
    """Check annotations and every image of a COCO detection set.

    Args:
        ann_file: COCO json.
        img_dir: Folder the images' ``file_name`` values are relative to.
        min_size: Smallest side a backbone accepts without padding (one patch).
        workers: Processes decoding images (0: in this process).
        progress: Show a progress bar.

    Returns:
        The report, and the parsed json.

    Entries with schema problems (missing fields, wrong types, bad bbox values; see
    :func:`entry_problems`) are reported and left out of the later checks.

    Raises:
        DatasetError: the file is not json, or not a COCO detection file (names the file and field).
    """
    ann_file, img_dir = Path(ann_file), Path(img_dir)
    coco = read_coco_json(ann_file)
    problem = top_level_problem(coco)
    if problem:
        raise DatasetError(f'{ann_file}: {problem}')
    coco.setdefault('annotations', [])
    report = Report()
    if not coco['images']:
        report.add('no_images', f"{ann_file}: 'images' is empty")
    if not coco['annotations']:
        report.add('no_annotations', f'{ann_file}: no annotations')
    for kind, example in evaluation_problems(ann_file, coco):
        report.add(kind, example)
    valid, malformed_ids = _check_entries(coco, report)
    _check_references_and_boxes(valid, malformed_ids, report)
    _check_image_files(valid['images'], img_dir, min_size, workers, progress, report)
    return report, coco


def duplicate_ids(entries: list) -> Dict[int, int]:
    """``{id: count}`` of the ids used more than once among ``entries`` (dicts with an ``id``)."""
    return {i: n for i, n in Counter(entry['id'] for entry in entries).items() if n > 1}


def _check_entries(coco: dict, report: Report) -> Tuple[dict, dict]:
    """Schema and unique ids. Returns the well-formed entries of each field, and the ids of the
    malformed ones (reported here, not again by the annotations that refer to them)."""
    valid = {field: [] for field in SCHEMA}
    malformed_ids = {field: set() for field in SCHEMA}
    for field in SCHEMA:
        for i, entry in enumerate(coco[field]):
            problems = entry_problems(field, i, entry)
            for kind, example in problems:
                report.add(kind, example)
            if not problems:
                valid[field].append(entry)
            elif isinstance(entry, dict) and isinstance(entry.get('id'), IMAGE_ID):
                malformed_ids[field].add(entry['id'])
    for field, kind in (
        ('images', 'duplicate_image_id'),
        ('annotations', 'duplicate_annotation_id'),
        ('categories', 'duplicate_category_id'),
    ):
        for item_id, n in duplicate_ids(valid[field]).items():
            report.add(kind, f'id {item_id} x{n}')
    return valid, malformed_ids


def _check_references_and_boxes(valid: dict, malformed_ids: dict, report: Report) -> None:
    """Each annotation's image and category exist; its box has an area and lies in the image."""
    images = {img['id']: img for img in valid['images']}
    cat_ids = {c['id'] for c in valid['categories']}
    for ann in valid['annotations']:
        img = images.get(ann.get('image_id'))
        where = f'annotation {ann.get("id")}' + (f' of {img["file_name"]}' if img else '')
        if img is None:
            if ann['image_id'] not in malformed_ids['images']:
                report.add('unknown_image', f'{where} (image id {ann.get("image_id")})')
            continue
        if ann['category_id'] not in cat_ids | malformed_ids['categories']:
            report.add('unknown_category', f'{where} (category {ann.get("category_id")})')
        bbox = ann['bbox']
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            report.add('degenerate_box', f'{where} (bbox {bbox})')
        elif ann['area'] <= 0:
            report.add('zero_area', f'{where} (area {ann["area"]}, bbox {bbox})')
        elif x < -1 or y < -1 or x + w > img['width'] + 1 or y + h > img['height'] + 1:
            report.add('box_outside_image', f'{where} (bbox {bbox}, image {img["width"]}x{img["height"]})')


def _check_image_files(
    images: list, img_dir: Path, min_size: int, workers: int, progress: bool, report: Report
) -> None:
    """Every image file decodes, has the json's size and at least ``min_size`` pixels a side."""
    paths = [img_dir / img['file_name'] for img in images]
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            results = list(_progress(pool.map(inspect_image, paths, chunksize=16), len(paths), progress))
    else:
        results = [inspect_image(p) for p in _progress(paths, len(paths), progress)]
    for img, (size, kinds) in zip(images, results):
        for kind in kinds:
            report.add(kind, img['file_name'])
        if size is None:
            continue
        if size != (img.get('height'), img.get('width')):
            report.add(
                'size_mismatch',
                f'{img["file_name"]} (file {size[1]}x{size[0]} as loaded, json {img.get("width")}x{img.get("height")})',
            )
        if min(size) < min_size:
            report.add('small_image', f'{img["file_name"]} ({size[1]}x{size[0]})')


def read_coco_json(path: Union[str, Path]):
    """The parsed json file.

    Raises:
        DatasetError: the file is missing, unreadable or not json (names the file and position).
    """
    try:
        with open(path, 'rb') as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f'{path}: not a readable json file ({err})') from err


def _progress(items, total: int, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc='images', unit='img')
