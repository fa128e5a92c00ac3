"""tools/analysis/table5.py and pit_det/analysis/table5.py: the paper's Table 5 assembled from generated metrics and
benchmark files, with missing cells saying what is missing."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pit_det.analysis import table5

ROOT = Path(__file__).resolve().parents[1]


def metrics(path: Path, ap: float, ap50: float, ap75: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({'coco/bbox_mAP': ap, 'coco/bbox_mAP_50': ap50, 'coco/bbox_mAP_75': ap75}))
    return path


def benchmark(path: Path) -> Path:
    def row(model, impl, dtype, ms, compiled=False):
        return dict(
            model=model,
            impl=impl,
            dtype=dtype,
            compiled=compiled,
            params=dict(total=36_540_000),
            latency=dict(median_ms=ms),
        )

    env = dict(cpu='AMD EPYC 7B13', cpu_isa='AVX2', threads=2, shape=[400, 667])
    path.write_text(
        json.dumps(
            dict(
                environment=env,
                results=[
                    row('pit_s', 'stock', 'fp32', 3690.0),
                    row('pit_s', 'fast', 'fp32', 1720.0),
                    row('pit_s', 'fast', 'fp32', 1500.0, compiled=True),
                    row('r50', 'fast', 'bf16', 900.0),
                ],
            )
        )
    )
    return path


def test_values_deltas_and_missing_cells(tmp_path):
    old = metrics(tmp_path / 'pit_s/test/a/metrics.json', 0.0, 0.0, 0.0)
    newest = metrics(tmp_path / 'pit_s/test/b/metrics.json', 0.401, 0.590, 0.420)
    os.utime(old, (1_000_000, 1_000_000))  # the newest metrics.json of a work dir counts
    (tmp_path / 'vit_s').mkdir()
    rows = table5.read_results(
        {'pit_s': tmp_path / 'pit_s', 'vit_s': tmp_path / 'vit_s'}, benchmark(tmp_path / 'bench.json')
    )
    by_key = {r['key']: r for r in rows}
    assert [r['key'] for r in rows] == ['pit_s', 'vit_s', 'r50']  # sources first, then the paper's other rows
    pit = by_key['pit_s']
    assert pit['ours']['ap'] == pytest.approx(40.1) and pit['ours']['ap75'] == pytest.approx(42.0)
    # The fastest eager fp32 row (not the compiled one), with where it was measured.
    assert pit['ours']['latency_ms'] == 1720.0 and pit['ours']['params_m'] == pytest.approx(36.54)
    assert pit['measured_on'] == 'AMD EPYC 7B13 (AVX2), 2 threads, fp32, fast, 400 x 667'
    assert by_key['vit_s']['missing']['ap'] == f'no metrics.json in {tmp_path / "vit_s"}'
    assert by_key['r50']['missing']['ap'] == 'not trained'
    assert by_key['r50']['missing']['latency_ms'] == 'no eager fp32 row for r50 in the benchmark JSON'

    markdown = table5.to_markdown(rows)
    assert '| PiT-S | 40.1 (+0.7) / 39.4 | 59.0 (+0.2) / 58.8 | 42.0 (+0.5) / 41.5 | 36.5 (-0.1) / 36.6 |' in markdown
    assert '1720.0 (+1673.1) / 46.9 |' in markdown
    assert '| ResNet-50 | - / 41.5 | - / 60.5 | - / 44.3 | - / 41.0 | - / 49.7 |' in markdown
    assert '- ResNet-50 ap: not trained' in markdown
    assert '- PiT-S latency measured on AMD EPYC 7B13 (AVX2), 2 threads, fp32, fast, 400 x 667' in markdown
    table = list(csv.DictReader(io.StringIO(table5.to_csv(rows))))
    assert table[0]['detector'] == 'PiT-S' and float(table[0]['ap_pit_det']) == pytest.approx(40.1)
    assert table[2]['ap_pit_det'] == '' and 'not trained' in table[2]['missing']

    chosen = table5.read_results({'pit_s': newest}, tmp_path / 'bench.json', variant='fast fp32 compiled')
    assert chosen[0]['ours']['latency_ms'] == 1500.0
    assert table5.read_results({}, None)[0]['missing']['latency_ms'] == 'no benchmark JSON'


@pytest.mark.slow
def test_tool_writes_markdown_csv_plot_and_names_bad_sources(tmp_path):
    metrics(tmp_path / 'deformable_detr_vit_s_pyramid/metrics.json', 0.35, 0.55, 0.37)
    out = tmp_path / 'out' / 'table5'
    proc = subprocess.run(
        [
            sys.executable,
            'tools/analysis/table5.py',
            str(tmp_path / 'deformable_detr_vit_s_pyramid'),
            '--benchmark',
            str(benchmark(tmp_path / 'bench.json')),
            '--out',
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert '| ViT-S pyramid | 35.0 / - |' in out.with_suffix('.md').read_text()
    assert out.with_suffix('.csv').read_text().startswith('detector,ap_pit_det')
    assert out.with_suffix('.png').stat().st_size > 0
    bad = subprocess.run(
        [sys.executable, 'tools/analysis/table5.py', str(tmp_path / 'somewhere'), '--out', str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and 'cannot tell which detector' in bad.stderr and 'Traceback' not in bad.stderr


def test_no_paper_table_has_only_pit_det_rows_and_the_note(tmp_path):
    """Toy results are not the paper's: no paper rows, values or deltas, and the note says what they are."""
    metrics(tmp_path / 'pit_s/metrics.json', 0.291, 0.611, 0.265)
    proc = subprocess.run(
        [
            sys.executable,
            'tools/analysis/table5.py',
            f'pit_s={tmp_path / "pit_s"}',
            '--no-paper',
            '--note',
            'synthetic toy set, random initialisation',
            '--out',
            tmp_path / 't5',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    markdown = (tmp_path / 't5.md').read_text()
    table = [line for line in markdown.splitlines() if line.startswith('| ')]
    assert table[1] == '| PiT-S | 29.1 | 61.1 | 26.5 | - | - |' and len(table) == 2  # header + PiT-S only
    assert 'values only: synthetic toy set, random initialisation; not comparable with the paper' in markdown
    assert '39.4' not in markdown and 'ResNet-50' not in markdown and '(+' not in markdown and '(-' not in markdown
    assert (tmp_path / 't5.png').stat().st_size > 0


def test_seeds_give_mean_and_sd_and_gaps_count_only_beyond_their_noise(tmp_path):
    """Three seeds each (tools/analysis/table5_toy.py's seed_* folders): PiT-S 30 +- 1, ViT-S pyramid
    28 +- 1 (a gap of 2.0: beyond two standard errors, 1.63, but inside the 95% t-test bar for so few
    runs, t(4 df) = 2.776 standard errors = 2.27), ViT-S 20 +- 1 (10.0 beyond it)."""
    for key, aps in (
        ('pit_s', (0.29, 0.30, 0.31)),
        ('vit_s_pyramid', (0.27, 0.28, 0.29)),
        ('vit_s', (0.19, 0.20, 0.21)),
    ):
        for seed, ap in enumerate(aps):
            metrics(tmp_path / key / f'seed_{seed}/metrics.json', ap, 2 * ap, ap / 2)
    rows = table5.read_results({k: tmp_path / k for k in ('pit_s', 'vit_s_pyramid', 'vit_s')}, paper=False)
    pit, pyramid, vit = rows
    assert pit['runs'] == 3 and pit['ours']['ap'] == pytest.approx(30.0) and pit['sd']['ap'] == pytest.approx(1.0)
    assert pit['sd']['ap50'] == pytest.approx(2.0)  # the sample sd (n - 1), per column
    diff, noise = table5.gap(pit, pyramid)
    assert diff == pytest.approx(2.0) and noise == pytest.approx(2.7764451 * (2 / 3) ** 0.5)
    markdown = table5.to_markdown(rows, 'toy')
    assert '| PiT-S | 30.0 ± 1.0 | 60.0 ± 2.0 | 15.0 ± 0.5 | - | - |' in markdown
    assert '- AP columns: mean ± sample sd over 3 seeds' in markdown
    assert '- PiT-S - ViT-S pyramid: +2.0 AP, within the noise (95% t-test bar: 2.3)' in markdown
    assert '- PiT-S - ViT-S: +10.0 AP, beyond the noise (95% t-test bar: 2.3)' in markdown
    table = list(csv.DictReader(io.StringIO(table5.to_csv(rows))))
    assert float(table[0]['ap_sd']) == pytest.approx(1.0) and table[0]['runs'] == '3'
    # One run has no sd and no gap: a single run is never ranked against another.
    single = table5.read_results({'pit_s': tmp_path / 'pit_s/seed_0', 'vit_s': tmp_path / 'vit_s/seed_0'}, paper=False)
    assert single[0]['sd'] == {} and table5.gap(*single) is None
    assert 'noise' not in table5.to_markdown(single)
