"""COCO dataset that reports what it drops."""
from typing import List, Union

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.logging import print_log


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset``, warning about the annotations it drops.

    mmdet silently discards boxes with zero or negative width / height, zero area, no
    overlap with the image, or an unknown category. Here each dropped box is counted and,
    once the annotations are loaded, one warning lists how many and the first few, so a
    broken annotation file is noticed before days of training.
    """

    def load_data_list(self) -> List[dict]:
        self._dropped: List[str] = []
        data_list = super().load_data_list()
        if self._dropped:
            print_log(f'{self.ann_file}: dropped {len(self._dropped)} unusable boxes, e.g. '
                      f'{"; ".join(self._dropped[:5])}', logger='current', level=30)
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> Union[dict, List[dict]]:
        img_info = raw_data_info['raw_img_info']
        for ann in raw_data_info['raw_ann_info']:
            if ann.get('ignore', False):
                continue
            x1, y1, w, h = ann['bbox']
            inter_w = max(0, min(x1 + w, img_info['width']) - max(x1, 0))
            inter_h = max(0, min(y1 + h, img_info['height']) - max(y1, 0))
            if inter_w * inter_h == 0 or ann.get('area', w * h) <= 0 or w < 1 or h < 1:
                self._dropped.append(f'annotation {ann.get("id")} of {img_info["file_name"]}: degenerate '
                                     f'or outside the image, bbox {ann["bbox"]}')
            elif ann['category_id'] not in self.cat_ids:
                self._dropped.append(f'annotation {ann.get("id")} of {img_info["file_name"]}: unknown '
                                     f'category {ann["category_id"]}')
        return super().parse_data_info(raw_data_info)
