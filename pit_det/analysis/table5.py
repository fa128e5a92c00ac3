"""PiT (arXiv 2103.16302) Table 5 assembled from pit-det's own results: AP, AP50 and AP75 from each
detector's ``metrics.json`` (``tools/test.py``), parameters and latency from a benchmark JSON
(``tools/analysis/benchmark.py``), beside the paper's values and the deltas.

A detector trained with several seeds (one ``seed_*`` folder each, as ``tools/analysis/table5_toy.py``
writes them) gets the mean and sample standard deviation over its runs, and two detectors' gap
counts only beyond its noise (:func:`gap`)."""

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from ..benchmark.runner import variant as benchmark_variant
from ..errors import PitDetError
from ..plotting import pyplot

# The paper's Table 5: COCO val2017 at half resolution, latency on a V100.
PAPER = {
    'r50': dict(name='ResNet-50', ap=41.5, ap50=60.5, ap75=44.3, params_m=41.0, latency_ms=49.7),
    'vit_s': dict(name='ViT-S', ap=36.9, ap50=57.0, ap75=38.0, params_m=34.9, latency_ms=55.2),
    'pit_s': dict(name='PiT-S', ap=39.4, ap50=58.8, ap75=41.5, params_m=36.6, latency_ms=46.9),
}
# pit-det's ViT-S with resampled 8 / 16 / 32 levels has no paper row.
NAMES = {**{k: v['name'] for k, v in PAPER.items()}, 'vit_s_pyramid': 'ViT-S pyramid'}
METRICS = {'ap': 'coco/bbox_mAP', 'ap50': 'coco/bbox_mAP_50', 'ap75': 'coco/bbox_mAP_75'}
COLUMNS = ['ap', 'ap50', 'ap75', 'params_m', 'latency_ms']


def find_metrics(path: Union[str, Path]) -> Optional[Path]:
    """``path`` itself if it is a file, else the newest ``metrics.json`` under the folder ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.rglob('metrics.json'), key=lambda p: p.stat().st_mtime) if path.is_dir() else []
    return found[-1] if found else None


def find_runs(path: Union[str, Path]) -> List[Path]:
    """The ``metrics.json`` of every run in ``path``: the newest in each ``seed_*`` folder where
    ``path`` has such folders (one run per seed), else :func:`find_metrics`'s one."""
    path = Path(path)
    seeds = sorted(p for p in path.glob('seed_*') if p.is_dir()) if path.is_dir() else []
    found = [find_metrics(p) for p in seeds] if seeds else [find_metrics(path)]
    return [p for p in found if p is not None]


def detector_key(name_or_path: str) -> Optional[str]:
    """'pit_s' for 'work_dirs/deformable_detr_pit_s/...' (the longest known name in it)."""
    text = str(name_or_path).replace('-', '_').lower()
    matches = [k for k in NAMES if k in text]
    return max(matches, key=len) if matches else None


def read_results(
    sources: Dict[str, Union[str, Path]],
    benchmark: Optional[Union[str, Path]] = None,
    variant: Optional[str] = None,
    paper: bool = True,
) -> List[dict]:
    """One row per detector of ``sources`` (key -> work dir or metrics.json) and of the paper.

    Args:
        sources: e.g. ``{'pit_s': 'work_dirs/pit_s'}``.
        benchmark: a ``tools/analysis/benchmark.py`` JSON; its rows give params and latency.
        variant: which benchmark row per detector, e.g. 'fast fp32' (default: the fastest eager
            fp32 row).
        paper: False for results that are not comparable with the paper's (a toy set, random
            initialisation): only ``sources``' rows, with no paper values or deltas.

    Returns:
        rows with ``key``, ``name``, pit-det's values (None where missing, with ``missing`` saying
        why; the mean over seeds, with ``sd`` the sample standard deviation and ``runs`` their
        number, where a source holds several), the paper's, and the latency's ``measured_on``.
    """
    bench = _read_json(benchmark) if benchmark else None
    if bench is not None and not (
        isinstance(bench.get('results'), list) and isinstance(bench.get('environment'), dict)
    ):
        raise PitDetError(f'{benchmark}: no results and environment: not a tools/analysis/benchmark.py JSON')
    keys = list(dict.fromkeys([*sources, *(PAPER if paper else [])]))
    rows = []
    for key in keys:
        row = dict(
            key=key,
            name=NAMES.get(key, key),
            ours={c: None for c in COLUMNS},
            sd={},
            runs=0,
            missing={},
            paper=PAPER.get(key) if paper else None,
        )
        if key in sources:
            _metric_cells(row, find_runs(sources[key]), sources[key])
        else:
            row['missing'].update({c: 'not trained' for c in METRICS})
        _benchmark_cells(row, bench, variant)
        rows.append(row)
    return rows


