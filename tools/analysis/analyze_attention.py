"""Attention entropy and distance per layer of PiT / ViT backbones (PiT paper Sec. 3.3, Fig. 5).

Examples:
    # ImageNet checkpoints, 32 COCO val images at 224 x 224
    python tools/analysis/analyze_attention.py --backbone pit_s=checkpoints/pit_s_809.pth \\
        --backbone vit_s=checkpoints/deit_small_patch16_224-cd65a155.pth \\
        --coco data/coco/annotations/instances_val2017.json data/coco/val2017 --num-images 32
    # a trained detector's backbone, random-weight ViT for contrast, half-resolution images
    python tools/analysis/analyze_attention.py --backbone pit_s=work_dirs/deformable_detr_pit_s/epoch_50.pth \\
        --backbone vit_s=random --images my_images/ --size 400 667

Writes <out-dir>/attention_stats.json (per-layer values) and attention_stats.png.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
from tqdm import tqdm

import pit_det  # noqa: F401  registers the backbones
from pit_det.analysis.attention import analyze_backbone, build_backbone, load_image
from pit_det.analysis.plots import plot_attention_statistics
from pit_det.errors import run_tool
from pit_det_deploy import image_files


def list_images(args: argparse.Namespace) -> List[Path]:
    if args.coco:
        ann, img_dir = args.coco
        with open(ann) as f:
            files = [Path(img_dir) / im['file_name'] for im in json.load(f)['images']]
    else:
        files = image_files(Path(args.images))
    if not files:
        raise FileNotFoundError(f'no images found in {args.coco or args.images}')
    return files[: args.num_images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--backbone', action='append', required=True, help='pit_s=PATH|random or vit_s=PATH|random; repeat to compare'
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', help='folder of images')
    source.add_argument('--coco', nargs=2, metavar=('ANN_JSON', 'IMG_DIR'), help='COCO split')
    parser.add_argument('--num-images', type=int, default=16)
    parser.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--out-dir', default='work_dirs/attention')
    args = parser.parse_args()

    files = list_images(args)
    models = {spec.partition('=')[0]: build_backbone(spec) for spec in args.backbone}
    sums: Dict[str, dict] = {}
    for path in tqdm(files, desc='images', unit='img'):
        image = load_image(path, args.size)[None]
        for name, model in models.items():
            res = analyze_backbone(model, image)
            acc = sums.setdefault(
                name,
                {
                    'entropy': np.zeros(len(res['entropy'])),
                    'distance': np.zeros(len(res['distance'])),
                    'stage': res['stage'],
                },
            )
            acc['entropy'] += res['entropy']
            acc['distance'] += res['distance']
    results = {
        name: {
            'entropy': (acc['entropy'] / len(files)).tolist(),
            'distance': (acc['distance'] / len(files)).tolist(),
            'stage': acc['stage'],
        }
        for name, acc in sums.items()
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(
        backbones=args.backbone,
        num_images=len(files),
        size=list(args.size),
        note='last block skipped (paper Sec. 3.3); spatial tokens only; distance in grid-relative units',
    )
    (out / 'attention_stats.json').write_text(json.dumps(dict(meta=meta, layers=results), indent=2))
    plot_attention_statistics(results, out / 'attention_stats.png')
    for name, res in results.items():
        print(name, 'entropy', ' '.join(f'{v:.2f}' for v in res['entropy']))
        print(name, 'distance', ' '.join(f'{v:.3f}' for v in res['distance']))
    print(f'wrote {out / "attention_stats.json"} and {out / "attention_stats.png"}')


if __name__ == '__main__':
    sys.exit(run_tool(main))
