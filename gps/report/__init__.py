"""Reports: one run's ``results.json`` -> Markdown + self-contained HTML + plots; a multirun
folder -> CSV + sweep report (``gps-report``)."""

from gps.report.run_report import build_run_report
from gps.report.sweep import aggregate, find_runs

__all__ = ["aggregate", "build_run_report", "find_runs"]
