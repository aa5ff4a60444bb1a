"""The ``gps`` console script: a Hydra app (``conf/config.yaml``).

Runs the advisor on the configured model, cluster, workload and trace, writes
``results.json`` (schema: ``docs/results.md``) and ``report.md``/``report.html`` into the
run's output folder, and ends with one line ``report: <path>``. A run that fails writes
``error.json`` there instead (what ``gps-report`` lists as failed); user errors exit 2, other
errors 1, except inside a multirun, where the sweep goes on to its next job.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gps import cache
from gps.advisor import advise
from gps.advisor.advise import build
from gps.config import register_configs
from gps.cost.layouts import compare_layouts
from gps.cost.memory import MemoryFitError
from gps.cost.parallel import ParallelConfig, resolve_layout
from gps.model import ModelSpecError
from gps.profiles import ProfileError
from gps.report.document import write_atomic
from gps.report.run_report import build_run_report, strategy_table
from gps.traces.validate import TraceError
from gps.workload import WorkloadError

# What a user's input can cause (a bad override, file or model): printed as "gps: error: ...".
# Anything else (a KeyError, an IndexError) is a bug and is reported with its type.
USER_ERRORS = (
    MemoryFitError, ModelSpecError, ProfileError, WorkloadError, TraceError, InstantiationException,
    OmegaConfBaseException, ValueError, FileNotFoundError,
)  # fmt: skip

log = logging.getLogger(__name__)

register_configs()

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def run(cfg: DictConfig, out_dir: Path) -> Path:
    """Advise on ``cfg``; write ``results.json`` and the report into ``out_dir``; return the
    report's path. ``results.json`` is written atomically (temporary file, then rename), again
    once the report is built (with its time in ``timings_s.report``)."""
    t0 = time.perf_counter()
    layout = configured_layout(cfg)  # a bad layout fails here, before the advisor's work
    results = advise(cfg)
    results["parallel"] = price_layout(cfg, layout) if results["strategies"] else None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "results.json", json.dumps(results, indent=1))
    if results["strategies"]:
        table = strategy_table(results["strategies"])
        widths = [
            max(len(r[i]) for r in [table.header, *table.rows]) for i in range(len(table.header))
        ]
        for row in [table.header, *table.rows]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(results["recommendation"]["text"].replace("**", ""))
    if results["parallel"]:
        print(results["parallel"]["text"])
    t1 = time.perf_counter()
    path = build_run_report(results, out_dir, plots=cfg.report.plots)
    timings = results.get("timings_s")
    if timings is not None:  # load-series runs have none
        timings["report"] = time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        write_atomic(out_dir / "results.json", json.dumps(results, indent=1))
    if cache.enabled():
        print(cache.run_line(cfg.cache_dir))
    return path


def configured_layout(cfg: DictConfig) -> ParallelConfig:
    """``cfg.parallel`` checked against the model and cluster (``LayoutError`` names the field)."""
    spec, cluster, workload, _ = build(cfg)
    layout = ParallelConfig(**OmegaConf.to_container(cfg.parallel, resolve=True))
    resolve_layout(layout, spec, cluster, workload)
    return layout


def price_layout(cfg: DictConfig, layout: ParallelConfig | None = None) -> dict:
    """``results["parallel"]``: the configured layout (``cfg.parallel``) and every layout of
    ``conf/parallel/`` priced with uniform routing (``gps.cost.layouts.compare_layouts``)."""
    spec, cluster, workload, _ = build(cfg)
    layout = layout or configured_layout(cfg)
    out = compare_layouts(layout, spec, cluster, workload)
    mine = out["layout"]
    out["text"] = (
        f"Layout {mine['name']} (EP{mine['ep']} x TP{mine['tp']}, {mine['attention']} "
        f"attention): {mine['tokens_per_s']:,.0f} tokens/s with uniform routing; fastest of "
        f"conf/parallel: {out['best']}. Every strategy places experts on the layout's EP ranks "
        "and is priced on the layout (expert tensor parallelism as real TP)."
    )
    return out


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        path = run(cfg, out_dir)
    except Exception as exc:
        user = isinstance(exc, USER_ERRORS)
        message = f"{exc}" if user else f"{type(exc).__name__}: {exc}"
        write_atomic(out_dir / "error.json", json.dumps({
            "error": message, "kind": "user" if user else "internal",
            "traceback": traceback.format_exc(),
        }, indent=1))  # fmt: skip
        print(f"gps: error: {message}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return  # the sweep goes on; gps-report lists this run as failed
        sys.exit(2 if user else 1)
    print(f"report: {path}")


def main() -> None:
    """Console-script entry point. Ray's usage statistics (an upload to Ray's servers when a
    sweep uses the Ray launcher) are off unless the user set ``RAY_USAGE_STATS_ENABLED``."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # conf/hydra/launcher/{joblib,ray,submitit_slurm}.yaml share their names with the launcher
    # plugins' schemas on purpose (validated against them); Hydra warns about that match.
    warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema")
    _main()
