"""One run's ``results.json`` -> ``report.md`` + ``report.html`` + PNG plots in its folder."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import yaml

from gps.report.document import (
    Block,
    Code,
    Heading,
    Image,
    Para,
    Table,
    render_html,
    render_markdown,
    write_atomic,
)
from gps.report.guideline_map import map_blocks
from gps.report.plots import (
    plot_accuracy_speedup,
    plot_breakdown,
    plot_frontier,
    plot_gpu_load,
)


def fmt(x: float | None, spec: str = ".3g", scale: float = 1.0, suffix: str = "") -> str:
    """``x * scale`` formatted, or ``-`` for ``None``/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * scale:{spec}}{suffix}"


def headline_accuracy(acc: dict | None) -> str:
    """The one accuracy figure a table row shows: top-k hit rate or distribution TV error."""
    if not acc:
        return "-"
    for key, label in (("topk_hit_rate", "hit"), ("tv", "TV")):
        if acc.get(key) is not None:
            return f"{label} {acc[key]:.3f}"
    return "-"


def strategy_table(strategies: list[dict]) -> Table:
    """One row per strategy: times, speed-up, accuracy, overhead, quality cost."""
    rows = []
    for s in strategies:
        ov = s.get("overhead") or {}
        rows.append([
            s["name"] + (" (what-if)" if s.get("synthetic") else ""),
            s["family"],
            fmt(s["e2e_time_s"], ".2f", 1e3),
            fmt(s["tokens_per_s"], ",.0f"),
            fmt(s["speedup_vs_baseline"], ".3f", suffix="x"),
            fmt(s["e2e_time_s"] / s["balanced_time_s"] - 1.0, ".1f", 100.0, "%"),
            headline_accuracy(s.get("accuracy")),
            fmt(ov.get("seconds_per_batch"), ".1f", 1e6),
            fmt(s.get("dropped_token_fraction"), ".2f", 100.0, "%") + " / "
            + fmt(s.get("rerouted_token_fraction"), ".2f", 100.0, "%"),
        ])  # fmt: skip
    header = ["strategy", "family", "step ms", "tokens/s", "speed-up", "above balanced",
              "accuracy", "predictor us/step", "dropped / rerouted"]  # fmt: skip
    return Table(header, rows)


def guideline_blocks(guide: dict) -> list[Block]:
    blocks: list[Block] = [
        Heading("Where Token-to-Expert beats Distribution-Only"),
        Para(guide["rule"]),
    ]
    rows = [
        [fmt(ov, ".0f", 1e6), fmt(x, ".3f") if x is not None else "never (in the swept range)"]
        for ov, x in zip(guide["overhead_s"], guide["crossover_accuracy"], strict=True)
    ]
    blocks.append(
        Table(["token-predictor overhead (us per MoE layer)", "crossover accuracy"], rows)
    )
    return blocks


def ladder_blocks(ladder: list[dict], priced_under: str | None) -> list[Block]:
    """The assumption ladder: the DO-vs-T2E figure from the paper's assumptions to ours."""

    def best(r: dict, fam: str) -> str:
        return f"{r[fam]} {r[fam + '_s'] * 1e3:.2f} ms ({r[fam + '_speedup']:.3f}x)"

    rows = [
        [str(r["step"]), r["description"] if r["switched_off"] else "none: " + r["description"],
         best(r, "distribution"), best(r, "token"), f"{r['gain']:+.1%}"]
        for r in ladder
    ]  # fmt: skip
    moves = [(abs(b["gain"] - a["gain"]), b) for a, b in itertools.pairwise(ladder)]
    text = (
        f"From the paper's assumptions (step 0, conf/assumptions/moe_gps_paper.yaml) to ours "
        f"(last step, roofline), one more assumption switched off per step. Distribution-Only "
        f"vs Token-to-Expert: {ladder[0]['gain']:+.1%} under the paper's, "
        f"{ladder[-1]['gain']:+.1%} under ours (positive = Distribution-Only faster)."
    )
    if moves:
        d, rung = max(moves, key=lambda m: m[0])
        text += f" The largest move ({d:.1%} points) comes from: {rung['description']}."
    if priced_under:
        text += f" The strategy table above is priced under `{priced_under}`."
    return [
        Heading("Assumption ladder", 3),
        Para(text),
        Table(
            ["step", "switched off", "best Distribution-Only", "best Token-to-Expert",
             "DO vs T2E"], rows,
        ),
    ]  # fmt: skip


