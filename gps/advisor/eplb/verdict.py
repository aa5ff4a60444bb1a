"""Speed-ups with their intervals, and the verdict among the strategies.

A strategy's speed-up is no balancing's mean step time over the strategy's (its rebalance stall
amortised over its interval added to every step). Its 95% interval and the tie rule are
``gps``'s own (``gps.advisor.uncertainty``): the paired percentile bootstrap of
``speedup_interval``, widened to contain the point, here over evaluation steps in moving blocks
of ``eplb.block_steps`` (consecutive steps of a recorded series are correlated); and
``tied_with_leader``: every candidate whose interval overlaps the fastest one's ties with it.
The verdict (:func:`choose`) is the simplest of the tied (``SIMPLICITY``, then fewer
redundant experts), and the tie is said (:func:`describe_tie`).

Shapes: ``S`` evaluation steps. Units: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gps.advisor.eplb.schedules import StallSummary
from gps.advisor.uncertainty import speedup_interval, tied_with_leader

STRATEGIES = ("no_balancing", "static", "periodic", "predictive", "dispatch")
#: simplest first: a tie goes to the earliest
SIMPLICITY = {name: i for i, name in enumerate(STRATEGIES)}


@dataclass(frozen=True)
class Priced:
    """One strategy at one redundant-expert count, priced on the evaluation steps.

    Attributes:
        strategy: a name of ``STRATEGIES``.
        num_redundant: ``R``.
        step_s: ``[S]`` seconds of each evaluation step under the strategy's plans.
        extra_s: seconds added to every step: one rebalance's stall over the interval.
        stall: the strategy's mean rebalance (zeros for a static plan).
        lag_steps: steps a rebalance takes to land (asynchronous), 0 otherwise.
    """

    strategy: str
    num_redundant: int
    step_s: np.ndarray
    extra_s: float = 0.0
    stall: StallSummary = field(default_factory=StallSummary)
    lag_steps: int = 0

    def summary(self, base_s: np.ndarray, *, block: int, resamples: int, seed: int) -> dict:
        """The strategy's row (``results.json`` ``eplb.pools.<phase>.strategies``): speed-up
        over ``base_s [S]`` (no balancing's steps) with its 95% interval
        (``speedup_interval``: ``resamples`` draws in moving blocks of ``block`` steps,
        seeded), mean step seconds (stall included), stall, bytes and lag per rebalance."""
        steps = np.asarray(self.step_s, dtype=float) + self.extra_s
        lo, hi = speedup_interval(base_s, steps, seed=seed, resamples=resamples, block=block)
        return {
            "strategy": self.strategy,
            "num_redundant_experts": self.num_redundant,
            "speedup": float(np.mean(base_s) / steps.mean()),
            "speedup_ci95": [lo, hi],
            "step_s": float(steps.mean()),
            "stall_s_per_rebalance": self.stall.stall_s,
            "max_pass_stall_s": self.stall.max_pass_stall_s,
            "bytes_per_gpu_per_rebalance": self.stall.bytes_per_gpu,
            "rebalance_lag_steps": self.lag_steps,
        }


def choose(candidates: list[dict]) -> tuple[dict, list[dict]]:
    """``(verdict, tied)`` among strategy rows (``Priced.summary``): ``tied`` are the fastest
    row and every row whose ``speedup_ci95`` overlaps its interval
    (``gps.advisor.uncertainty.tied_with_leader``, fastest first); the verdict is the simplest
    of them (``SIMPLICITY``), then the one with fewer redundant experts, then the faster.

    Raises:
        ValueError: no candidate.
    """
    if not candidates:
        raise ValueError("no strategy to choose from")
    idx = tied_with_leader([c["speedup"] for c in candidates],
                           [c["speedup_ci95"] for c in candidates])  # fmt: skip
    tied = sorted((candidates[i] for i in idx), key=lambda c: -c["speedup"])
    best = min(tied, key=lambda c: (SIMPLICITY[c["strategy"]], c["num_redundant_experts"],
                                    -c["speedup"]))  # fmt: skip
    return best, tied


def label(row: dict) -> str:
    """``strategy R=<R> <speed-up>x (<lo>-<hi>)``: a row as the tie sentence names it."""
    lo, hi = row["speedup_ci95"]
    return (f"{row['strategy']} R={row['num_redundant_experts']} {row['speedup']:.3f}x "
            f"({lo:.3f}-{hi:.3f})")  # fmt: skip


def describe_tie(verdict: dict, tied: list[dict]) -> dict | None:
    """``results.json`` ``eplb.tie`` (and ``eplb.pools.<phase>.tie``): ``None`` when the
    fastest row's interval overlaps no other row's.

    Returns:
        ``leader`` (the fastest row's ``strategy`` and ``num_redundant_experts``),
        ``strategies`` (each tied row's ``strategy``, ``num_redundant_experts``, ``speedup``,
        ``speedup_ci95``, fastest first) and ``text`` (the sentence the printed verdict
        carries).
    """
    if len(tied) < 2:
        return None
    leader = tied[0]
    names = "; ".join(label(c) for c in tied)
    if verdict is leader:
        pick = (f"the fastest, {verdict['strategy']}, is also the simplest of them, so the "
                "verdict does not rest on the tie-break")  # fmt: skip
    else:
        pick = (f"the verdict is the simplest of them, {verdict['strategy']} "
                f"(R={verdict['num_redundant_experts']}), not the fastest "
                f"({leader['strategy']}, R={leader['num_redundant_experts']}): on these steps "
                "the difference is not measurable")  # fmt: skip
    text = (f"**Tie:** {len(tied)} candidates' 95% intervals overlap the fastest one's "
            f"({names}); {pick} (simplest: no balancing < static < periodic < predictive < "
            "dispatch, then fewer redundant experts).")  # fmt: skip
    return {
        "leader": {"strategy": leader["strategy"],
                   "num_redundant_experts": leader["num_redundant_experts"]},
        "strategies": [{k: c[k] for k in ("strategy", "num_redundant_experts", "speedup",
                                          "speedup_ci95")} for c in tied],
        "text": text,
    }  # fmt: skip
