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


def differ(values: list[float]) -> bool:
    """Whether ``values`` (seconds) differ by more than 1e-9 relative."""
    return max(values) - min(values) > 1e-9 * max(max(values), 1e-300)


def causes(tied: list[dict], parts: list[dict]) -> str:
    """What besides predictor overhead separates tied strategies that kept their start plan,
    read off their ``breakdown_s`` (``parts``): ``expert_fetch`` differing is the order each
    strategy's belief prefetches non-resident experts in; the rest is the plans they serve
    (and, for Token-to-Expert under ``assumptions=moe_gps_paper``, the scatter its hits skip)."""
    fetch = [b.get("expert_fetch", 0.0) for b in parts]
    rest = [s["e2e_time_s"] - b.get("predictor", 0.0) - f
            for s, b, f in zip(tied, parts, fetch, strict=True)]  # fmt: skip
    token_level = any(s["family"] == "token" for s in tied)
    plan = "plan or dispatch differences" if token_level else "plan differences"
    said = [*(["prefetch order"] if differ(fetch) else []), *([plan] if differ(rest) else [])]
    return " and ".join(said or [plan])


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
    same = not differ(times)
    dynamic = [s for s in tied if s["family"] in DYNAMIC]
    moved = any(s["migration_bytes_per_step"] > 0 for s in dynamic)
    oracle = next((s for s in entries if s["name"] == "oracle"), None)
    oracle_tied = oracle is not None and overlaps(oracle["speedup_ci95"], tied[0]["speedup_ci95"])
    names = ", ".join(s["name"] for s in tied)
    text = (f"**Tie:** {len(tied)} strategies' 95% intervals overlap the fastest one's "
            f"({names})")  # fmt: skip
    if dynamic and not moved:
        spread = max(times) / min(times) - 1.0
        parts = [s.get("breakdown_s", {}) for s in tied]
        bare = [s["e2e_time_s"] - b.get("predictor", 0.0) for s, b in zip(tied, parts, strict=True)]
        flat = not differ(bare)
        why = "predictor overhead" if flat else f"predictor overhead and {causes(tied, parts)}"
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
