"""Export a trained detector to ONNX, with its post-processing, for onnxruntime and OpenVINO.

    python tools/deploy/export.py CONFIG CHECKPOINT --out model.onnx [--shape H W] [--dynamic] \
        [--msda grid_sample|gather|fused|trt_plugin] [--opset 18]

The graph takes a normalised image (1, 3, H, W) and returns ``boxes`` (1, k, 4; x1, y1, x2, y2 in
input pixels), ``scores`` (1, k) and ``labels`` (1, k). The test pipeline's resize and
normalisation, and the class names, are stored in the model's metadata (``pit_det``, JSON), which
``tools/deploy/onnx_demo.py`` / ``pit_det_deploy`` read. Deformable attention is exported as standard ONNX
ops: one GridSample per level (default; runs anywhere), or with ``--msda gather`` Gather and
arithmetic with no GridSample (meant for TensorRT, not yet run in TensorRT), or with ``--msda fused``
as one node, ``pit_det::MultiScaleDeformableAttention``, which pit-det's own C++ kernel runs inside
onnxruntime and OpenVINO (the fastest graph; ``pit_det_deploy`` builds the runtime's library for it;
docs/export.md), or with ``--msda trt_plugin`` as TensorRT's ``MultiscaleDeformableAttnPlugin_TRT``
node (for TensorRT only; not yet run in TensorRT).
Without ``--dynamic`` the model takes exactly ``--shape`` inputs; with it, any height and width
within the range it prints.
"""

import argparse
import sys

import torch

from pit_det.config import ConfigOptions, load_config
from pit_det.errors import PitDetError, run_tool
from pit_det.export import GRAPHS, build_detector, export_onnx, preprocessing_of
from pit_det.export.program import MAX_DYNAMIC_SIZE
from pit_det_deploy.outputs import output_file


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument(
        '--shape',
        nargs=2,
        type=int,
        metavar=('H', 'W'),
        help='example input size (default: the test resize of a 4:3 image, e.g. 400 x 533)',
    )
    parser.add_argument('--dynamic', action='store_true', help='any input height and width within a range')
    parser.add_argument(
        '--min-size',
        type=int,
        help='--dynamic: smallest side (default: the smallest that gives the encoder num_queries tokens)',
    )
    parser.add_argument(
        '--msda',
        choices=sorted(GRAPHS),
        default='grid_sample',
        help="deformable attention as GridSample (default), as Gather and arithmetic, as pit-det's fused op, "
        "or as TensorRT's plugin (not yet run in TensorRT)",
    )
    parser.add_argument(
        '--opset', type=int, default=18, help='ONNX opset (default 18; the gather graph comes out at 18 or more)'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=ConfigOptions,
        metavar='KEY=VALUE',
        help='config overrides, e.g. model.num_queries=100',
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    output_file(args.out, [args.config, args.checkpoint])
    if args.shape and min(args.shape) < 1:
        raise PitDetError(f'--shape {args.shape[0]} {args.shape[1]}: both sides at least 1 pixel')
    if args.min_size is not None and not 1 <= args.min_size <= MAX_DYNAMIC_SIZE:
        raise PitDetError(f'--min-size {args.min_size}: from 1 to {MAX_DYNAMIC_SIZE} pixels')
    cfg = load_config(args.config, cfg_options=args.cfg_options)
    detector = build_detector(cfg, args.checkpoint)
    preprocess = preprocessing_of(cfg)
    if args.shape:
        h, w = args.shape
    else:  # a 4:3 landscape image through the test resize
        from pit_det_deploy.preprocess import rescale_size

        w, h = rescale_size(640, 480, preprocess['resize_scale'])
    image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    info = export_onnx(
        detector,
        image,
        args.out,
        dynamic=args.dynamic,
        opset=args.opset,
        min_size=args.min_size,
        msda=args.msda,
        metadata=dict(preprocess=preprocess, classes=detector.dataset_meta['classes'], config=args.config),
    )
    size = (
        f'any {info["min_size"]}..{info["max_size"]} x {info["min_size"]}..{info["max_size"]}'
        if args.dynamic
        else f'{h} x {w}'
    )
    print(
        f'wrote {args.out}: inputs {size}, opset {args.opset}, deformable attention as {args.msda}, '
        f'{len(info["classes"])} classes'
    )


if __name__ == '__main__':
    sys.exit(run_tool(main))
