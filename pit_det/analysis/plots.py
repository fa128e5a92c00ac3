"""Figures of the analysis: where deformable attention samples (:mod:`.sampling`) and the backbones'
attention entropy and distance (:mod:`.attention`), drawn with :func:`pit_det.plotting.pyplot`."""

from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from ..plotting import pyplot
from .sampling import RecordedDetector, encoder_token, reference_centres, top_queries


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
    ref = reference_centres(record)[0, query, 0].numpy() * to_image
    ax.scatter([ref[0]], [ref[1]], marker='x', s=60, color='black', linewidths=2)
    if box is not None:
        x1, y1, x2, y2 = box
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color='white', linewidth=1.5))
    ax.set_title(title, fontsize=8)
    ax.set_xlim(0, image_rgb.shape[1])
    ax.set_ylim(image_rgb.shape[0], 0)
    ax.axis('off')


def draw_sampling(
    detector: RecordedDetector,
    path: Path,
    image_bgr: np.ndarray,
    result,
    top: int,
    token_xy: Optional[Tuple[float, float]],
    out: Path,
) -> None:
    """``detector``'s sampling on the image at ``path``, decoded as ``image_bgr`` (``result``: its
    :meth:`RecordedDetector.run`): one panel
    for an encoder token (at image pixel ``token_xy``, default the best detection's centre) and one per
    top-``top`` detection's query, written to ``out/<detector>_<image>.png``."""
    plt = pyplot()

    logits, boxes, records, (H, W), scale = result
    encoder = [r for r in records if r['module'].startswith('encoder')][-1]
    decoder = [r for r in records if r['module'].startswith('decoder')][-1]
    queries, labels, scores = top_queries(logits, top)
    image = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
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


def plot_sampling_statistics(results: Dict[str, dict], path: Path) -> None:
    """:func:`mean_over_images` results by detector, side by side: weight per level, on-map share, distance."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

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


def plot_attention_statistics(results: Dict[str, dict], path: Path) -> None:
    """:func:`.attention.analyze_backbone` results by backbone: entropy and distance per layer."""
    plt = pyplot()

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
