"""Every layout of ``conf/parallel/`` priced with uniform routing, for comparison.

``compare_layouts`` backs ``gps parallel=...``'s ``results.json`` ``parallel`` entry and
``benchmarks/layouts.py``. It sits above both ``gps.cost.parallel`` (what a layout is) and
``gps.cost.e2e`` (what a step costs), so neither imports the other back.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gps.cost.e2e import batch_cost
from gps.cost.parallel import LayoutError, ParallelConfig, resolve_layout
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import Workload

PARALLEL_CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "parallel"


def known_layouts() -> list[ParallelConfig]:
    """Every layout of ``conf/parallel/*.yaml``, by file name."""
    out = []
    for path in sorted(PARALLEL_CONF_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        unknown = sorted(set(data) - set(ParallelConfig.__dataclass_fields__))
        if unknown:
            raise LayoutError(f"{path}: field 'parallel.{unknown[0]}': unknown field")
        out.append(ParallelConfig(**data))
    return out


def layout_summary(
    parallel: ParallelConfig, spec: MoEModelSpec, cluster: Cluster, workload: Workload
) -> dict:
    """One layout priced with uniform routing: ``name``, ``ep``, ``tp``, ``attention``,
    ``e2e_time_s``, ``tokens_per_s`` (``None`` and ``error`` when it does not fit)."""
    row: dict = {"name": parallel.name, "ep": parallel.ep, "tp": parallel.tp}
    try:
        ep, tp, attention = resolve_layout(parallel, spec, cluster, workload)
        cost = batch_cost(spec, cluster, workload, parallel=parallel)
    except LayoutError as exc:
        return {**row, "attention": parallel.attention, "e2e_time_s": None,
                "tokens_per_s": None, "error": str(exc)}  # fmt: skip
    return {**row, "ep": ep, "tp": tp, "attention": attention,
            "e2e_time_s": float(cost.total_s), "tokens_per_s": float(cost.tokens_per_s),
            "error": None}  # fmt: skip


def compare_layouts(
    parallel: ParallelConfig, spec: MoEModelSpec, cluster: Cluster, workload: Workload
) -> dict:
    """The configured layout and every known one, priced with uniform routing.

    Returns ``{"layout": layout_summary(parallel), "compared": [layout_summary, ...],
    "best": name of the fastest layout that fits (or None)}``; raises ``LayoutError`` when the
    configured layout does not fit.
    """
    resolve_layout(parallel, spec, cluster, workload)
    rows = [layout_summary(p, spec, cluster, workload) for p in known_layouts()]
    fits = [r for r in rows if r["tokens_per_s"] is not None]
    best = max(fits, key=lambda r: r["tokens_per_s"])["name"] if fits else None
    return {"layout": layout_summary(parallel, spec, cluster, workload), "compared": rows,
            "best": best}  # fmt: skip
