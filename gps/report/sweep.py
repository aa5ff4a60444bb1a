"""Aggregate a Hydra multirun folder: one CSV row per (run, strategy) and one sweep report.

A *run* is any folder below the sweep folder that holds Hydra's ``.hydra/`` record. It is
``ok`` with a ``results.json``, ``failed`` with an ``error.json`` (written by ``gps`` when a
run raises) and ``missing`` with neither (killed, or still running). Results are written
atomically by ``gps``, so a ``results.json`` is never half-written.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from gps.report.document import (
    Block,
    Code,
    Heading,
    Para,
    Table,
    render_html,
    render_markdown,
    write_atomic,
)
from gps.report.guideline_map import map_blocks, merge_maps
from gps.report.papers import papers_table
from gps.report.run_report import fmt, headline_accuracy

CSV_COLUMNS = (
    "run", "overrides", "model", "hardware", "gpus", "phase", "tokens_per_step", "trace",
    "strategy", "family", "predictor", "synthetic", "e2e_time_s", "tokens_per_s",
    "speedup_vs_baseline", "balanced_time_s", "predictor_overhead_s", "accuracy",
    "dropped_token_fraction", "recommended",
)  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One job folder of a sweep.

    Attributes:
        path: the job's output folder.
        overrides: its Hydra overrides, e.g. ``["model=deepseek_v3", "workload.batch_size=8"]``.
        status: ``"ok"``, ``"failed"`` or ``"missing"``.
        results: parsed ``results.json`` (``ok`` only).
        error: the error message (``failed``) or why it counts as missing.
    """

    path: Path
    overrides: list[str]
    status: str
    results: dict | None = None
    error: str = ""


def find_runs(sweep_dir: Path) -> list[Run]:
    """Every job folder below ``sweep_dir`` (sorted by path), with its status."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep folder")
    runs = []
    for hydra_dir in sorted(sweep_dir.rglob(".hydra")):
        job = hydra_dir.parent
        over = hydra_dir / "overrides.yaml"
        overrides = (
            [str(o) for o in (yaml.safe_load(over.read_text()) or [])] if over.exists() else []
        )
        res, err = job / "results.json", job / "error.json"
        if res.exists():
            try:
                runs.append(Run(job, overrides, "ok", json.loads(res.read_text())))
            except json.JSONDecodeError as exc:
                runs.append(Run(job, overrides, "failed", error=f"results.json unreadable: {exc}"))
        elif err.exists():
            try:
                message = json.loads(err.read_text()).get("error", "")
            except json.JSONDecodeError:
                message = err.read_text()[:500]
            runs.append(Run(job, overrides, "failed", error=message))
        else:
            runs.append(Run(job, overrides, "missing", error="no results.json (killed or running)"))
    return runs


def rows_of(run: Run, root: Path) -> list[dict]:
    """CSV rows (``CSV_COLUMNS``) of an ``ok`` run, one per strategy."""
    r = run.results or {}
    setup, rec = r["setup"], r["recommendation"]["strategy"]
    out = []
    for s in r["strategies"]:
        ov = s.get("overhead") or {}
        out.append({
            "run": str(run.path.relative_to(root)), "overrides": " ".join(run.overrides),
            "model": setup["model"], "hardware": setup["hardware"], "gpus": setup["gpus"],
            "phase": setup["phase"], "tokens_per_step": setup["tokens_per_step"],
            "trace": setup["trace"], "strategy": s["name"], "family": s["family"],
            "predictor": s.get("predictor") or "", "synthetic": bool(s.get("synthetic")),
            "e2e_time_s": s["e2e_time_s"], "tokens_per_s": s["tokens_per_s"],
            "speedup_vs_baseline": s["speedup_vs_baseline"],
            "balanced_time_s": s["balanced_time_s"],
            "predictor_overhead_s": ov.get("seconds_per_batch", 0.0),
            "accuracy": headline_accuracy(s.get("accuracy")),
            "dropped_token_fraction": s.get("dropped_token_fraction", 0.0),
            "recommended": s["name"] == rec,
        })  # fmt: skip
    return out


def aggregate(sweep_dir: Path, out_dir: Path | None = None) -> tuple[Path, Path, list[Run]]:
    """Write ``sweep.csv``, ``sweep_report.md`` and ``sweep_report.html`` into ``out_dir``
    (default: ``sweep_dir``) from whatever runs finished; runs of paper presets (a ``paper``
    entry) also get the combined table of ``gps.report.papers``, in the report and in
    ``papers.md``.

    Returns:
        ``(csv path, report.md path, runs)``.
    """
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir else sweep_dir
    runs = find_runs(sweep_dir)
    rows = [row for run in runs if run.status == "ok" for row in rows_of(run, sweep_dir)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = write_atomic(out_dir / "sweep.csv", buf.getvalue())

    ok = [run for run in runs if run.status == "ok"]
    blocks: list[Block] = [
        Heading(f"moe-gps sweep: {sweep_dir.name}", 1),
        Para(
            f"{len(ok)} of {len(runs)} runs finished; one CSV row per run and strategy: "
            "`sweep.csv`."
        ),
        Heading("Recommendation per run"),
    ]
    table = []
    for run in ok:
        r = run.results
        rec = r["recommendation"]
        guide = r.get("guidelines") or {}
        cross = [x for x in guide.get("crossover_accuracy", []) if x is not None]
        table.append([
            " ".join(run.overrides) or run.path.name, rec["strategy"] or "-", rec["family"] or "-",
            fmt(rec["speedup_vs_baseline"], ".3f", suffix="x"),
            fmt(min(cross), ".2f") if cross else ("never" if guide else "-"),
        ])  # fmt: skip
    blocks.append(Table(["run (overrides)", "recommended", "family", "speed-up",
                         "T2E crossover accuracy (lowest overhead)"], table))  # fmt: skip
    papers = [run.results for run in ok if run.results.get("paper")]
    if papers:
        paper_blocks: list[Block] = [
            Heading("The papers at their own settings"),
            Para(
                "Each paper's headline figure beside ours under the paper's setting (values the "
                "paper does not state are marked assumed in each run's report). 'ours / paper' "
                "compares gains (speed-up - 1) for speed-ups; 'reason for the gap' names the "
                "assumption responsible, with numbers from the run, where the two differ by more "
                "than 30% or in direction."
            ),
            papers_table(papers),
        ]
        blocks += paper_blocks
        write_atomic(out_dir / "papers.md", render_markdown(paper_blocks, out_dir))
    bad = [run for run in runs if run.status != "ok"]
    if bad:
        blocks.append(Heading("Missing or failed runs"))
        blocks.append(Table(["run", "status", "why"], [
            [str(run.path.relative_to(sweep_dir)), run.status,
             run.error.splitlines()[0][:200] if run.error else ""]
            for run in bad
        ]))  # fmt: skip
    maps = [run.results["guideline_map"] for run in ok if run.results.get("guideline_map")]
    if maps:  # a multirun over the guideline map's axes: guideline_map.csv and the heat maps
        blocks += map_blocks(merge_maps(maps), out_dir, plots=True)
    blocks.append(Heading("Reproduce"))
    blocks.append(Code(f"gps-report {sweep_dir}"))
    write_atomic(
        out_dir / "sweep_report.html", render_html(blocks, f"moe-gps sweep {sweep_dir.name}")
    )
    md = write_atomic(out_dir / "sweep_report.md", render_markdown(blocks, out_dir))
    return csv_path, md, runs