def _read_json(path) -> dict:
    """The JSON object in ``path``.

    Raises:
        PitDetError: the file is no JSON object; names it.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, ValueError) as err:
        raise PitDetError(f'{path}: not a JSON file ({err})') from None
    if not isinstance(data, dict):
        raise PitDetError(f'{path}: not a JSON object')
    return data


def _number(value, path, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PitDetError(f'{path}: {key} is {value!r}, not a number') from None


def _metric_cells(row: dict, paths: List[Path], source) -> None:
    if not paths:
        row['missing'].update({c: f'no metrics.json in {source}' for c in METRICS})
        return
    runs = [_read_json(p) for p in paths]
    row['runs'] = len(runs)
    for col, name in METRICS.items():
        lacking = [str(p) for p, m in zip(paths, runs) if name not in m]
        if lacking:
            row['missing'][col] = f'{", ".join(lacking)} has no {name}'
            continue
        values = [100 * _number(m[name], p, name) for p, m in zip(paths, runs)]
        row['ours'][col] = statistics.fmean(values)
        if len(values) > 1:
            row['sd'][col] = statistics.stdev(values)


def gap(a: dict, b: dict, col: str = 'ap') -> Optional[Tuple[float, float]]:
    """``a``'s mean minus ``b``'s and the noise it must exceed to count: a two-sided pooled t-test at
    95%, ``t * sqrt(s_p^2 * (1 / n_a + 1 / n_b))`` with the pooled variance ``s_p^2`` and Student's t
    for ``n_a + n_b - 2`` degrees of freedom (2.78 for 3 + 3 seeds; two standard errors, the normal's
    bar, is too loose for so few runs). None unless both rows have at least two runs."""
    if col not in a['sd'] or col not in b['sd']:
        return None
    from scipy.stats import t as student_t

    n_a, n_b = a['runs'], b['runs']
    pooled = ((n_a - 1) * a['sd'][col] ** 2 + (n_b - 1) * b['sd'][col] ** 2) / (n_a + n_b - 2)
    noise = float(student_t.ppf(0.975, n_a + n_b - 2)) * math.sqrt(pooled * (1 / n_a + 1 / n_b))
    return a['ours'][col] - b['ours'][col], noise


def _benchmark_cells(row: dict, bench: Optional[dict], variant: Optional[str]) -> None:
    if bench is None:
        row['missing'].update(params_m='no benchmark JSON', latency_ms='no benchmark JSON')
        return
    candidates = [
        r
        for r in bench['results']
        if detector_key(r['model']) == row['key']
        and (
            benchmark_variant(r) == variant
            if variant
            else r['dtype'] == 'fp32' and not r['compiled'] and r.get('runtime', 'torch') == 'torch'
        )
    ]
    if not candidates:
        why = f'no {variant or "eager fp32"} row for {row["key"]} in the benchmark JSON'
        row['missing'].update(params_m=why, latency_ms=why)
        return
    best = min(candidates, key=lambda r: r['latency']['median_ms'])
    env = bench['environment']
    where = env.get('gpu') or f'{env["cpu"]} ({env.get("cpu_isa", "?")}), {env["threads"]} threads'
    row['ours']['params_m'] = best['params']['total'] / 1e6
    row['ours']['latency_ms'] = best['latency']['median_ms']
    row['measured_on'] = f'{where}, {best["dtype"]}, {best["impl"]}, {env["shape"][0]} x {env["shape"][1]}'


def _cell(value: Optional[float], paper: Optional[float], sd: Optional[float] = None, digits: int = 1) -> str:
    if value is None:
        return '-'
    text = f'{value:.{digits}f}' + (f' ± {sd:.{digits}f}' if sd is not None else '')
    if paper is None:
        return text
    return f'{text} ({value - paper:+.{digits}f})'


def to_markdown(rows: List[dict], note: Optional[str] = None) -> str:
    """The table: pit-det's value (delta to the paper) | the paper's value, per column, or
    pit-det's values alone when no row has the paper's (``read_results(paper=False)``); then
    ``note``, what each missing cell lacks and where the latency was measured."""
    with_paper = any(row['paper'] for row in rows)
    head = ['detector', 'AP', 'AP50', 'AP75', 'params (M)', 'latency (ms)']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for row in rows:
        paper = row['paper'] or {}
        cells = [
            _cell(row['ours'][c], paper.get(c), row['sd'].get(c))
            + (f' / {paper[c] if c in paper else "-"}' if with_paper else '')
            for c in COLUMNS
        ]
        lines.append(f'| {row["name"]} | ' + ' | '.join(cells) + ' |')
    if with_paper:
        notes = [
            '',
            "Each cell: pit-det (difference to the paper) / the paper's Table 5 (COCO val2017, half "
            "resolution, V100 latency). A '-' is a value not measured:",
        ]
    else:
        notes = [
            '',
            f"pit-det's values only{': ' + note if note else ''}; not comparable with the paper's COCO "
            "Table 5. A '-' is a value not measured:",
        ]
    runs = sorted({row['runs'] for row in rows if row['runs'] > 1})
    if runs:
        notes.append(f'- AP columns: mean ± sample sd over {" or ".join(map(str, runs))} seeds')
        notes.extend(_gap_notes(rows))
    for row in rows:
        for col, why in row['missing'].items():
            notes.append(f'- {row["name"]} {col}: {why}')
        if row.get('measured_on'):
            notes.append(f'- {row["name"]} latency measured on {row["measured_on"]}')
    return '\n'.join(lines + notes) + '\n'


def _gap_notes(rows: List[dict]) -> List[str]:
    """One line per pair of multi-seed rows: their AP gap, and whether it exceeds the noise."""
    notes = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            found = gap(a, b)
            if found is None:
                continue
            diff, noise = found
            verdict = 'beyond' if abs(diff) > noise else 'within'
            notes.append(
                f'- {a["name"]} - {b["name"]}: {diff:+.1f} AP, {verdict} the noise (95% t-test bar: {noise:.1f})'
            )
    return notes


def to_csv(rows: List[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            'detector',
            *[f'{c}_pit_det' for c in COLUMNS],
            *[f'{c}_paper' for c in COLUMNS],
            *[f'{c}_sd' for c in METRICS],
            'runs',
            'latency_measured_on',
            'missing',
        ]
    )
    for row in rows:
        paper = row['paper'] or {}
        writer.writerow(
            [
                row['name'],
                *[row['ours'][c] for c in COLUMNS],
                *[paper.get(c) for c in COLUMNS],
                *[row['sd'].get(c) for c in METRICS],
                row['runs'],
                row.get('measured_on', ''),
                '; '.join(f'{c}: {w}' for c, w in row['missing'].items()),
            ]
        )
    return out.getvalue()


def plot(rows: List[dict], path: Union[str, Path], note: Optional[str] = None) -> None:
    """AP / AP50 / AP75 bars (with the sd over seeds as error bars), pit-det's beside the paper's
    where rows have the paper's values; ``note`` becomes the title."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.5), sharey=True)
    for ax, col in zip(axes, ['ap', 'ap50', 'ap75']):
        names = [r['name'] for r in rows]
        ours = [r['ours'][col] or 0.0 for r in rows]
        err = [r['sd'].get(col, 0.0) for r in rows]
        paper = [(r['paper'] or {}).get(col, 0.0) for r in rows]
        xs = range(len(rows))
        if any(paper):
            ax.bar([x - 0.2 for x in xs], ours, 0.4, yerr=err, label='pit-det')
            ax.bar([x + 0.2 for x in xs], paper, 0.4, label='paper')
        else:
            ax.bar(list(xs), ours, 0.6, yerr=err, label='pit-det')
        ax.set_xticks(list(xs), names, rotation=20)
        ax.set_title(col.upper())
    axes[0].legend()
    if note:
        fig.suptitle(note)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
