"""COCO box AP of an exported detector (fp32 or INT8) in onnxruntime or OpenVINO: what a deployed
model scores on a data set, with the same COCOeval mmdet's evaluator runs."""

import contextlib
import io
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import cv2

from .errors import DeployError


@contextlib.contextmanager
def malformed_annotations(ann_file: str) -> Iterator[None]:
    """pycocotools' errors on a file that is no COCO detection json (not json, a missing field, a
    box that is no 4 numbers) as one DeployError naming the file and the checker that names entries."""
    try:
        yield
    except FileNotFoundError:  # no such file: its own message says so
        raise
    except (OSError, ValueError, KeyError, TypeError, AssertionError, IndexError) as err:
        raise DeployError(
            f'{ann_file}: not a COCO detection json ({type(err).__name__}: {err}); '
            'tools/data/validate_dataset.py names each malformed entry'
        ) from None


def scored_boxes(coco, classes: Sequence[str]) -> int:
    """The ground-truth boxes that COCO evaluation of ``classes`` scores detections against in
    ``coco`` (a pycocotools ``COCO``): the annotations of the categories so named, on the file's
    images, that COCOeval does not ignore (crowds, areas outside its range 'all'). With none,
    every AP is -1, whatever the detector found.

    Raises:
        KeyError, TypeError: an annotation without the fields COCOeval reads, as COCOeval would.

    mmdet's ``CocoMetric`` and :func:`evaluate_onnx` evaluate the categories named by the detector's
    classes on every image of the file, so both tools check this before inference (tools/test.py,
    tools/deploy/onnx_eval.py)."""
    ids = set(coco.getCatIds(catNms=list(classes)))
    # COCOeval's own tests (pycocotools 2.0: _prepare, evaluateImg with areaRng 'all'), which read
    # 'iscrowd' and 'area' as required fields: KeyError / TypeError where an entry lacks them.
    return sum(
        ann['category_id'] in ids
        and ann['image_id'] in coco.imgs
        and not ann['iscrowd']
        and not (ann['area'] < 0 or ann['area'] > 1e10)
        for ann in coco.anns.values()
    )


def evaluate_onnx(
    model_path: str,
    ann_file: str,
    img_dir: str,
    runtime: str = 'onnxruntime',
    threads: int = 0,
    detections: Optional[Dict[str, tuple]] = None,
) -> Dict[str, float]:
    """Every image of ``ann_file`` through the model (all its detections, no score threshold),
    scored by pycocotools' COCOeval.

    Args:
        detections: if given, filled with each image's ``(boxes, scores, labels)`` as the model gave
            them, by the annotations' ``file_name``: what was scored, for a comparison detection by
            detection.

    Returns:
        ``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75`` (mmdet's names), ``images`` and the median
        ``latency_ms`` of the runtime call per image.

    Raises:
        DeployError: an image that cannot be read, a class name missing from the annotations, an
            annotation file that is no COCO detection json or has nothing to score (no images, no
            boxes of the model's classes: :func:`scored_boxes`), or a model that is no pit-det export.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from .detector import OnnxDetector

    with malformed_annotations(ann_file), contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints
        coco = COCO(ann_file)
        by_name = {c['name']: c['id'] for c in coco.loadCats(coco.getCatIds())}
        # coco.imgs, not loadImgs: pycocotools' loadImgs takes a string id for a list of one-letter ids.
        file_names = {image_id: coco.imgs[image_id]['file_name'] for image_id in coco.getImgIds()}
    try:
        images = sorted(file_names.items())
    except TypeError:  # COCOeval sorts the ids too, and an int and a str have no order
        kinds = ' and '.join(sorted({type(image_id).__name__ for image_id in file_names}))
        raise DeployError(
            f'{ann_file}: image ids mix {kinds}, which COCO evaluation cannot sort; '
            'give every image the same kind of id'
        ) from None
    if not images:
        raise DeployError(f'{ann_file}: no images: nothing to score AP against')
    detector = OnnxDetector(model_path, threads=threads, runtime=runtime)  # its DeployErrors name the file
    missing = [name for name in detector.classes if name not in by_name]
    if missing:
        raise DeployError(f'{ann_file} has no categories named {missing}; the model detects {detector.classes}')
    with malformed_annotations(ann_file):
        nothing_to_score = not scored_boxes(coco, detector.classes)
    if nothing_to_score:
        raise DeployError(
            f"{ann_file}: no boxes of the model's classes (other than crowds) on its images: nothing to "
            'score AP against (COCOeval gives AP -1)'
        )
    category = [by_name[name] for name in detector.classes]
    results, times = [], []
    for image_id, file_name in images:
        path = Path(img_dir) / str(file_name)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DeployError(f'cannot read image {path} (from {ann_file})')
        start = time.perf_counter()
        boxes, scores, labels = detector(image)
        times.append(time.perf_counter() - start)
        if detections is not None:
            detections[file_name] = (boxes, scores, labels)
        for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            results.append(
                dict(image_id=image_id, category_id=category[label], score=score, bbox=[x1, y1, x2 - x1, y2 - y1])
            )
    with malformed_annotations(ann_file), contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(results) if results else COCO(), 'bbox')
        # The model's categories only, as mmdet's CocoMetric sets them (3.3.0): COCOeval's default,
        # every category of the file, would average in others at AP 0.
        evaluator.params.catIds = coco.getCatIds(catNms=list(detector.classes))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    times.sort()
    return dict(
        bbox_mAP=float(evaluator.stats[0]),
        bbox_mAP_50=float(evaluator.stats[1]),
        bbox_mAP_75=float(evaluator.stats[2]),
        images=len(times),
        latency_ms=1e3 * times[len(times) // 2],
        runtime=runtime,
        precision=detector.info.get('precision', 'fp32'),
    )
