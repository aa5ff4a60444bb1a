"""The guideline map's report side: ``guideline_map.csv``, the report section and heat maps,
merging a multirun's maps, and the no-win reason (``gps.advisor.guideline_map`` computes it)."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

from gps.report.document import Block, Heading, Image, Para, Table, write_atomic
from gps.report.plots import all_tied, plot_guideline_map

MAP_COLUMNS = (
    "skew_target", "skew_measured", "link_gbps", "tokens_per_step", "resident_experts",
    "overhead_us", "accuracy",
    "token_speedup", "distribution_speedup", "oracle_speedup", "winner", "margin",
    "crossover_accuracy", "breakeven_overhead_us",
)  # fmt: skip


def write_map_csv(rows: list[dict], path: Path) -> Path:
    """``guideline_map.csv``: one row per (skew, link, tokens, resident experts, overhead,
    accuracy)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MAP_COLUMNS, lineterminator="\n",
                            extrasaction="ignore")  # fmt: skip
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buf.getvalue())


def map_blocks(gm: dict, out_dir: Path, plots: bool) -> list[Block]:
    """The guideline map section: how to read it, the crossover table, the heat maps; writes
    ``guideline_map.csv`` (and ``plots/guideline_map.png``) into ``out_dir``."""
    write_map_csv(gm["rows"], out_dir / "guideline_map.csv")
    ax = gm["axes"]
    lo, hi = ax["overheads_us"][0], ax["overheads_us"][-1]
    cross = {(r["overhead_us"], r["resident_experts"], r["link_gbps"], r["skew_target"],
              r["tokens_per_step"]): r
             for r in gm["rows"] if r["accuracy"] == ax["accuracies"][-1]}  # fmt: skip
    tied = all_tied(gm["rows"])

    def cell(res: float, link: float, skew: float, t: int) -> str:
        a, b = cross.get((lo, res, link, skew, t)), cross.get((hi, res, link, skew, t))
        if a is None or b is None:
            return "-"  # not run (a partial multirun)
        show = [f"{r['crossover_accuracy']:.2f}" if r["crossover_accuracy"] is not None
                else "tie" if tied[(ov, res, link, skew, t)] else "DO"
                for r, ov in ((a, lo), (b, hi))]  # fmt: skip
        return f"{show[0]} / {show[1]} (b/e {a['breakeven_overhead_us']:.0f} us)"

    def skew_of(res: float, link: float, skew: float) -> str:
        seen = [r["skew_measured"] for t in ax["tokens"]
                if (r := cross.get((lo, res, link, skew, t)))]  # fmt: skip
        return f"{skew:g} ({min(seen):.2f}-{max(seen):.2f})" if seen else f"{skew:g}"

    rows = [[f"{res:g}", f"{link:g}", skew_of(res, link, skew),
             *[cell(res, link, skew, t) for t in ax["tokens"]]]
            for res in ax["resident_experts"] for link in ax["link_gbps"]
            for skew in ax["skews"]]  # fmt: skip
    fetch = gm.get("fetch_link") or "the fetch link"
    blocks: list[Block] = [
        Heading("Guideline map"),
        Para(
            f"Which family wins, per share of expert slots resident in HBM (the rest fetched "
            f"over {fetch}), interconnect (GB/s per GPU and direction), expert skew (target, "
            f"measured in brackets) and tokens per step. Each cell: the crossover "
            f"Token-to-Expert accuracy above which it beats distribution:{gm['distribution']} at "
            f"{lo:g} / {hi:g} us per MoE layer of predictor overhead (DO: never in "
            f"{ax['accuracies'][0]:g}-{ax['accuracies'][-1]:g}, Distribution-Only faster at some "
            "accuracy; tie: the same step time at every accuracy), and the break-even overhead "
            "(b/e) of the best swept accuracy. Every (cell, accuracy, overhead) point is a row of "
            "`guideline_map.csv`."
        ),
        Table(["resident", "link GB/s", "skew", *[f"{t:,} tokens" for t in ax["tokens"]]], rows),
    ]
    c = whatif_curve(gm["rows"])
    blocks.append(Para(
        f"What-if curves at {lo:g} us/layer: non-decreasing in accuracy in {c['non_decreasing']} "
        f"of {c['cells']} cells; the largest dip between neighbouring accuracies is "
        f"{c['largest_dip']:.2%} (a keep-or-switch decision on a closer forecast, not a "
        f"physical term; docs/cost_model.md); the largest rise between the two highest "
        f"accuracies is {c['last_step']:.2%}, against {c['earlier_rise']:.2%} between any "
        "other neighbouring accuracies."
    ))  # fmt: skip
    if gm.get("reason"):
        blocks.append(Para(f"**Why Token-to-Expert never wins here.** {gm['reason']}"))
    if plots:
        (out_dir / "plots").mkdir(parents=True, exist_ok=True)
        blocks.append(Image(plot_guideline_map(gm, out_dir / "plots" / "guideline_map.png"),
                            "Guideline map: crossover accuracy per panel"))  # fmt: skip
    return blocks


