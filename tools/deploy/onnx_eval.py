"""COCO box AP of an exported detector (fp32 or INT8) in onnxruntime or OpenVINO.

    python tools/deploy/onnx_eval.py model.onnx --ann ANN.json --img-dir IMAGES \
        [--runtime onnxruntime|openvino] [--out results.json]

Runs every image of the annotation file through the model and scores all its detections with
pycocotools' COCOeval, the evaluation tools/test.py runs through mmdet. Prints AP, AP50, AP75 and
the median time of the runtime call per image, naming the processor.
"""

import argparse
import json
import sys
from pathlib import Path

from pit_det_deploy import RUNTIMES
from pit_det_deploy.errors import run_tool
from pit_det_deploy.evaluate import evaluate_onnx
from pit_det_deploy.hardware import cpu_info
from pit_det_deploy.outputs import output_file


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='.onnx file written by tools/deploy/export.py or tools/deploy/quantize.py')
    parser.add_argument('--ann', required=True, help='COCO annotation file')
    parser.add_argument('--img-dir', required=True, help='folder of its images')
    parser.add_argument('--runtime', choices=RUNTIMES, default='onnxruntime')
    parser.add_argument('--threads', type=int, default=0, help="the runtime's threads (default: its own choice)")
    parser.add_argument('--out', help='also write the results as JSON')
    args = parser.parse_args(argv)
    for path in (args.model, args.ann, args.img_dir):
        if not Path(path).exists():
            raise FileNotFoundError(f'no such file or folder: {path}')
    if args.out:
        output_file(args.out, [args.model, args.ann])
    result = evaluate_onnx(args.model, args.ann, args.img_dir, args.runtime, args.threads)
    result.update(model=args.model, cpu=cpu_info().describe())
    print(
        f'{args.model} ({result["precision"]}) in {args.runtime} on {result["cpu"]}: '
        f'AP {result["bbox_mAP"]:.3f}, AP50 {result["bbox_mAP_50"]:.3f}, AP75 {result["bbox_mAP_75"]:.3f} '
        f'over {result["images"]} images, median {result["latency_ms"]:.1f} ms per image'
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == '__main__':
    sys.exit(run_tool(main))
