"""One table of the seed papers re-run at their own settings (``gps-report`` on a multirun of
the paper presets; ``benchmarks/papers.py`` runs it and puts the table in ``docs/advisor.md``).

Each row: the paper, its claim and its setting as our run composed it, the paper's number and
ours side by side, whether they point the same way, ours / the paper's, and the reason for any
gap (``results.json`` ``paper.gap``, with numbers from the run).
"""

from __future__ import annotations

from gps.report.document import Table

PAPER_PRESETS = (
    "moe_gps_mixtral_mmlu",
    "moetuner_single_node",
    "moetuner_multi_node",
    "capacity_aware_mixtral",
    "load_forecast_gpt350m",
)


def _number(metric: str, values: list[float]) -> str:
    if not values:
        return "-"
    if metric.startswith("speedup:"):
        return ", ".join(f"{v:.3f}x ({v - 1:+.1%})" for v in values)
    if metric == "forecast":
        return " / ".join(f"{v:.2%}" for v in values)
    return ", ".join(f"{v:+.1%}" for v in values)


def _setting(results: dict) -> str:
    s = results["setup"]
    layout = (results.get("parallel") or {}).get("layout") or {}
    if s["phase"] == "training":
        return (f"{s['model']}: {s['layers']} MoE layers x {s['experts']} experts, "
                f"{s['tokens_per_step']:,} tokens/step, {s['steps']:,} training steps")  # fmt: skip
    lay = f", EP{layout['ep']} x TP{layout['tp']}" if layout else ""
    return (f"{s['model']} on {s['hardware']} ({s['gpus']} GPUs{lay}), {s['phase']} "
            f"{s['tokens_per_step']:,} tokens/step")  # fmt: skip


def _preset(results: dict) -> tuple[int, str]:
    """Sort key: position of the run's ``+experiment`` in ``PAPER_PRESETS``, then its name."""
    name = ""
    for word in (results.get("command") or "").split():
        if word.startswith("+experiment="):
            name = word.split("=", 1)[1]
    return (PAPER_PRESETS.index(name) if name in PAPER_PRESETS else len(PAPER_PRESETS), name)


def paper_rows(results_list: list[dict]) -> list[list[str]]:
    """Table rows, one per run with a ``paper`` entry, in ``PAPER_PRESETS`` order where known."""
    rows, keys = [], []
    for r in results_list:
        p = r.get("paper")
        if not p:
            continue
        keys.append(_preset(r))
        metric = (r.get("config") or {}).get("paper", {}).get("metric", "")
        ours = _number(metric, p.get("ours_values") or [])
        if p.get("ours_values_paper_assumptions"):
            ours = (f"{ours} (our pricing); "
                    f"{_number(metric, p['ours_values_paper_assumptions'])} under the paper's "
                    "assumptions")  # fmt: skip
        ratio = p.get("size_ratio")
        same = p.get("same_direction")
        rows.append([
            p["name"], p["claim"], _setting(r), _number(metric, p.get("figures") or []),
            ours, "-" if same is None else ("yes" if same else "no"),
            "-" if ratio is None else f"{ratio:.2f}",
            " ".join(x for x in (p.get("gap") or "within 30% of the paper's figure",
                                 p.get("reading")) if x),
        ])  # fmt: skip
    return [row for _, row in sorted(zip(keys, rows, strict=True), key=lambda kr: kr[0])]


def papers_table(results_list: list[dict]) -> Table:
    """The combined table (``paper_rows``)."""
    header = ["paper", "claim", "our run's setting", "paper's figure", "ours", "same direction",
              "ours / paper", "reason for the gap"]  # fmt: skip
    return Table(header, paper_rows(results_list))
