"""Where deformable attention samples, for one or more trained detectors.

    python tools/visualize_sampling.py CONFIG CHECKPOINT IMAGE_OR_FOLDER --out DIR \
        [--compare CONFIG2 CHECKPOINT2 ...] [--top 3] [--token X Y] [--num-images 16] [--draw 2]

For the first --draw images it draws, per detector, the decoder's last-layer sampling points of
each of the --top detections' queries over the image (colour: feature level; size: attention
weight; x: the reference point; the detection's box), and the same for one encoder token (the
token of the finest level at pixel --token X Y, default the centre of the best detection).

Over the first --num-images images it reports, per detector, encoder and decoder, the share of
attention weight on each feature level, the share of each level's weight on samples on the map
(off it they read zeros), and the attention-weighted mean distance of the on-map samples from the
reference point (input pixels and level tokens): DIR/sampling.json and
DIR/sampling.png, the detectors side by side (tools/analyze_attention.py does the same for the
backbones). The locations are recorded from the deformable attention modules as they run
(pit_det.models.record_sampling); nothing of the computation changes.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from mmcv.transforms import Compose
from mmdet.utils import get_test_pipeline_cfg
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

import pit_det  # noqa: F401  registers pit-det's transforms and models
from pit_det import sampling_stats
from pit_det.config import load_config
from pit_det.errors import PitDetError, run_tool
from pit_det.export import classes_of
from pit_det.models import build_detector
from pit_det.table5 import detector_key
from pit_det_deploy import image_files
from pit_det_deploy.hardware import cpu_info


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


class Detector:
    """A trained detector, its test pipeline and its name."""

    def __init__(self, config: str, checkpoint: str) -> None:
        cfg = load_config(config)
        init_default_scope(cfg.get('default_scope', 'mmdet'))  # the pipeline's transforms are mmdet's
        self.name = detector_key(config) or Path(config).stem
        self.model = build_detector(cfg, checkpoint).eval()
        self.pipeline = Compose(get_test_pipeline_cfg(cfg))
        self.classes = classes_of(cfg, checkpoint)

    def run(self, path: Path) -> Tuple[torch.Tensor, torch.Tensor, List[dict], Tuple[int, int], np.ndarray]:
        """(logits, boxes, records, input (H, W), scale (w, h)) of one image through the test pipeline."""
        data = self.pipeline(dict(img_path=str(path), img_id=0))
        batch = self.model.data_preprocessor(pseudo_collate([data]), False)
        image, sample = batch['inputs'], batch['data_samples'][0]
        logits, boxes, records = sampling_stats.run_recorded(self.model, image)
        return logits, boxes, records, tuple(image.shape[-2:]), np.asarray(sample.scale_factor)


def encoder_token(record: dict, input_hw: Tuple[int, int], xy_input: Tuple[float, float]) -> int:
    """Index of the finest level's token at input pixel ``xy_input``."""
    H_l, W_l = record['spatial_shapes'][0].tolist()
    col = min(max(int(xy_input[0] / input_hw[1] * W_l), 0), W_l - 1)
    row = min(max(int(xy_input[1] / input_hw[0] * H_l), 0), H_l - 1)
    return row * W_l + col


def draw_query(
    ax,
    image_rgb: np.ndarray,
    record: dict,
    query: int,
    to_image: np.ndarray,
    title: str,
    box: Optional[np.ndarray] = None,
) -> None:
    """One panel: every head's samples of ``query`` over the image, coloured by level, sized by weight."""
    import matplotlib.patches as patches

    ax.imshow(image_rgb)
    loc = record['sampling_locations'][0, query]  # (M, L, P, 2)
    weight = record['attention_weights'][0, query]  # (M, L, P)
    levels = loc.shape[1]
    for level in range(levels):
        xy = loc[:, level].reshape(-1, 2).numpy() * to_image
        w = weight[:, level].reshape(-1).numpy()
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=8 + 400 * w / max(weight.max().item(), 1e-6),
            alpha=0.6,
            color=f'C{level}',
            edgecolors='none',
            label=f'level {level}',
        )
    ref = sampling_stats.reference_centres(record)[0, query, 0].numpy() * to_image
    ax.scatter([ref[0]], [ref[1]], marker='x', s=60, color='black', linewidths=2)
    if box is not None:
        x1, y1, x2, y2 = box
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color='white', linewidth=1.5))
    ax.set_title(title, fontsize=8)
    ax.set_xlim(0, image_rgb.shape[1])
    ax.set_ylim(image_rgb.shape[0], 0)
    ax.axis('off')


