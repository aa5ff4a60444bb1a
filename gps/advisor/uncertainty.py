"""How sure a verdict is: bootstrap intervals of speed-ups over held-out batches and seeds.

A strategy's speed-up is ``mean(baseline step seconds) / mean(strategy step seconds)`` over the
held-out batches (and the runs of ``evaluation.seeds``). Its 95% interval resamples what the
verdict could have been measured on: seeds with replacement, then, inside each drawn seed, its
batches with replacement, the baseline and the strategy on the *same* draws (paired: both were
priced on the same batches). Percentile interval of ``RESAMPLES`` draws, seeded from the run's
seed so a re-run gives the same interval.

Shapes: ``S`` seeds (runs), ``N`` held-out batches per run.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 4000
LEVEL = 0.95


def _check(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] < 1 or a.shape[0] < 1:
        raise ValueError(f"{name}: expected step seconds [N] or [S, N], got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name}: step seconds must be finite and > 0")
    return a


def resample_weights(seeds: int, batches: int, rng: np.random.Generator,
                     resamples: int = RESAMPLES) -> np.ndarray:  # fmt: skip
    """``[resamples, S, N]`` counts: how often each (seed, batch) is drawn in each resample
    (seeds with replacement, then each drawn seed's batches with replacement)."""
    w = np.zeros((resamples, seeds, batches))
    picks = rng.integers(0, seeds, size=(resamples, seeds))  # [B, S] drawn seeds
    inner = rng.integers(0, batches, size=(resamples, seeds, batches))  # batches of each draw
    b_idx = np.arange(resamples)[:, None, None]
    np.add.at(w, (b_idx, picks[:, :, None], inner), 1.0)
    return w


def speedup_interval(
    baseline_s: np.ndarray,
    strategy_s: np.ndarray,
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> tuple[float, float]:
    """``(lo, hi)``: the ``level`` percentile bootstrap interval of the speed-up
    ``mean(baseline_s) / mean(strategy_s)`` (module docstring).

    Args:
        baseline_s, strategy_s: ``[N]`` or ``[S, N]`` step seconds on the same batches.
        seed: seeds the resampling (the run's ``seed``).
        resamples, level: number of bootstrap draws and the interval's coverage, (0, 1).
    """
    base, strat = _check(baseline_s, "baseline_s"), _check(strategy_s, "strategy_s")
    if base.shape != strat.shape:
        raise ValueError(f"baseline_s {base.shape} and strategy_s {strat.shape}: same batches")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level}: must be in (0, 1)")
    w = resample_weights(*base.shape, np.random.default_rng(seed), resamples)
    ratio = np.einsum("bsn,sn->b", w, base) / np.einsum("bsn,sn->b", w, strat)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(ratio, [tail, 100.0 - tail])
    point = float(base.mean() / strat.mean())
    return float(min(lo, point)), float(max(hi, point))


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals share a point (a tie when one is the leader's)."""
    return a[0] <= b[1] and b[0] <= a[1]
