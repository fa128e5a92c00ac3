"""Validate a COCO-format detection set before training: missing fields, wrong types, NaN /
infinite / non-numeric boxes, missing, unreadable or corrupt images, grayscale / alpha / 16-bit
images, sizes that disagree with the json, degenerate or out-of-image boxes, unknown categories,
duplicate ids, images smaller than a patch.

    python tools/data/validate_dataset.py data/coco/annotations/instances_train2017.json data/coco/train2017 --workers 8

Prints counts and the first offending entries (file, entry, field) per problem; exits 1 when errors
are found, or with one line naming the file when it is not a COCO detection json.
"""

import argparse
import sys

from pit_det.datasets.check import check_coco
from pit_det.errors import run_tool


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('ann_file', help='COCO json')
    parser.add_argument('img_dir', help='folder of the images')
    parser.add_argument('--min-size', type=int, default=16, help='smallest image side (one backbone patch)')
    parser.add_argument('--workers', type=int, default=0, help='processes decoding images')
    args = parser.parse_args()
    report, coco = check_coco(args.ann_file, args.img_dir, args.min_size, args.workers, progress=sys.stderr.isatty())
    print(report.summary(len(coco['images']), len(coco['annotations'])))
    return 1 if report.num_errors else 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