def draw(detector: Detector, path: Path, result, top: int, token_xy: Optional[Tuple[float, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    logits, boxes, records, (H, W), scale = result
    encoder = [r for r in records if r['module'].startswith('encoder')][-1]
    decoder = [r for r in records if r['module'].startswith('decoder')][-1]
    queries, labels, scores = sampling_stats.top_queries(logits, top)
    image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    to_image = np.array([W, H]) / scale[:2]  # normalised input coordinates -> image pixels
    cxcywh = boxes[queries].numpy() * np.array([W, H, W, H]) / np.concatenate([scale[:2], scale[:2]])
    corners = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
    if token_xy is None:
        token_input = cxcywh[0, :2] * scale[:2]
    else:
        token_input = np.asarray(token_xy) * scale[:2]
    token = encoder_token(encoder, (H, W), tuple(token_input))
    fig, axes = plt.subplots(1, len(queries) + 1, figsize=(3.2 * (len(queries) + 1), 3.4))
    draw_query(axes[0], image, encoder, token, to_image, f'{detector.name}: encoder token {token} (last layer)')
    for ax, q, label, score, box in zip(axes[1:], queries.tolist(), labels.tolist(), scores.tolist(), corners):
        name = detector.classes[label] if label < len(detector.classes) else str(label)
        draw_query(ax, image, decoder, q, to_image, f'query {q}: {name} {score:.2f} (last decoder layer)', box)
    axes[-1].legend(loc='lower right', fontsize=6, markerscale=0.6)
    fig.tight_layout()
    fig.savefig(out / f'{detector.name}_{path.stem}.png', dpi=110)
    plt.close(fig)


def mean_over_images(per_image: List[Dict[str, Dict[str, list]]]) -> Dict[str, Dict[str, list]]:
    """Element-wise mean of :func:`pit_det.sampling_stats.summarize` results, over the images where
    a value is defined (a distance is NaN on an image whose samples all fall off the map)."""
    out = {}
    for part in per_image[0]:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # all-NaN stays NaN
            out[part] = {
                key: np.nanmean([np.asarray(s[part][key], dtype=float) for s in per_image], axis=0).tolist()
                for key in per_image[0][part]
            }
    return out


def plot_statistics(results: Dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    names = list(results)
    width = 0.8 / len(names)
    for ax, part in zip(axes[:2], ('encoder', 'decoder')):
        for i, name in enumerate(names):
            mass = np.mean(results[name][part]['level_mass'], axis=0)  # over layers
            ax.bar(np.arange(len(mass)) + i * width, mass, width, label=name)
        ax.set_xticks(np.arange(len(mass)) + width * (len(names) - 1) / 2)
        ax.set_xticklabels([f'level {i}' for i in range(len(mass))])
        ax.set_title(f'{part}: attention weight per level')
        ax.grid(alpha=0.3, axis='y')
        ax.legend(fontsize=8)
    for i, name in enumerate(names):
        for part, style in (('encoder', '-'), ('decoder', '--')):
            share = np.mean(results[name][part]['on_map'], axis=0)  # over layers
            axes[2].plot(range(len(share)), share, style, marker='o', color=f'C{i}', label=f'{name} {part}')
            dist = results[name][part]['distance_px_all']
            axes[3].plot(range(1, len(dist) + 1), dist, style, marker='o', color=f'C{i}', label=f'{name} {part}')
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[2].set_xlabel('level')
    axes[2].set_title("share of each level's weight on the map")
    axes[3].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[3].set_xlabel('layer')
    axes[3].set_title('mean distance of on-map samples (px)')
    for ax in axes[2:]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.top < 1 or args.num_images < 1:
        raise PitDetError('--top and --num-images must be at least 1')
    files = image_files(Path(args.images))
    detectors = [Detector(c, k) for c, k in [(args.config, args.checkpoint), *args.compare]]
    if len({d.name for d in detectors}) < len(detectors):
        raise PitDetError(f'two detectors share the name {[d.name for d in detectors]}: compare different configs')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for detector in detectors:
        per_image = []
        for i, path in enumerate(files[: max(args.num_images, args.draw)]):
            if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
                raise PitDetError(f'cannot read image {path}')
            result = detector.run(path)
            if i < args.draw:
                draw(detector, path, result, args.top, args.token, out)
            if i < args.num_images:
                per_image.append(sampling_stats.summarize(result[2], result[3]))
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
    plot_statistics(results, out / 'sampling.png')
    print(f'written: {out}/sampling.json, sampling.png and the drawings')


if __name__ == '__main__':
    sys.exit(run_tool(main))