def paper_comparison_blocks(paper: dict, results: dict) -> list[Block]:
    """The paper's setting (assumed values marked) and its number beside ours."""
    from gps.report.papers import paper_rows

    blocks: list[Block] = []
    if paper.get("setting"):
        blocks.append(
            Para(
                "**The paper's setting, as this run composes it** ('assumed': the "
                "paper does not state it): " + "; ".join(paper["setting"]) + "."
            )
        )
    if paper.get("figures"):
        row = paper_rows([results])[0]
        blocks.append(Table(["paper's figure", "ours", "same direction", "ours / paper",
                             "reason for the gap"], [row[3:]]))  # fmt: skip
    return blocks


def published_blocks(points: list[dict]) -> list[Block]:
    """'Published predictors' section: one row per published operating point (not measured
    here), its accuracy in our metric, overhead priced on this run, and its source."""
    rows = [
        [
            p["name"],
            p["published_model"] + ("" if p["same_model"] else " (other model)"),
            f"{p['published_metric']} {p['published_accuracy']:.3f}",
            fmt(p["topk_hit_rate"], ".3f")
            + ("" if p["topk_hit_rate_high"] == p["topk_hit_rate"]
               else f" - {p['topk_hit_rate_high']:.3f}"),
            "x".join(map(str, p["widths"])) if p["widths"] else "not published",
            fmt(p["overhead_s_per_layer"], ".1f", 1e6),
            fmt(p.get("speedup_estimate"), ".3f", suffix="x")
            + {True: " (wins)", False: " (loses)", None: ""}[p.get("beats_distribution")],
            p["source"],
        ]
        for p in points
    ]  # fmt: skip
    conversions = sorted({f"{p['published_metric']}: {p['conversion']}" for p in points})
    return [
        Heading("Published predictors (published, not measured here)"),
        Para(
            "Operating points their authors report (`predictors/published.yaml`), not measured "
            "by moe-gps. Accuracy is converted to our top-k hit rate (range where the published "
            "metric only bounds it; points use the low end); overhead is the GEMM chain of its "
            "architecture priced on this run's model and GPU (us per MoE layer, critical path); "
            "the speed-up is the what-if sweep's at that accuracy plus that overhead, against "
            "the best Distribution-Only predictor. Rows marked 'other model' were published on "
            "another model: their accuracy may not carry over."
        ),
        Table(["predictor", "published on", "published figure", "top-k hit (ours)",
               "architecture priced", "us/layer", "est. speed-up", "source"], rows),
        Para("Metric conversions: " + "; ".join(conversions) + "."),
    ]  # fmt: skip


def engine_sentence(engine: dict) -> str:
    """Which serving engine the verdict assumes (``results.json`` ``setup.engine``)."""
    version = f" {engine['version']}" if engine.get("version") else ""
    sched = engine["scheduler_us"]
    comm = ", ".join(
        f"{p} {engine['alltoall'][p] or 'as the workload'}" for p in ("prefill", "decode")
    )
    return (
        f"**Engine.** The verdict assumes steps as `{engine['name']}`{version} runs them: "
        f"{sched['prefill']:,.0f} / {sched['decode']:,.0f} us of exposed CPU time per prefill / "
        f"decode step, kernels launched {engine['launch']['prefill']} (prefill) and "
        f"{engine['launch']['decode']} (decode), all-to-all {comm}, "
        f"{engine['alltoall_sms']['deepep']} SMs held by DeepEP's normal kernels while they "
        "overlap compute (`engine=` picks another: ideal, sglang, vllm, trtllm)."
    )


