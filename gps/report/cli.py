"""The ``gps-report`` console script: aggregate a multirun folder, or re-render one run.

    gps-report SWEEP_DIR [--out DIR] [--strict]
    gps-report RUN_DIR            (a folder holding results.json: rewrites its report)
    gps-report --cache [CACHE_DIR] (what the on-disk cache holds; default reports/cache)
    gps-report --cache [CACHE_DIR] --cache-limit 2G (first drop least recently used entries)

Exits 0 with whatever finished; with ``--strict``, 1 when any run is missing or failed.
Bad input exits 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gps import cache
from gps.report.run_report import build_run_report
from gps.report.sweep import aggregate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gps-report", description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?",
                        help="Hydra multirun folder, or one run's output folder")  # fmt: skip
    parser.add_argument("--out", help="where to write (default: the folder itself)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any run is missing/failed")
    parser.add_argument("--cache", nargs="?", const=cache.DEFAULT_DIR, metavar="CACHE_DIR",
                        help="print what the on-disk cache holds")  # fmt: skip
    parser.add_argument("--cache-limit", metavar="SIZE",
                        help="with --cache: delete least recently used entries until the cache "
                             "holds at most SIZE (e.g. 500M, 2G)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.cache_limit is not None:
        if args.cache is None:
            parser.error("--cache-limit needs --cache [CACHE_DIR]")
        try:
            limit = cache.parse_size(args.cache_limit)
        except ValueError as exc:
            parser.error(str(exc))
        if Path(args.cache).is_dir():
            cache.trim(args.cache, limit)
    if args.cache is not None:
        print(cache.describe(args.cache))
        if args.folder is None:
            return 0
    if args.folder is None:
        parser.error("give a folder (or --cache)")
    folder = Path(args.folder)
    try:
        single = folder / "results.json"
        if single.is_file():
            path = build_run_report(json.loads(single.read_text()), Path(args.out or folder))
            print(f"report: {path}")
            return 0
        csv_path, md, runs = aggregate(folder, Path(args.out) if args.out else None)
    except (OSError, ValueError, KeyError) as exc:
        print(f"gps-report: error: {exc}", file=sys.stderr)
        return 2
    bad = [r for r in runs if r.status != "ok"]
    for run in bad:
        print(f"gps-report: {run.status}: {run.path} {run.error}".rstrip(), file=sys.stderr)
    print(f"{len(runs) - len(bad)} of {len(runs)} runs aggregated\ncsv: {csv_path}\nreport: {md}")
    return 1 if (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
