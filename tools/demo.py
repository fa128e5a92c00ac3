"""Run a detector on an image or a folder and draw its detections.

    python tools/demo.py IMAGE_OR_FOLDER CONFIG CHECKPOINT --out DIR [--score-thr 0.3]

Writes DIR/<image name>.png with boxes, class names and scores (mmdet's visualizer) and
DIR/detections.json with every detection above the threshold (boxes as x1, y1, x2, y2 pixels).
"""
import argparse
import json
import sys
from pathlib import Path

import mmcv
from mmdet.apis import inference_detector, init_detector
from mmdet.registry import VISUALIZERS
from tqdm import tqdm

import pit_det  # noqa: F401  checkpoints are read weights-only (pit_det.checkpoint)
from pit_det.errors import run_tool

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.webp'}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()

    src = Path(args.inputs)
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f'no images found at {src}')
    model = init_detector(args.config, args.checkpoint, device=args.device,
                          cfg_options={'model.backbone.init_cfg': None})
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    classes = model.dataset_meta['classes']
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in tqdm(files, desc='images', unit='img'):
        img = mmcv.imread(str(path), channel_order='rgb')
        if img is None:
            raise OSError(f'cannot read image {path}')
        result = inference_detector(model, str(path))
        visualizer.add_datasample(path.stem, img, data_sample=result, draw_gt=False, show=False,
                                  pred_score_thr=args.score_thr, out_file=str(out / f'{path.stem}.png'))
        pred = result.pred_instances[result.pred_instances.scores >= args.score_thr]
        records.append(dict(file=str(path), detections=[
            dict(bbox=[round(v, 2) for v in box.tolist()], score=round(float(score), 4), label=int(label),
                 name=classes[int(label)])
            for box, score, label in zip(pred.bboxes, pred.scores, pred.labels)]))
    (out / 'detections.json').write_text(json.dumps(records, indent=2))
    print(f'wrote {len(files)} pictures and detections.json to {out}')


if __name__ == '__main__':
    sys.exit(run_tool(main))
