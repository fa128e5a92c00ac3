"""PiT Table 5 from pit-det's results: AP / AP50 / AP75 (each detector's metrics.json), params and
latency (a benchmark JSON), beside the paper's values and the deltas, as markdown, CSV and a plot.

    python tools/analysis/table5.py pit_s=work_dirs/deformable_detr_pit_s r50=results/r50/metrics.json \
        --benchmark work_dirs/benchmark_latency.json --out work_dirs/table5

A source is NAME=PATH (NAME one of r50, vit_s, vit_s_pyramid, pit_s) or a PATH whose name contains
one; PATH is a work dir (its newest metrics.json) or a metrics.json. Missing cells say what is
missing.
"""

import argparse
import sys
from pathlib import Path

from pit_det.analysis import table5
from pit_det.errors import PitDetError, run_tool


def parse_sources(items) -> dict:
    sources = {}
    for item in items:
        name, sep, path = item.partition('=')
        key = name if sep else table5.detector_key(item)
        path = path if sep else item
        if key not in table5.NAMES:
            raise PitDetError(
                f'{item}: cannot tell which detector this is; write NAME=PATH with NAME one of '
                f'{", ".join(table5.NAMES)}'
            )
        sources[key] = path
    return sources


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('sources', nargs='*', help='NAME=PATH or PATH (work dir or metrics.json)')
    parser.add_argument('--benchmark', help='tools/analysis/benchmark.py JSON (params, latency)')
    parser.add_argument('--variant', help="benchmark row per detector, e.g. 'fast fp32' (default: fastest eager fp32)")
    parser.add_argument('--out', default='work_dirs/table5', help='writes OUT.md, OUT.csv and OUT.png')
    parser.add_argument(
        '--no-paper',
        action='store_true',
        help="no paper columns or deltas: for results not comparable with the paper's (toy set)",
    )
    parser.add_argument('--note', help="what the results are, e.g. 'synthetic toy set, random initialisation'")
    args = parser.parse_args(argv)
    if args.benchmark and not Path(args.benchmark).is_file():
        raise FileNotFoundError(f'benchmark JSON not found: {args.benchmark}')
    rows = table5.read_results(parse_sources(args.sources), args.benchmark, args.variant, paper=not args.no_paper)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    markdown = table5.to_markdown(rows, args.note)
    out.with_suffix('.md').write_text(markdown)
    out.with_suffix('.csv').write_text(table5.to_csv(rows))
    table5.plot(rows, out.with_suffix('.png'), args.note)
    print(markdown)
    print(f'written: {out}.md, {out}.csv, {out}.png')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
