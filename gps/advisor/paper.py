"""Our figure beside a paper's headline figure (``experiment`` presets set ``paper.metric``).

Metrics:

* ``do_vs_t2e`` (MoE-GPS): how much faster end-to-end the best Distribution-Only strategy is
  than the best Token-to-Expert strategy (real predictors only).
* ``speedup:ilp`` (MoETuner): the ILP placement's end-to-end speed-up over no balancing.
* ``speedup:capacity`` (Capacity-Aware Inference): the best capacity drop/reroute speed-up,
  with its dropped fraction.
* ``forecast`` (Prediction Is All MoE Needs): the best load predictor's proportion MAE at the
  two longest horizons.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1  # of results.json (docs/results.md)


def _best(entries: list[dict], family: str) -> dict:
    pool = [s for s in entries if s["family"] == family and not s["synthetic"]]
    if not pool:
        raise ValueError(f"paper.metric needs at least one {family!r} strategy in the run")
    return max(pool, key=lambda s: s["speedup_vs_baseline"])


def paper_figure(paper: Any, results: dict) -> dict:
    """``{name, claim, ours, why}`` for the report's 'Against the paper' section.

    Raises:
        ValueError: unknown ``paper.metric``, or the run lacks the strategies it needs.
    """
    metric, entries = paper.metric, results["strategies"]
    if metric == "do_vs_t2e":
        do, t2e = _best(entries, "distribution"), _best(entries, "token")
        gain = t2e["e2e_time_s"] / do["e2e_time_s"] - 1.0
        ours = (f"Distribution-Only ({do['name']}) {gain:+.1%} end-to-end vs Token-to-Expert "
                f"({t2e['name']}); positive = Distribution-Only faster")  # fmt: skip
    elif metric == "speedup:ilp":
        ilp = _best(entries, "ilp")
        gain = ilp["speedup_vs_baseline"] - 1.0
        ours = f"ILP placement {gain:+.1%} end-to-end over static placement"
    elif metric == "speedup:capacity":
        cap = _best(entries, "capacity")
        ours = (f"{cap['name']}: {cap['speedup_vs_baseline']:.3f}x, "
                f"{cap['dropped_token_fraction']:.2%} of token copies dropped and "
                f"{cap['rerouted_token_fraction']:.2%} rerouted")  # fmt: skip
    elif metric == "forecast":
        fc = results["forecast"]
        hs = fc["horizons_steps"][-2:]
        best = min(fc["rows"], key=lambda r: r["mae"][-1] if r["mae"][-1] is not None else 1e9)
        vals = ", ".join(
            f"{v:.2%} at {h:,} steps" if v is not None else f"n/a at {h:,} steps"
            for h, v in zip(hs, best["mae"][-2:], strict=True)
        )
        ours = f"{best['predictor']}: mean absolute error of load proportions {vals}"
    else:
        raise ValueError(
            f"paper.metric={metric!r}: expected do_vs_t2e, speedup:ilp, speedup:capacity "
            "or forecast"
        )
    return {"name": paper.name, "claim": paper.claim, "ours": ours, "why": paper.why}
