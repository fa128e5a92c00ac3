"""Run a detector on an image or a folder and draw its detections.

    python tools/demo.py IMAGE_OR_FOLDER CONFIG CHECKPOINT --out DIR [--score-thr 0.3]

Writes DIR/<image name>.png with boxes, class names and scores (``pit_det_deploy.draw``, the
picture ``tools/deploy/onnx_demo.py`` draws too) and DIR/detections.json with every detection above the
threshold (boxes as x1, y1, x2, y2 pixels).
"""

import argparse
import json
import sys
from pathlib import Path

import cv2
import torch
from mmdet.apis import inference_detector
from tqdm import tqdm

from pit_det.errors import PitDetError, run_tool
from pit_det.inference import image_named_on_failure
from pit_det.models import load_detector
from pit_det_deploy import detection_record, draw_detections, image_files
from pit_det_deploy.draw import unreadable_images
from pit_det_deploy.outputs import picture_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()

    files = image_files(Path(args.inputs))
    pictures = picture_paths(files, args.out)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise PitDetError(f'--device {args.device}: no CUDA GPU visible; use --device cpu')
    model = load_detector(args.config, args.checkpoint, args.device)  # every weight, or an error naming what differs
    classes = model.dataset_meta['classes']  # as the export names them
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, unreadable = [], []
    for path, picture in zip(tqdm(files, desc='images', unit='img'), pictures):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR, as mmdet's loader reads it
        if img is None:  # the others are still drawn; named at the end
            unreadable.append(path)
            continue
        with image_named_on_failure(path, img):
            result = inference_detector(model, str(path))  # the test pipeline, its loader included
        pred = result.pred_instances.cpu()
        cv2.imwrite(
            str(picture),
            draw_detections(
                img, pred.bboxes.numpy(), pred.scores.numpy(), pred.labels.numpy(), classes, args.score_thr
            ),
        )
        records.append(
            detection_record(
                path, pred.bboxes.numpy(), pred.scores.numpy(), pred.labels.numpy(), classes, args.score_thr
            )
        )
    (out / 'detections.json').write_text(json.dumps(records, indent=2))
    print(f'wrote {len(records)} pictures and detections.json to {out}')
    if unreadable:
        raise PitDetError(unreadable_images(unreadable, len(files), out))


if __name__ == '__main__':
    sys.exit(run_tool(main))
