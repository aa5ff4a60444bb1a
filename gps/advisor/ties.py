"""Ties between strategies, said plainly: which strategies tied and why.

When no dynamic strategy copies an expert replica on the held-out batches (copying would cost
more than it saves), they all stay on the plan in place before the first batch (or drop
replicas, which is free): their step times are (nearly) equal, the recommendation among them
is a tie-break, and neither their accuracy nor the oracle line says anything about
prediction.
"""

from __future__ import annotations

from gps.advisor.uncertainty import overlaps

# Families whose plan can change from one held-out batch to the next.
DYNAMIC = ("periodic", "distribution", "token", "oracle")


def describe_tie(tied: list[dict], entries: list[dict]) -> dict | None:
    """``recommendation.tie`` of ``results.json``: ``None`` when one strategy leads alone.

    Args:
        tied: deployable strategy entries whose ``speedup_ci95`` overlaps the fastest one's
            (``gps.advisor.uncertainty``), the recommended one among them.
        entries: every strategy entry of the run (the oracle is looked up here).

    Returns:
        ``strategies`` (names, fastest first), ``same_step_time`` (all equal to 1e-9
        relative), ``moved_weights`` (whether any tied dynamic strategy copied expert weights
        on a held-out batch), ``oracle_tied`` (the oracle's interval overlaps the fastest's
        too) and ``text`` (the sentence the report's first paragraph carries).
    """
    if len(tied) < 2:
        return None
    tied = sorted(tied, key=lambda s: -s["speedup_vs_baseline"])
    times = [s["e2e_time_s"] for s in tied]
    same = max(times) - min(times) <= 1e-9 * max(times)
    dynamic = [s for s in tied if s["family"] in DYNAMIC]
    moved = any(s["migration_bytes_per_step"] > 0 for s in dynamic)
    oracle = next((s for s in entries if s["name"] == "oracle"), None)
    oracle_tied = oracle is not None and overlaps(oracle["speedup_ci95"], tied[0]["speedup_ci95"])
    names = ", ".join(s["name"] for s in tied)
    text = (f"**Tie:** {len(tied)} strategies' 95% intervals overlap the fastest one's "
            f"({names})")  # fmt: skip
    if dynamic and not moved:
        spread = max(times) / min(times) - 1.0
        bare = [s["e2e_time_s"] - s.get("breakdown_s", {}).get("predictor", 0.0) for s in tied]
        flat = max(bare) - min(bare) <= 1e-9 * max(bare)
        token_level = any(s["family"] == "token" for s in tied)
        why = ("predictor overhead" if flat
               else "predictor overhead and token-level mechanisms or plan differences"
               if token_level else "predictor overhead and plan differences")  # fmt: skip
        text += (
            ". None of them copied an expert replica on the held-out batches: copying would cost "
            "more than it saves on the loads they predicted, so they serve the plan in place "
            "before the first batch (at most dropping replicas, which is free), and "
            + ("their step times are identical" if same else f"their step times differ by at "
               f"most {spread:.2%} ({why})")
            + (". Their accuracy does not decide anything here" if flat
               else ". The differences are within the batches' spread")
            + "; the pick among them is a tie-break (fewest changed tokens, then least "
            "predictor time)."
        )  # fmt: skip
    else:
        text += (
            "; the pick among them is a tie-break (fewest changed tokens, then least predictor "
            "time), not a measured advantage."
        )
    if oracle_tied:
        text += (
            " The oracle (perfect knowledge of every batch) ties too: on these batches better "
            "prediction cannot pay measurably."
        )
    return {
        "strategies": [s["name"] for s in tied],
        "same_step_time": same,
        "moved_weights": moved,
        "oracle_tied": oracle_tied,
        "text": text,
    }
