"""Validate a COCO-format detection set before training on it.

Every problem found is recorded under a kind, with the offending file name or annotation.
Errors make training wrong or impossible; warnings are handled by pit-det's loaders
(converted or padded) but worth knowing about.
"""
import json
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import cv2
from PIL import Image

ERRORS = {
    'missing_image': 'image file missing',
    'unreadable_image': 'image file unreadable or corrupt',
    'size_mismatch': 'image size differs from the json',
    'degenerate_box': 'box with zero or negative width or height',
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
}


class Report:
    """Problems found, by kind: a count and the first few examples of each."""

    def __init__(self, max_examples: int = 5) -> None:
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = defaultdict(list)
        self.max_examples = max_examples

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(example)

    @property
    def num_errors(self) -> int:
        return sum(n for k, n in self.counts.items() if k in ERRORS)

    def summary(self, num_images: int, num_annotations: int) -> str:
        lines = [f'{num_images} images, {num_annotations} annotations: '
                 f'{self.num_errors} errors, {sum(self.counts.values()) - self.num_errors} warnings']
        for table, label in ((ERRORS, 'ERROR'), (WARNINGS, 'warning')):
            for kind, text in table.items():
                if self.counts[kind]:
                    lines.append(f'  {label} {kind}: {self.counts[kind]} ({text}), e.g. '
                                 + ', '.join(self.examples[kind]))
        return '\n'.join(lines)


def inspect_image(path: Union[str, Path]) -> Tuple[Optional[Tuple[int, int]], List[str]]:
    """Decode one image fully. Returns ((height, width) or None if unreadable, [problem kinds])."""
    path = Path(path)
    if not path.is_file():
        return None, ['missing_image']
    try:
        with Image.open(path) as img:
            img.load()  # full decode: truncated files fail here
            mode, (w, h) = img.mode, img.size
    except Exception:
        return None, ['unreadable_image']
    kinds = []
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


def check_coco(ann_file: Union[str, Path], img_dir: Union[str, Path], min_size: int = 16,
               workers: int = 0, progress: bool = False) -> Tuple[Report, dict]:
    """Check annotations and every image of a COCO detection set.

    Args:
        ann_file: COCO json.
        img_dir: Folder the images' ``file_name`` values are relative to.
        min_size: Smallest side a backbone accepts without padding (one patch).
        workers: Processes decoding images (0: in this process).
        progress: Show a progress bar.

    Returns:
        The report, and the parsed json.

    Raises:
        ValueError: the json is not a COCO detection file (names the file and field).
    """
    ann_file, img_dir = Path(ann_file), Path(img_dir)
    try:
        coco = json.loads(ann_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f'{ann_file}: not a readable json file ({err})') from err
    for field in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(field), list):
            raise ValueError(f'{ann_file}: field {field!r} missing or not a list')
    report = Report()
    for field, kind in (('images', 'duplicate_image_id'), ('annotations', 'duplicate_annotation_id'),
                        ('categories', 'duplicate_category_id')):
        for item_id, n in Counter(item.get('id') for item in coco[field]).items():
            if n > 1:
                report.add(kind, f'id {item_id} x{n}')
    images = {img['id']: img for img in coco['images']}
    cat_ids = {c['id'] for c in coco['categories']}

    for ann in coco['annotations']:
        img = images.get(ann.get('image_id'))
        where = f'annotation {ann.get("id")}' + (f' of {img["file_name"]}' if img else '')
        if img is None:
            report.add('unknown_image', f'{where} (image id {ann.get("image_id")})')
            continue
        if ann.get('category_id') not in cat_ids:
            report.add('unknown_category', f'{where} (category {ann.get("category_id")})')
        bbox = ann.get('bbox')
        if not (isinstance(bbox, list) and len(bbox) == 4):
            report.add('degenerate_box', f'{where} (bbox {bbox!r})')
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            report.add('degenerate_box', f'{where} (bbox {bbox})')
        elif x < -1 or y < -1 or x + w > img['width'] + 1 or y + h > img['height'] + 1:
            report.add('box_outside_image', f'{where} (bbox {bbox}, image {img["width"]}x{img["height"]})')

    paths = [img_dir / img['file_name'] for img in coco['images']]
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(inspect_image, paths, chunksize=16)
            results = list(_progress(results, len(paths), progress))
    else:
        results = [inspect_image(p) for p in _progress(paths, len(paths), progress)]
    for img, (size, kinds) in zip(coco['images'], results):
        for kind in kinds:
            report.add(kind, img['file_name'])
        if size is None:
            continue
        if size != (img.get('height'), img.get('width')):
            report.add('size_mismatch', f'{img["file_name"]} (file {size[1]}x{size[0]}, json '
                                        f'{img.get("width")}x{img.get("height")})')
        if min(size) < min_size:
            report.add('small_image', f'{img["file_name"]} ({size[1]}x{size[0]})')
    return report, coco


def _progress(items, total: int, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, total=total, desc='images', unit='img')
