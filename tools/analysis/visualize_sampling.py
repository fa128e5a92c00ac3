"""Where deformable attention samples, for one or more trained detectors.

    python tools/analysis/visualize_sampling.py CONFIG CHECKPOINT IMAGE_OR_FOLDER --out DIR \
        [--compare CONFIG2 CHECKPOINT2 ...] [--top 3] [--token X Y] [--num-images 16] [--draw 2]

For the first --draw images it draws, per detector, the decoder's last-layer sampling points of
each of the --top detections' queries over the image (colour: feature level; size: attention
weight; x: the reference point; the detection's box), and the same for one encoder token (the
token of the finest level at pixel --token X Y, default the centre of the best detection).

Over the first --num-images images it reports, per detector, encoder and decoder, the share of
attention weight on each feature level, the share of each level's weight on samples on the map
(off it they read zeros), and the attention-weighted mean distance of the on-map samples from the
reference point (input pixels and level tokens): DIR/sampling.json and
DIR/sampling.png, the detectors side by side (tools/analysis/analyze_attention.py does the same for the
backbones). The locations are recorded from the deformable attention modules as they run
(pit_det.models.record_sampling); nothing of the computation changes.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

import pit_det  # noqa: F401  registers pit-det's transforms and models
from pit_det.analysis.plots import draw_sampling, plot_sampling_statistics
from pit_det.analysis.sampling import RecordedDetector, mean_over_images, summarize
from pit_det.errors import PitDetError, run_tool
from pit_det.inference import image_named_on_failure
from pit_det_deploy import image_files
from pit_det_deploy.hardware import cpu_info
from pit_det_deploy.outputs import output_folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('images', help='an image or a folder of images')
    parser.add_argument(
        '--compare',
        nargs=2,
        action='append',
        default=[],
        metavar=('CONFIG', 'CHECKPOINT'),
        help='another detector, side by side (repeatable)',
    )
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--top', type=int, default=3, help='detections drawn per image (default 3)')
    parser.add_argument(
        '--token',
        nargs=2,
        type=float,
        metavar=('X', 'Y'),
        help="encoder token to draw, in image pixels (default: the best detection's centre)",
    )
    parser.add_argument('--num-images', type=int, default=16, help='images for the statistics (default 16)')
    parser.add_argument('--draw', type=int, default=2, help='images drawn per detector (default 2)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.top < 1 or args.num_images < 1:
        raise PitDetError('--top and --num-images must be at least 1')
    if args.token and not all(math.isfinite(v) for v in args.token):
        raise PitDetError(f'--token {args.token[0]} {args.token[1]}: give the pixel as two finite numbers')
    files = image_files(Path(args.images))
    output_folder(args.out)
    detectors = [RecordedDetector(c, k) for c, k in [(args.config, args.checkpoint), *args.compare]]
    if len({d.name for d in detectors}) < len(detectors):
        raise PitDetError(f'two detectors share the name {[d.name for d in detectors]}: compare different configs')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for detector in detectors:
        per_image = []
        for i, path in enumerate(files[: max(args.num_images, args.draw)]):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # the test pipeline would draw a blank one
            if image is None:
                raise PitDetError(f'cannot read image {path}')
            with image_named_on_failure(path, image):
                result = detector.run(path)
            if i < args.draw:
                draw_sampling(detector, path, image, result, args.top, args.token, out)
            if i < args.num_images:
                per_image.append(summarize(result[2], result[3]))
        results[detector.name] = mean_over_images(per_image)
        for part, stats in results[detector.name].items():
            print(
                f'{detector.name} {part}: weight per level {np.round(np.mean(stats["level_mass"], 0), 3).tolist()}, '
                f'on the map {np.round(np.mean(stats["on_map"], 0), 3).tolist()}, '
                f'mean on-map distance {np.mean(stats["distance_px_all"]):.1f} px',
                flush=True,
            )
    meta = dict(
        detectors={d.name: c for d, (c, _) in zip(detectors, [(args.config, args.checkpoint), *args.compare])},
        num_images=min(len(files), args.num_images),
        images=str(args.images),
        cpu=cpu_info().describe(),
    )
    (out / 'sampling.json').write_text(json.dumps(dict(meta=meta, results=results), indent=2))
    plot_sampling_statistics(results, out / 'sampling.png')
    print(f'written: {out}/sampling.json, sampling.png and the drawings')


if __name__ == '__main__':
    sys.exit(run_tool(main))
