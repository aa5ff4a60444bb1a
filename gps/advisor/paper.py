"""Our figure beside a paper's headline figure (``experiment`` presets set ``paper.metric``).

Metrics:

* ``do_vs_t2e`` (MoE-GPS): how much faster end-to-end the best Distribution-Only strategy is
  than the best Token-to-Expert strategy (real predictors only).
* ``speedup:ilp`` (MoETuner): the ILP placement's end-to-end speed-up over no balancing.
* ``speedup:capacity`` (Capacity-Aware Inference): the best capacity drop/reroute speed-up,
  with its dropped fraction; ``speedup:capacity_drop@1.5`` (any strategy name): that one.
* ``forecast`` (Prediction Is All MoE Needs): the best load predictor's proportion MAE at the
  two longest horizons; with a detected stable state, its relative and absolute errors there.
"""

from __future__ import annotations

from typing import Any

from gps.advisor.paper_compare import compare, reading

SCHEMA_VERSION = 1  # of results.json (docs/results.md)


def _best(entries: list[dict], family: str) -> dict:
    pool = [s for s in entries if s["family"] == family and not s["synthetic"]]
    if not pool:
        raise ValueError(f"paper.metric needs at least one {family!r} strategy in the run")
    return max(pool, key=lambda s: s["speedup_vs_baseline"])


def _named(entries: list[dict], name: str) -> dict:
    for s in entries:
        if s["name"] == name:
            return s
    raise ValueError(f"paper.metric needs the strategy {name!r} in the run")


def _forecast(results: dict) -> tuple[str, list[float]]:
    """Our forecast sentence and figures: in the stable state (relative error) when the run
    detected one, else the MAE over the test half."""
    fc = results["forecast"]
    hs = fc["horizons_steps"][-2:]
    st = fc.get("stable_state")
    if st:
        best = min(fc["rows"], key=lambda r: r["stable"]["relative"][-1]
                   if r["stable"]["relative"][-1] is not None else 1e9)  # fmt: skip
        rel, ab = best["stable"]["relative"][-2:], best["stable"]["absolute"][-2:]
        vals = ", ".join(
            f"{h:,} steps: relative {r:.2%} (absolute {a:.3%} points)"
            if r is not None
            else f"{h:,} steps: n/a"
            for h, r, a in zip(hs, rel, ab, strict=True)
        )
        ours = (f"{best['predictor']} in the stable state (from step {st['begins_step']:,}, "
                f"windows of {st['window_steps']:,} steps): {vals}")  # fmt: skip
        return ours, [v for v in rel if v is not None]
    best = min(fc["rows"], key=lambda r: r["mae"][-1] if r["mae"][-1] is not None else 1e9)
    vals = ", ".join(
        f"{v:.2%} at {h:,} steps" if v is not None else f"n/a at {h:,} steps"
        for h, v in zip(hs, best["mae"][-2:], strict=True)
    )
    ours = f"{best['predictor']}: mean absolute error of load proportions {vals}"
    return ours, [v for v in best["mae"][-2:] if v is not None]


def paper_figure(paper: Any, results: dict) -> dict:
    """``{name, claim, ours, why}`` for the report's 'Against the paper' section, plus the
    numeric comparison of ``gps.advisor.paper_compare.compare`` (``setting``, ``figures``,
    ``ours_values``, ``same_direction``, ``size_ratio``, ``gap``) and, for forecasts with a
    stable state, ``reading`` (which error reading the paper's numbers fit).

    Raises:
        ValueError: unknown ``paper.metric``, or the run lacks the strategies it needs.
    """
    metric, entries = paper.metric, results["strategies"]
    extra: dict = {}
    if metric == "do_vs_t2e":
        do, t2e = _best(entries, "distribution"), _best(entries, "token")
        gain = t2e["e2e_time_s"] / do["e2e_time_s"] - 1.0
        ours = (f"Distribution-Only ({do['name']}) {gain:+.1%} end-to-end vs Token-to-Expert "
                f"({t2e['name']}); positive = Distribution-Only faster")  # fmt: skip
        values = [gain]
    elif metric == "speedup:ilp":
        ilp = _best(entries, "ilp")
        gain = ilp["speedup_vs_baseline"] - 1.0
        ours = (f"ILP placement ({ilp['name']}) {gain:+.1%} end-to-end over static contiguous "
                "placement")  # fmt: skip
        values = [ilp["speedup_vs_baseline"]]
    elif metric.startswith("speedup:capacity"):
        name = metric.split(":", 1)[1]
        cap = _best(entries, "capacity") if name == "capacity" else _named(entries, name)
        ours = (f"{cap['name']}: {cap['speedup_vs_baseline']:.3f}x, "
                f"{cap['dropped_token_fraction']:.2%} of token copies dropped and "
                f"{cap['rerouted_token_fraction']:.2%} rerouted")  # fmt: skip
        values = [cap["speedup_vs_baseline"]]
    elif metric == "forecast":
        ours, values = _forecast(results)
        extra["reading"] = reading(
            results, [float(x) for x in (getattr(paper, "figures", None) or [])]
        )
    else:
        raise ValueError(
            f"paper.metric={metric!r}: expected do_vs_t2e, speedup:ilp, speedup:capacity, "
            "speedup:capacity_<drop|reroute>@<gamma> or forecast"
        )
    return {"name": paper.name, "claim": paper.claim, "ours": ours, "why": paper.why,
            **compare(paper, results, values), **extra}  # fmt: skip
