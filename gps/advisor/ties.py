"""Ties between strategies, said plainly: which strategies tied and why.

When every dynamic strategy keeps the plan that was in place before the first held-out batch
(re-planning would cost more in expert-weight copies than it saves), they all serve the same
plan: their step times are equal up to predictor overhead, the recommendation among them is
a tie-break, and neither their accuracy nor the oracle line says anything about prediction.
"""

from __future__ import annotations

# Families whose plan can change from one held-out batch to the next.
DYNAMIC = ("periodic", "distribution", "token", "oracle")


def describe_tie(tied: list[dict], entries: list[dict], margin: float) -> dict | None:
    """``recommendation.tie`` of ``results.json``: ``None`` when one strategy leads alone.

    Args:
        tied: deployable strategy entries within ``margin`` (relative speed-up) of the fastest,
            the recommended one among them.
        entries: every strategy entry of the run (the oracle is looked up here).
        margin: the relative speed-up below which strategies count as tied.

    Returns:
        ``strategies`` (names, fastest first), ``same_step_time`` (all equal to 1e-9
        relative), ``replanned`` (whether any tied dynamic strategy moved expert weights on a
        held-out batch), ``oracle_tied`` (the oracle is within ``margin`` too) and ``text``
        (the sentence the report's first paragraph carries).
    """
    if len(tied) < 2:
        return None
    tied = sorted(tied, key=lambda s: -s["speedup_vs_baseline"])
    times = [s["e2e_time_s"] for s in tied]
    same = max(times) - min(times) <= 1e-9 * max(times)
    dynamic = [s for s in tied if s["family"] in DYNAMIC]
    replanned = any(s["migration_bytes_per_step"] > 0 for s in dynamic)
    top = tied[0]["speedup_vs_baseline"]
    oracle = next((s for s in entries if s["family"] == "oracle"), None)
    oracle_tied = oracle is not None and (
        top / (1.0 + margin) <= oracle["speedup_vs_baseline"] <= top * (1.0 + margin)
    )
    names = ", ".join(s["name"] for s in tied)
    text = f"**Tie:** {len(tied)} strategies are within {margin:.1%} of each other ({names})"
    if dynamic and not replanned:
        text += (
            ". None of them re-planned on the held-out batches: each kept the plan in place "
            "before the first batch, because moving expert replicas would cost more than it "
            "saves on the loads they predicted, so they serve the same plan and "
            + ("their step times are identical" if same else "differ only by predictor overhead")
            + ". Their accuracy does not decide anything here; the pick among them is a "
            "tie-break (fewest changed tokens, then least predictor time)."
        )
    else:
        text += (
            "; the pick among them is a tie-break (fewest changed tokens, then least predictor "
            "time), not a measured advantage."
        )
    if oracle_tied:
        text += (
            " The oracle (perfect knowledge of every batch) ties too: on these batches better "
            "prediction cannot pay."
        )
    return {
        "strategies": [s["name"] for s in tied],
        "same_step_time": same,
        "replanned": replanned,
        "oracle_tied": oracle_tied,
        "text": text,
    }
