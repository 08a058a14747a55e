"""``chatbeam report``: a run's sinks (local or gs://) → ``RESULTS_PREFIX-report.html`` (transforms/report_files.py).

    chatbeam report out/results                      # errors from out/results_errors (the job's default)
    chatbeam report gs://b/2026-01-31/results gs://b/2026-01-31/errors --out report.html
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from client.pricing import PriceTable
from transforms.checkpoint import SHARD_GLOB
from transforms.report_files import build_report, has_files

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="chatbeam report",
                                     description="Build the run report (one self-contained HTML page) from a run's "
                                                 "results and errors, local or gs://.")
    parser.add_argument("results", help="the run's --output prefix (files PREFIX-SSSSS-of-NNNNN.jsonl)")
    parser.add_argument("errors", nargs="?", help="the run's --errors prefix (default: RESULTS_errors)")
    parser.add_argument("--out", help="where to write the page (default: RESULTS-report.html), local or gs://")
    parser.add_argument("--price_table", help="prices JSON for the cost estimate (default: the bundled table)")
    parser.add_argument("--title", help="the page's title")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        prices = PriceTable.load(args.price_table) if args.price_table else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"chatbeam report: error: --price_table {args.price_table!r} is not a readable price table: {exc}",
              file=sys.stderr)
        return 2
    if not has_files(f"{args.results}{SHARD_GLOB}"):
        print(f"chatbeam report: error: no results files {args.results}{SHARD_GLOB}", file=sys.stderr)
        return 2
    out, data = build_report(args.results, args.errors, out=args.out, prices=prices, title=args.title)
    totals = data["totals"]
    print(f"chatbeam report: {out} ({totals['results']:,} results, {totals['errors']:,} errors)")
    return 0
