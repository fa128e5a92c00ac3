"""COCO dataset that refuses malformed annotation files and reports what it drops."""

from collections import Counter
from typing import List, Union

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS
from mmengine.logging import print_log

from ..errors import DatasetError
from .check import SCHEMA, duplicate_ids, entry_problems, evaluation_problems, read_coco_json, top_level_problem
from .sampler import SeededIndex, seeded_generators


class ValidatedCOCO(COCO):
    """mmdet's COCO api that reads the json through :func:`read_coco_json` and checks every
    entry's schema (:func:`entry_problems`) before indexing it: a malformed file raises
    :class:`DatasetError` naming the file, entries and fields, instead of a ``KeyError`` or
    ``TypeError`` deep in pycocotools, or a NaN box that reaches the loss."""

    def __init__(self, annotation_file=None, for_evaluation: bool = False) -> None:
        super().__init__(None)
        if annotation_file is None:
            return
        self.dataset = read_coco_json(annotation_file)
        problem = top_level_problem(self.dataset)
        if problem:
            raise DatasetError(f'{annotation_file}: {problem}')
        self.dataset.setdefault('annotations', [])  # a test-dev file
        if for_evaluation:  # what only COCO evaluation trips over (training reads these files well)
            problems = evaluation_problems(annotation_file, self.dataset)
            if problems:
                raise DatasetError(
                    f'{annotation_file}: COCO evaluation (pycocotools) would fail or score it wrong: '
                    + '; '.join(example for _, example in problems[:3])
                )
        problems = [
            p for field in SCHEMA for i, e in enumerate(self.dataset[field]) for p in entry_problems(field, i, e)
        ]
        if problems:
            examples = '\n  '.join(example for _, example in problems[:8])
            raise DatasetError(
                f'{annotation_file}: {len(problems)} malformed entries '
                f'({dict(Counter(k for k, _ in problems))}), e.g.\n'
                f'  {examples}\nFix them, or list all with: '
                f'python tools/data/validate_dataset.py {annotation_file} IMAGE_DIR'
            )
        for field in SCHEMA:  # pycocotools would keep the last of each, mmdet asserts on annotations
            duplicates = duplicate_ids(self.dataset[field])
            if duplicates:
                raise DatasetError(
                    f'{annotation_file}: {len(duplicates)} ids used more than once in {field!r}, '
                    f'e.g. {list(duplicates)[:5]}'
                )
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
    * When the config's class names match none of the json's, or every box of a split has a
      category outside them, or 90% of its boxes do while some of the config's class names are not
      in the json (a config for other data with a name in common by chance), the data set is an
      error before training starts: it names both lists of class names and the fix (mmdet would
      train on no boxes and crash in evaluation, mmdet issue #10208). Training on a deliberate
      subset of the json's classes stays possible. A split whose boxes are all unusable for other
      reasons is an error too, and so is a training split with no boxes at all (mmdet trained on
      it with ``loss_bbox`` 0), unless ``negatives_only=True`` says it holds background images
      on purpose (a ConcatDataset part).
    * An evaluation split (``test_mode``) whose file COCO evaluation would fail on or score wrong
      is an error before inference: a UTF-8 byte-order mark, annotation id 0
      (:func:`~pit_det.datasets.check.evaluation_problems`). Training reads such files well.
    * Every config class name must be a json category, in the json's order: mmdet numbers the
      classes by the json's order of the names it finds (``cat_ids``), so a name the json lacks
      shifts the labels after it (and a prediction of the last class ends COCO evaluation in an
      IndexError), and another order trains each class under another's name. Either is an error
      naming both lists.
    """

    accepts_seeded_indices = True  # see SeededSampler

    def __init__(self, *args, negatives_only: bool = False, **kwargs) -> None:
        self.negatives_only = negatives_only  # set before mmdet's __init__ loads the data list
        super().__init__(*args, **kwargs)

    # A split that would lose this share of its boxes to categories outside a config whose class
    # names are not all in the json stops before training (mmdet#10208 with one name in common).
    FOREIGN_CLASS_LIMIT = 0.9

    def __getitem__(self, idx: int) -> dict:
        """``dataset[index]``; a :class:`SeededIndex` from :class:`SeededSampler` runs the pipeline
        (and the refetch after an unreadable image) under generators seeded with its seed."""
        if not isinstance(idx, SeededIndex):
            return super().__getitem__(idx)
        with seeded_generators(idx.seed):
            return super().__getitem__(int(idx))

    def COCOAPI(self, annotation_file: str) -> ValidatedCOCO:  # noqa: N802  mmdet calls self.COCOAPI(path)
        """mmdet reads the annotations through this and deletes the api once loaded; the json's
        category names are kept for the class-name check."""
        coco = ValidatedCOCO(annotation_file, for_evaluation=self.test_mode)
        self._json_classes = [c['name'] for c in coco.dataset['categories']]
        return coco

    def load_data_list(self) -> List[dict]:
        self._dropped: List[str] = []
        self._num_boxes = self._num_unknown_category = 0
        data_list = super().load_data_list()
        if not self.cat_ids or self._mostly_foreign_classes():
            raise DatasetError(self._class_mismatch_message(list(self.metainfo['classes']), self._json_classes))
        self._check_class_order()
        if not self._num_boxes and not self.test_mode and not self.negatives_only:
            raise DatasetError(  # mmdet trained on it with loss_bbox 0
                f'{self.ann_file}: no boxes: nothing to train on (background images to add to a '
                'ConcatDataset: negatives_only=True)'
            )
        if self._num_boxes and len(self._dropped) == self._num_boxes:
            raise DatasetError(
                f'{self.ann_file}: all {self._num_boxes} boxes are unusable, e.g. '
                f'{"; ".join(self._dropped[:3])}. List them with tools/data/validate_dataset.py.'
            )
        if self._dropped:
            print_log(
                f'{self.ann_file}: dropped {len(self._dropped)} of {self._num_boxes} boxes, e.g. '
                f'{"; ".join(self._dropped[:5])}',
                logger='current',
                level=30,
            )
        return data_list

    def _check_class_order(self) -> None:
        classes = list(self.metainfo['classes'])
        found = [name for name in self._json_classes if name in classes]
        if found == classes:
            return
        missing = [name for name in classes if name not in self._json_classes]
        what = (
            f'{missing} of metainfo.classes are not among its categories: the labels after them would shift'
            if missing
            else f'its categories order these classes {found}: each class would train under another name'
        )
        raise DatasetError(
            f'{self.ann_file}: {what}.\n'
            f'  categories in the json:  {self._json_classes}\n'
            f'  config metainfo.classes: {classes}\n'
            "Name json categories only, in the json's order, in every loader's metainfo.classes, and set "
            'model.bbox_head.num_classes to their number.'
        )

    def _mostly_foreign_classes(self) -> bool:
        """Every box, or at least :attr:`FOREIGN_CLASS_LIMIT` of them, has a category outside the
        config's classes while some of the config's class names are not in the json: a mismatch (a
        config for other data), not a deliberate subset, whose names would all be in the json."""
        if not self._num_boxes:
            return False
        foreign = self._num_unknown_category / self._num_boxes
        if foreign == 1:
            return True
        missing = set(self.metainfo['classes']) - set(self._json_classes)
        return bool(missing) and foreign >= self.FOREIGN_CLASS_LIMIT

    def _class_mismatch_message(self, classes: List[str], json_names: List[str]) -> str:
        def show(names: List[str]) -> str:
            return repr(names[:12])[:-1] + (f', ... ({len(names)} in all)]' if len(names) > 12 else ']')

        if not self.cat_ids:
            what = "none of the config's class names is among its categories"
        elif self._num_unknown_category == self._num_boxes:
            what = f'all {self._num_boxes} of its boxes have categories outside metainfo.classes'
        else:
            what = (
                f'{self._num_unknown_category} of its {self._num_boxes} boxes have categories outside '
                f"metainfo.classes, and {len(set(classes) - set(json_names))} of the config's class names "
                'are not among its categories'
            )
        fix = ''
        if not any(c in name for name in json_names for c in ' ,\'"[]()'):  # what --cfg-options can spell
            names = ','.join(json_names)
            fix = (
                '  --cfg-options '
                + ' '.join(
                    f'{loader}.dataset.metainfo.classes="[{names}]"'
                    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
                )
                + f' model.bbox_head.num_classes={len(json_names)}\nor in a config:\n'
            )
        return (
            f'{self.ann_file}: {what}.\n'
            f'  categories in the json:  {show(json_names)}\n'
            f'  config metainfo.classes: {show(classes)}\n'
            "Train on the json's classes with\n" + fix + f'  metainfo = dict(classes={tuple(json_names)!r})\n'
            '  train_dataloader = dict(dataset=dict(metainfo=metainfo))\n'
            '  val_dataloader = dict(dataset=dict(metainfo=metainfo))\n'
            '  test_dataloader = val_dataloader\n'
            f'  model = dict(bbox_head=dict(num_classes={len(json_names)}))'
        )

    def parse_data_info(self, raw_data_info: dict) -> Union[dict, List[dict]]:
        """mmdet 3.3.0's ``CocoDataset.parse_data_info``, and a record of each box it dropped and why.

        Which boxes mmdet dropped is read from its result (its instances keep the raw order),
        not re-derived from its rules; the reason is an unknown category, an area of 0 or less, or
        else a degenerate box or one outside the image (mmdet's other rules).
        """
        data_info = super().parse_data_info(raw_data_info)
        img_info = raw_data_info['raw_img_info']
        instances = iter(data_info['instances'])
        kept = next(instances, None)
        for ann in raw_data_info['raw_ann_info']:
            if ann.get('ignore', False):  # mmdet skips these without a word; so does pit-det
                continue
            self._num_boxes += 1
            x1, y1, w, h = ann['bbox']
            if (
                kept is not None
                and kept['bbox'] == [x1, y1, x1 + w, y1 + h]
                and kept['bbox_label'] == self.cat2label.get(ann['category_id'])
            ):
                kept = next(instances, None)
            elif ann['category_id'] not in self.cat_ids:
                self._num_unknown_category += 1
                name = self.coco.cats.get(ann['category_id'], {}).get('name')
                self._dropped.append(
                    f'annotation {ann.get("id")} of {img_info["file_name"]}: category '
                    f'{ann["category_id"]} ({name!r}) not in metainfo.classes'
                )
            elif w > 0 and h > 0 and ann['area'] <= 0:
                self._dropped.append(
                    f'annotation {ann.get("id")} of {img_info["file_name"]}: area {ann["area"]} (mmdet drops '
                    f'boxes with area 0 or less; for a box alone area is w * h), bbox {ann["bbox"]}'
                )
            else:
                self._dropped.append(
                    f'annotation {ann.get("id")} of {img_info["file_name"]}: degenerate '
                    f'or outside the image, bbox {ann["bbox"]}'
                )
        return data_info
