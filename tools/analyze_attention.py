"""Attention entropy and distance per layer of PiT / ViT backbones (PiT paper Sec. 3.3, Fig. 5).

Examples:
    # ImageNet checkpoints, 32 COCO val images at 224 x 224
    python tools/analyze_attention.py --backbone pit_s=checkpoints/pit_s_809.pth \\
        --backbone vit_s=checkpoints/deit_small_patch16_224-cd65a155.pth \\
        --coco data/coco/annotations/instances_val2017.json data/coco/val2017 --num-images 32
    # a trained detector's backbone, random-weight ViT for contrast, half-resolution images
    python tools/analyze_attention.py --backbone pit_s=work_dirs/deformable_detr_pit_s/epoch_50.pth \\
        --backbone vit_s=random --images my_images/ --size 400 667

Writes <out-dir>/attention_stats.json (per-layer values) and attention_stats.png.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import torch
from mmdet.registry import MODELS
from tqdm import tqdm

import pit_det  # noqa: F401  registers the backbones
from pit_det.attention_stats import analyze_backbone
from pit_det.checkpoint import load_pretrained
from pit_det.errors import run_tool
from pit_det.models import pit as pit_module
from pit_det.models import vit as vit_module
from pit_det_deploy import image_files

MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])


def build_backbone(spec: str) -> torch.nn.Module:
    """``pit_s=PATH`` / ``vit_s=random``: arch name, then a checkpoint (ImageNet or detector) or 'random'."""
    name, _, source = spec.partition('=')
    kind, _, arch = name.partition('_')
    if kind == 'pit':
        model = MODELS.build(dict(type='PiT', arch=arch, out_indices=(0, 1, 2)))
        filter_fn = pit_module.checkpoint_filter_fn
    elif kind == 'vit':
        model, filter_fn = MODELS.build(dict(type='ViT', arch=arch, out_indices=(11,))), vit_module.checkpoint_filter_fn
    else:
        raise ValueError(f'--backbone {spec!r}: expected pit_<arch>=SOURCE or vit_<arch>=SOURCE')
    if source and source != 'random':
        load_pretrained(model, source, filter_fn)
    return model.eval()


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


def load_image(path: Path, size) -> torch.Tensor:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f'cannot read image {path}')
    img = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy((img - MEAN) / STD).permute(2, 0, 1).float()


def plot(results: Dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, res in results.items():
        layers = range(1, len(res['entropy']) + 1)
        axes[0].plot(layers, res['entropy'], marker='o', label=name)
        axes[1].plot(layers, res['distance'], marker='o', label=name)
    for ax, title in zip(axes, ('attention entropy (nats)', 'normalized attention distance')):
        ax.set_xlabel('layer')
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    plot(results, out / 'attention_stats.png')
    for name, res in results.items():
        print(name, 'entropy', ' '.join(f'{v:.2f}' for v in res['entropy']))
        print(name, 'distance', ' '.join(f'{v:.3f}' for v in res['distance']))
    print(f'wrote {out / "attention_stats.json"} and {out / "attention_stats.png"}')


if __name__ == '__main__':
    sys.exit(run_tool(main))
