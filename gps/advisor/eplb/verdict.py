"""Speed-ups with their intervals, and the verdict among the strategies.

A strategy's speed-up is no balancing's mean step time over the strategy's (plus its
rebalance stall amortised over its interval); its 95% interval is a moving-block bootstrap
over evaluation steps paired with no balancing (:func:`speedup_ci`). The verdict
(:func:`choose`) is the fastest candidate; candidates within ``tie_margin`` of it are tied
and the simplest wins (``SIMPLICITY``, then fewer redundant experts).

Shapes: ``S`` evaluation steps. Units: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gps.advisor.eplb.schedules import StallSummary

STRATEGIES = ("no_balancing", "static", "periodic", "predictive", "dispatch")
#: simplest first: a tie goes to the earliest
SIMPLICITY = {name: i for i, name in enumerate(STRATEGIES)}


def speedup_ci(
    base_s: np.ndarray,
    strat_s: np.ndarray,
    *,
    extra_s: float = 0.0,
    block: int = 10,
    samples: int = 400,
    seed: int = 0,
) -> tuple[float, list[float]]:
    """``mean(base) / (mean(strat) + extra)`` and its 95% interval from a moving-block
    bootstrap over steps (blocks of ``block`` steps keep their correlation; seeded)."""
    base_s, strat_s = np.asarray(base_s, dtype=float), np.asarray(strat_s, dtype=float)
    point = float(base_s.mean() / (strat_s.mean() + extra_s))
    n = base_s.size
    b = max(1, min(block, n))
    starts = np.arange(n - b + 1)
    rng = np.random.default_rng(seed)
    k = -(-n // b)
    pick = rng.choice(starts, size=(samples, k))
    idx = (pick[..., None] + np.arange(b)).reshape(samples, -1)[:, :n]
    ratios = base_s[idx].mean(axis=1) / (strat_s[idx].mean(axis=1) + extra_s)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return point, [float(lo), float(hi)]


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

    def summary(self, base_s: np.ndarray, *, block: int, samples: int, seed: int) -> dict:
        """The strategy's row (``results.json`` ``eplb.pools.<phase>.strategies``): speed-up
        over ``base_s [S]`` (no balancing's steps) with its 95% interval, mean step seconds
        (stall included), stall, bytes and lag per rebalance."""
        sp, ci = speedup_ci(base_s, self.step_s, extra_s=self.extra_s, block=block,
                            samples=samples, seed=seed)  # fmt: skip
        return {
            "strategy": self.strategy,
            "num_redundant_experts": self.num_redundant,
            "speedup": sp,
            "speedup_ci95": ci,
            "step_s": float(self.step_s.mean() + self.extra_s),
            "stall_s_per_rebalance": self.stall.stall_s,
            "max_pass_stall_s": self.stall.max_pass_stall_s,
            "bytes_per_gpu_per_rebalance": self.stall.bytes_per_gpu,
            "rebalance_lag_steps": self.lag_steps,
        }


def choose(candidates: list[dict], tie_margin: float) -> dict:
    """The verdict among strategy rows (``Priced.summary``): the fastest, or among those
    within ``tie_margin`` (relative speed-up) of it the simplest (``SIMPLICITY``), then the
    one with fewer redundant experts.

    Raises:
        ValueError: no candidate.
    """
    if not candidates:
        raise ValueError("no strategy to choose from")
    top = max(c["speedup"] for c in candidates)
    tied = [c for c in candidates if c["speedup"] >= top * (1 - tie_margin)]
    return min(tied, key=lambda c: (SIMPLICITY[c["strategy"]], c["num_redundant_experts"]))
