"""INT8 post-training quantization of a model written by tools/deploy/export.py, calibrated on images.

    python tools/deploy/quantize.py model.onnx --calib IMAGE_FOLDER --out model.int8.onnx \
        [--num-images 32] [--keep-fp32 head sampling]

The result is a QDQ ONNX model (onnxruntime's static quantization: int8 weights per channel, int8
activations with symmetric min / max ranges from the images), with the fp32 model's metadata, so
tools/deploy/onnx_demo.py and tools/deploy/onnx_eval.py run it in onnxruntime or OpenVINO. The
detection head stays fp32 by default; ``--keep-fp32`` keeps more (deformable attention's sampling
projection, the attention products); docs/export.md has the accuracy and speed of each choice.
INT8 is fast only on CPUs with int8 dot products (AVX-512 VNNI, AVX-VNNI, AMX, Arm i8mm); the tool
says which this CPU is.
"""

import argparse
import sys
import time
from pathlib import Path

from pit_det_deploy import DeployError, image_files
from pit_det_deploy.errors import run_tool
from pit_det_deploy.hardware import cpu_info
from pit_det_deploy.outputs import output_file
from pit_det_deploy.quantize import (
    KEEP_FP32,
    add_keep_fp32_argument,
    calibration_inputs,
    keep_groups,
    model_info,
    quantize,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='fp32 .onnx file written by tools/deploy/export.py')
    parser.add_argument('--calib', required=True, help='folder of calibration images (e.g. the training set)')
    parser.add_argument('--out', required=True, help='the INT8 .onnx file to write')
    parser.add_argument(
        '--num-images', type=int, default=32, help='calibration images: the first N, sorted (default 32)'
    )
    add_keep_fp32_argument(parser, 'matmul groups left in fp32')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    keep = keep_groups(args.keep_fp32)
    if not Path(args.model).is_file():
        raise FileNotFoundError(f'no such model file: {args.model}')
    if args.num_images < 1:
        raise DeployError(f'--num-images {args.num_images}: calibrate on at least one image')
    output_file(args.out, [args.model])
    found = image_files(Path(args.calib))
    images = found[: args.num_images]
    if len(images) < args.num_images:
        print(
            f'calibrating on {len(images)} images: {args.calib} has only {len(found)} (asked for {args.num_images})',
            flush=True,
        )
    print(cpu_info().int8_note(), flush=True)
    start = time.perf_counter()
    info = quantize(args.model, args.out, calibration_inputs(images, model_info(args.model)), keep)
    kept = ', '.join(f'{KEEP_FP32[g]} ({n} matmuls)' for g, n in info['fp32_groups'].items()) or 'nothing'
    print(
        f'wrote {args.out}: INT8, calibrated on {len(images)} images from {args.calib} in '
        f'{time.perf_counter() - start:.0f} s; kept in fp32: {kept}'
    )


if __name__ == '__main__':
    sys.exit(run_tool(main))