def merge_maps(maps: list[dict]) -> dict:
    """One map from several runs' ``guideline_map`` blocks (a Hydra multirun over the axes):
    rows concatenated, axes the sorted union, ``reason`` recomputed."""
    rows = [r for m in maps for r in m["rows"]]
    keys = {"skews": "skew_target", "link_gbps": "link_gbps", "tokens": "tokens_per_step",
            "resident_experts": "resident_experts", "accuracies": "accuracy",
            "overheads_us": "overhead_us"}  # fmt: skip
    axes = {k: sorted({r[c] for r in rows}) for k, c in keys.items()}
    axes["link_gbps"] = axes["link_gbps"][::-1]  # fastest first, as the preset lists them
    axes["resident_experts"] = axes["resident_experts"][::-1]  # all resident first
    return {"axes": axes, "distribution": maps[0]["distribution"],
            "fetch_link": maps[0].get("fetch_link"), "rows": rows,
            "reason": no_win_reason(rows)}  # fmt: skip


def whatif_curve(rows: list[dict]) -> dict:
    """How the what-if Token-to-Expert speed-up moves with accuracy at the lowest overhead, per
    (skew, link, tokens, resident experts) cell: ``cells``, ``non_decreasing`` (cells whose
    curve never falls), ``largest_dip`` (the largest relative fall between neighbouring
    accuracies) and ``last_step`` (the largest relative rise between the two highest
    accuracies: a cliff at 1.0 would show here) beside ``earlier_rise`` (the largest relative rise
    between any other neighbouring accuracies)."""
    lo = min(r["overhead_us"] for r in rows)
    curves: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        if r["overhead_us"] == lo:
            key = (r["skew_target"], r["link_gbps"], r["tokens_per_step"],
                   r.get("resident_experts", 1.0))  # fmt: skip
            curves.setdefault(key, []).append((r["accuracy"], r["token_speedup"]))
    dips, steps, rises, flat = [], [], [], 0
    for points in curves.values():
        s = [v for _, v in sorted(points)]
        fall = [max(a / b - 1.0, 0.0) for a, b in itertools.pairwise(s)]
        dips.append(max(fall, default=0.0))
        flat += max(fall, default=0.0) <= 1e-9
        steps.append(s[-1] / s[-2] - 1.0 if len(s) > 1 else 0.0)
        rises.append(max((b / a - 1.0 for a, b in itertools.pairwise(s[:-1])), default=0.0))
    return {"cells": len(curves), "non_decreasing": flat, "largest_dip": max(dips),
            "last_step": max(steps), "earlier_rise": max(rises)}  # fmt: skip


def no_win_reason(rows: list[dict]) -> str | None:
    """``None`` when Token-to-Expert wins somewhere; else the mechanism-level reason: at its best
    swept accuracy and no overhead, what it gains over Distribution-Only, and the largest break-even
    overhead per layer in the map."""
    if any(r["winner"] == "token" for r in rows):
        return None
    best = max(rows, key=lambda r: r["breakeven_overhead_us"])
    return (
        "Token-to-Expert wins in no cell. At its best swept accuracy and zero overhead it is at "
        f"most {max(r['margin'] for r in rows):+.2%} against Distribution-Only; the most such a "
        f"predictor may cost per MoE layer before it loses is {best['breakeven_overhead_us']:.1f}"
        f" us (skew {best['skew_target']:g}, {best['link_gbps']:g} GB/s, "
        f"{best['tokens_per_step']:,} tokens, {best.get('resident_experts', 1.0):g} of the "
        "slots resident): what a better plan and a better prefetch order buy is smaller than "
        "what the prediction costs."
    )