def eplb_sentence(results: dict) -> str | None:
    """How the periodic EPLB strategy was priced and why its transfer mode
    (``gps.advisor.eplb.schedules.transfer_mode``: the engine's own mode with its source, or
    ``strategy.eplb_async``); ``None`` when it was not priced or the results predate it."""
    cadence = results["setup"].get("eplb_cadence") or {}
    config = results.get("config") or {}
    entry = next((s for s in results["strategies"] if s["family"] == "periodic"
                  and "interval_steps" in (s.get("notes") or {})), None)  # fmt: skip
    if not cadence.get("priced") or entry is None or "engine" not in config:
        return None
    # imported here: gps.advisor imports gps.report (guideline map), not the other way round
    from gps.advisor.eplb.schedules import transfer_mode
    from gps.engine import EngineProfile

    override = config.get("strategy", {}).get("eplb_async")
    setting = f"strategy.eplb_async={str(override).lower()}"
    asyn, why = transfer_mode(EngineProfile.from_config(config["engine"]), override, setting)
    if asyn != cadence["asynchronous"]:  # priced otherwise than the config says: say only that
        why = f"{'asynchronous' if cadence['asynchronous'] else 'synchronous'} transfer"
    n = entry["notes"]
    stall, used = n["stall_s_per_rebalance"], n.get("window_used_steps", n["window_steps"])
    short = f"; {used:,} in this history" if used < n["window_steps"] else ""
    return (
        f"**Periodic EPLB.** `{entry['name']}` re-plans every {n['interval_steps']:,} steps "
        f"from the last {n['window_steps']:,}{short} ({n['num_redundant_experts']} redundant "
        "experts), "
        f"priced with {why}. One rebalance: {stall:.3f} s of stall "
        f"({stall / n['interval_steps'] * 1e3:.3f} ms per step amortised), "
        f"{n['bytes_per_gpu_per_rebalance'] / 1e9:.2f} GB onto the busiest GPU"
        + (f", landing {n['lag_steps']} steps after its trigger" if n["lag_steps"] else "")
        + (". The held-out span holds no rebalance: one representative rebalance is priced."
           if n["rebalances_in_span"] == 0 else ".")
    )  # fmt: skip


