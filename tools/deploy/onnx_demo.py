"""Run an exported detector with onnxruntime or OpenVINO alone (no PyTorch, no OpenMMLab) and draw it.

    python tools/deploy/onnx_demo.py IMAGE_OR_FOLDER model.onnx --out DIR [--score-thr 0.3] \
        [--runtime onnxruntime|openvino]

Writes the picture ``tools/demo.py`` writes (DIR/<image name>.png) and DIR/detections.json.
Needs only the runtime, numpy and OpenCV, with this repository's ``pit_det_deploy`` package
importable (installed with pit-det, or run from the repository root).
"""

import argparse
import json
import sys
from pathlib import Path

import cv2

from pit_det_deploy import RUNTIMES, DeployError, OnnxDetector, detection_record, draw_detections, image_files
from pit_det_deploy.draw import unreadable_images
from pit_det_deploy.errors import run_tool
from pit_det_deploy.outputs import picture_paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('model', help='.onnx file written by tools/deploy/export.py')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--runtime', choices=RUNTIMES, default='onnxruntime', help='default: onnxruntime')
    parser.add_argument('--threads', type=int, default=0, help="the runtime's threads (default: its own choice)")
    args = parser.parse_args(argv)
    files = image_files(Path(args.inputs))
    pictures = picture_paths(files, args.out)
    if not Path(args.model).is_file():
        raise FileNotFoundError(f'no such model file: {args.model}')
    if args.threads < 0:
        raise DeployError(f'--threads {args.threads}: 0 (the runtime chooses) or more')
    detector = OnnxDetector(args.model, threads=args.threads, runtime=args.runtime)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, unreadable = [], []
    for path, picture in zip(files, pictures):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:  # the others are still drawn; named at the end
            unreadable.append(path)
            continue
        try:
            boxes, scores, labels = detector(image)
        except DeployError as e:
            raise DeployError(f'{path}: {e}') from None
        cv2.imwrite(
            str(picture),
            draw_detections(image, boxes, scores, labels, detector.classes, args.score_thr),
        )
        records.append(detection_record(path, boxes, scores, labels, detector.classes, args.score_thr))
    (out / 'detections.json').write_text(json.dumps(records, indent=2))
    print(f'wrote {len(records)} pictures and detections.json to {out}')
    if unreadable:
        raise DeployError(unreadable_images(unreadable, len(files), out))


if __name__ == '__main__':
    sys.exit(run_tool(main))
