"""The guideline map's report side: ``guideline_map.csv``, the report section and heat maps,
merging a multirun's maps, and the no-win reason (``gps.advisor.guideline_map`` computes it)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from gps.report.document import Block, Heading, Image, Para, Table, write_atomic
from gps.report.plots import plot_guideline_map

MAP_COLUMNS = (
    "skew_target", "skew_measured", "link_gbps", "tokens_per_step", "overhead_us", "accuracy",
    "token_speedup", "distribution_speedup", "oracle_speedup", "winner", "margin",
    "crossover_accuracy", "breakeven_overhead_us",
)  # fmt: skip


def write_map_csv(rows: list[dict], path: Path) -> Path:
    """``guideline_map.csv``: one row per (skew, link, tokens, overhead, accuracy)."""
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
    cross = {(r["overhead_us"], r["link_gbps"], r["skew_target"], r["tokens_per_step"]): r
             for r in gm["rows"] if r["accuracy"] == ax["accuracies"][-1]}  # fmt: skip

    def cell(link: float, skew: float, t: int) -> str:
        a, b = cross.get((lo, link, skew, t)), cross.get((hi, link, skew, t))
        if a is None or b is None:
            return "-"  # not run (a partial multirun)
        show = [f"{r['crossover_accuracy']:.2f}" if r["crossover_accuracy"] is not None
                else "DO" for r in (a, b)]  # fmt: skip
        return f"{show[0]} / {show[1]} (b/e {a['breakeven_overhead_us']:.0f} us)"

    def skew_of(link: float, skew: float) -> str:
        seen = [r["skew_measured"] for t in ax["tokens"] if (r := cross.get((lo, link, skew, t)))]
        return f"{skew:g} ({min(seen):.2f}-{max(seen):.2f})" if seen else f"{skew:g}"

    rows = [[f"{link:g}", skew_of(link, skew), *[cell(link, skew, t) for t in ax["tokens"]]]
            for link in ax["link_gbps"] for skew in ax["skews"]]  # fmt: skip
    blocks: list[Block] = [
        Heading("Guideline map"),
        Para(
            f"Which family wins, per interconnect (GB/s per GPU and direction), expert skew "
            f"(target, measured in brackets) and tokens per step. Each cell: the crossover "
            f"Token-to-Expert accuracy above which it beats distribution:{gm['distribution']} at "
            f"{lo:g} / {hi:g} us per MoE layer of predictor overhead (DO: never in "
            f"{ax['accuracies'][0]:g}-{ax['accuracies'][-1]:g}), and the break-even overhead "
            "(b/e) of the best swept accuracy. Every (cell, accuracy, overhead) point is a row of "
            "`guideline_map.csv`."
        ),
        Table(["link GB/s", "skew", *[f"{t:,} tokens" for t in ax["tokens"]]], rows),
    ]
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
            "accuracies": "accuracy", "overheads_us": "overhead_us"}  # fmt: skip
    axes = {k: sorted({r[c] for r in rows}) for k, c in keys.items()}
    axes["link_gbps"] = axes["link_gbps"][::-1]  # fastest first, as the preset lists them
    return {"axes": axes, "distribution": maps[0]["distribution"], "rows": rows,
            "reason": no_win_reason(rows)}  # fmt: skip


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
        f"{best['tokens_per_step']:,} tokens): what direct dispatch, replica choice and a "
        "better plan buy is smaller than what the prediction costs."
    )