def build_run_report(results: dict, out_dir: Path, *, plots: bool = True) -> Path:
    """Write ``report.md``, ``report.html`` and (``plots``) ``plots/*.png`` into ``out_dir``.

    Returns:
        Path of ``report.md``.
    """
    out_dir = Path(out_dir)
    setup, strategies, rec = results["setup"], results["strategies"], results["recommendation"]
    title = (
        f"moe-gps: {setup['model']} on {setup['hardware']} ({setup['gpus']} GPUs), "
        f"{setup['phase']}, {setup['tokens_per_step']:,} tokens/step"
    )
    blocks: list[Block] = [Heading(title, 1), Para(f"**Recommendation.** {rec['text']}")]
    engine = setup.get("engine")
    if engine:
        blocks.append(Para(engine_sentence(engine)))
    eplb = eplb_sentence(results) if strategies else None
    if eplb:
        blocks.append(Para(eplb))
    loads = setup.get("loads")
    if loads:
        drawn = loads["source"] == "fluctuation model"
        fl = loads["fluctuation"]
        blocks.append(Para(
            f"**Loads from aggregate statistics.** `{setup['trace']}` holds {loads['statistics']}"
            " expert counts, no tokens: Token-to-Expert predictors, token-id predictors, "
            "capacity rules and the ILP are not priced. "
            + (f"Each held-out batch is drawn from the per-batch fluctuation model around the "
               f"recorded proportions (a moving mean over {loads['smoothing_steps']} recorded "
               f"steps; rho {fl['rho'][0]:.2e}, {fl.get('fit', 'per-layer fit')}; "
               "`eplb.fluctuation`, `docs/eplb.md`)" if drawn else
               "Each held-out batch is a recorded step, rescaled to the step's token copies")
            + f" ({loads['copies_per_step']:,.0f} token copies per step, "
            f"{loads['recorded_copies_per_step']:,.0f} per recorded step)."
        ))  # fmt: skip
    coverage = setup.get("layer_coverage")
    if coverage:
        n = len(coverage["moe_layers"])
        blocks.append(Para(
            f"**Layer coverage.** The trace covers {n} of the model's {coverage['of']} MoE "
            f"layers (MoE layers {', '.join(map(str, coverage['moe_layers']))}); every step "
            f"time here prices those {n} layers only (their attention and MoE), not the whole "
            "model."
        ))  # fmt: skip
    paper = results.get("paper")
    if paper:
        blocks += [
            Heading("Against the paper"),
            Table(["paper", "paper's figure", "ours"],
                  [[paper["name"], paper["claim"], paper["ours"]]]),
            Para(paper["why"]),
        ]  # fmt: skip
        blocks += paper_comparison_blocks(paper, results)
        if paper.get("assumption_ladder"):
            blocks += ladder_blocks(paper["assumption_ladder"], paper.get("assumptions"))
    forecast = results.get("forecast")
    if forecast:
        hs, every = forecast["horizons_steps"], forecast["record_interval_steps"]
        blocks += [
            Heading("Forecast error (mean absolute error of load proportions)"),
            Para(f"Horizons in training steps; the series holds one record every {every} "
                 "training steps. 'window' is the history a predictor averages or reads, "
                 "in training steps."),
            Table(["predictor", "window (steps)", *[f"{h:,} steps" for h in hs]],
                  [[r["predictor"], fmt(r["window_steps"], ",.0f"),
                    *[fmt(v, ".2f", 100.0, "%") for v in r["mae"]]]
                   for r in forecast["rows"]]),
        ]  # fmt: skip
    if strategies:
        blocks += _strategy_blocks(results, out_dir / "plots" if plots else None)
    if results.get("guideline_map"):
        blocks += map_blocks(results["guideline_map"], out_dir, plots)
    blocks += [
        Heading("Reproduce"),
        Code(
            results["command"] or "(composed outside the gps command: rerun with the same config)"
        ),
        Heading("Configuration"),
        Code(yaml.safe_dump(results["config"], sort_keys=False).rstrip()),
    ]
    write_atomic(out_dir / "report.html", render_html(blocks, title))
    return write_atomic(out_dir / "report.md", render_markdown(blocks, out_dir))


def _strategy_blocks(results: dict, plots: Path | None) -> list[Block]:
    """Strategy table, guidelines and (unless ``plots`` is ``None``) the plots."""
    setup, strategies, rec = results["setup"], results["strategies"], results["recommendation"]
    blocks: list[Block] = [
        Heading("Strategies"),
        Para(
            f"Priced on {setup['test_batches']} held-out batches of `{setup['trace']}` with "
            f"{setup['slots_per_gpu']} expert slots per GPU; times are the mean per step. "
            "Speed-up is over no balancing; 'above balanced' is how far the step sits above the "
            "same step with perfectly balanced experts."
        ),
        strategy_table(strategies),
    ]
    guide = results.get("guidelines")
    if guide:
        blocks += guideline_blocks(guide)
    published = results.get("published_predictors") or []
    if published:
        blocks += published_blocks(published)
    if plots is None:
        return blocks
    plots.mkdir(parents=True, exist_ok=True)
    blocks.append(Heading("Plots"))
    blocks.append(
        Image(plot_breakdown(strategies, plots / "breakdown.png"), "Runtime breakdown per strategy")
    )
    loads = {
        s["name"]: s["gpu_load"]
        for s in strategies
        if s["name"] in (results["baseline"], rec["strategy"])
    }
    if loads:
        blocks.append(
            Image(
                plot_gpu_load(loads, plots / "gpu_load.png"), "Per-GPU load before/after balancing"
            )
        )
    if guide:
        blocks.append(
            Image(
                plot_accuracy_speedup(guide, plots / "accuracy_speedup.png"),
                "Speed-up vs Token-to-Expert accuracy, crossover marked",
            )
        )
        blocks.append(Image(plot_frontier(guide, plots / "frontier.png", published),
                            "Accuracy x overhead frontier (triangles: published, not measured "
                            "here)"))  # fmt: skip
    return blocks
