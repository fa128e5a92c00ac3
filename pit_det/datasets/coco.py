"""COCO dataset that refuses malformed annotation files and reports what it drops."""
from collections import Counter
from typing import List, Union

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS
from mmengine.logging import print_log

from ..errors import DatasetError
from .check import SCHEMA, entry_problems, read_coco_json, top_level_problem


class ValidatedCOCO(COCO):
    """mmdet's COCO api that reads the json through :func:`read_coco_json` and checks every
    entry's schema (:func:`entry_problems`) before indexing it: a malformed file raises
    :class:`DatasetError` naming the file, entries and fields, instead of a ``KeyError`` or
    ``TypeError`` deep in pycocotools, or a NaN box that reaches the loss."""

    def __init__(self, annotation_file=None) -> None:
        super().__init__(None)
        if annotation_file is None:
            return
        self.dataset = read_coco_json(annotation_file)
        problem = top_level_problem(self.dataset)
        if problem:
            raise DatasetError(f'{annotation_file}: {problem}')
        problems = [p for field in SCHEMA for i, e in enumerate(self.dataset[field]) for p in entry_problems(field, i, e)]
        if problems:
            examples = '\n  '.join(example for _, example in problems[:8])
            raise DatasetError(
                f'{annotation_file}: {len(problems)} malformed entries ({dict(Counter(k for k, _ in problems))}), e.g.\n'
                f'  {examples}\nFix them, or list all with: python tools/check_dataset.py {annotation_file} IMAGE_DIR')
        self.createIndex()
        # What mmdet's COCO.__init__ sets after pycocotools' own.
        self.img_ann_map, self.cat_img_map = self.imgToAnns, self.catToImgs


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` that refuses what cannot be trained on and warns about what it drops.

    * A malformed annotation file (missing fields, wrong types, NaN / infinite or non-numeric
      boxes) is an error naming the file, entries and fields (:class:`ValidatedCOCO`).
    * mmdet silently discards boxes with zero or negative width / height, zero area, no overlap
      with the image, or a category not among the config's ``metainfo.classes``. Each dropped box
      is counted, and one warning lists how many and the first few, categories by name.
    * When the config's class names match none of the json's, or a split's boxes are all dropped,
      the data set is an error before training starts: it names both lists of class names and the
      fix. (mmdet would train on no boxes and crash in evaluation, mmdet issue #10208.) Training
      on a deliberate subset of the json's classes stays possible.
    """

    COCOAPI = ValidatedCOCO

    def load_data_list(self) -> List[dict]:
        self._dropped: List[str] = []
        self._num_boxes = 0
        data_list = super().load_data_list()
        classes = list(self.metainfo['classes'])
        json_names = [c['name'] for c in self.coco.dataset['categories']]
        if not self.cat_ids or (self._num_boxes and len(self._dropped) == self._num_boxes):
            raise DatasetError(self._class_mismatch_message(classes, json_names))
        if self._dropped:
            print_log(f'{self.ann_file}: dropped {len(self._dropped)} of {self._num_boxes} boxes, e.g. '
                      f'{"; ".join(self._dropped[:5])}', logger='current', level=30)
        return data_list

    def _class_mismatch_message(self, classes: List[str], json_names: List[str]) -> str:
        def show(names: List[str]) -> str:
            return repr(names[:12])[:-1] + (f', ... ({len(names)} in all)]' if len(names) > 12 else ']')

        what = ('none of the config\'s class names is among its categories' if not self.cat_ids
                else f'all {self._num_boxes} of its boxes were dropped (e.g. {self._dropped[0]})')
        names = ','.join(json_names)
        return (f'{self.ann_file}: {what}.\n'
                f'  categories in the json:       {show(json_names)}\n'
                f'  config metainfo.classes:      {show(classes)}\n'
                'Train on the json\'s classes with\n'
                f'  --cfg-options train_dataloader.dataset.metainfo.classes="[{names}]" '
                f'val_dataloader.dataset.metainfo.classes="[{names}]" '
                f'test_dataloader.dataset.metainfo.classes="[{names}]" model.bbox_head.num_classes={len(json_names)}\n'
                'or a config that sets metainfo = dict(classes=(...)) in each dataset and model.bbox_head.num_classes.')

    def parse_data_info(self, raw_data_info: dict) -> Union[dict, List[dict]]:
        img_info = raw_data_info['raw_img_info']
        for ann in raw_data_info['raw_ann_info']:
            if ann.get('ignore', False):
                continue
            self._num_boxes += 1
            x1, y1, w, h = ann['bbox']
            inter_w = max(0, min(x1 + w, img_info['width']) - max(x1, 0))
            inter_h = max(0, min(y1 + h, img_info['height']) - max(y1, 0))
            if inter_w * inter_h == 0 or ann.get('area', w * h) <= 0 or w < 1 or h < 1:
                self._dropped.append(f'annotation {ann.get("id")} of {img_info["file_name"]}: degenerate '
                                     f'or outside the image, bbox {ann["bbox"]}')
            elif ann['category_id'] not in self.cat_ids:
                name = self.coco.cats.get(ann['category_id'], {}).get('name')
                self._dropped.append(f'annotation {ann.get("id")} of {img_info["file_name"]}: category '
                                     f'{ann["category_id"]} ({name!r}) not in metainfo.classes')
        return super().parse_data_info(raw_data_info)
