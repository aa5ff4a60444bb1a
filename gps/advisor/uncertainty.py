"""How sure a verdict is: bootstrap intervals of speed-ups over held-out batches and seeds.

A strategy's speed-up is ``mean(baseline step seconds) / mean(strategy step seconds)`` over the
held-out batches (and the runs of ``evaluation.seeds``). Its 95% interval resamples what the
verdict could have been measured on: seeds with replacement, then, inside each drawn seed, its
batches with replacement, the baseline and the strategy on the *same* draws (paired: both were
priced on the same batches). Percentile interval of ``RESAMPLES`` draws, seeded from the run's
seed so a re-run gives the same interval, widened to contain the point estimate. Consecutive
steps of one recorded series (``gps-eplb``) are correlated: ``block > 1`` draws them in moving
blocks of ``block`` steps (Kunsch's moving-block bootstrap) instead of one by one.

The tie rule (:func:`tied_with_leader`) is the one every verdict uses (``gps``'s
recommendation, ``gps-eplb``'s verdict): the leader is the fastest strategy, and every strategy
whose interval overlaps the leader's ties with it.

Shapes: ``S`` seeds (runs), ``N`` held-out batches (or steps) per run.
"""

from __future__ import annotations

from collections.abc import Sequence

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
                     resamples: int = RESAMPLES, block: int = 1) -> np.ndarray:  # fmt: skip
    """``[resamples, S, N]`` counts: how often each (seed, batch) is drawn in each resample
    (seeds with replacement, then each drawn seed's batches with replacement: ``ceil(N /
    block)`` runs of ``block`` consecutive batches from uniform starts, cut to ``N``;
    ``block`` is capped at ``N``, and ``1`` draws batches one by one)."""
    if block < 1:
        raise ValueError(f"block={block}: must be >= 1")
    b = min(block, batches)
    k = -(-batches // b)  # blocks per drawn seed
    w = np.zeros((resamples, seeds, batches))
    picks = rng.integers(0, seeds, size=(resamples, seeds))  # [B, S] drawn seeds
    starts = rng.integers(0, batches - b + 1, size=(resamples, seeds, k))
    inner = (starts[..., None] + np.arange(b)).reshape(resamples, seeds, k * b)[..., :batches]
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
    block: int = 1,
) -> tuple[float, float]:
    """``(lo, hi)``: the ``level`` percentile bootstrap interval of the speed-up
    ``mean(baseline_s) / mean(strategy_s)`` (module docstring), widened to contain it.

    Args:
        baseline_s, strategy_s: ``[N]`` or ``[S, N]`` step seconds on the same batches.
        seed: seeds the resampling (the run's ``seed``).
        resamples, level: number of bootstrap draws and the interval's coverage, (0, 1).
        block: batches per moving block (``resample_weights``); 1: independent batches.
    """
    base, strat = _check(baseline_s, "baseline_s"), _check(strategy_s, "strategy_s")
    if base.shape != strat.shape:
        raise ValueError(f"baseline_s {base.shape} and strategy_s {strat.shape}: same batches")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level}: must be in (0, 1)")
    w = resample_weights(*base.shape, np.random.default_rng(seed), resamples, block)
    ratio = np.einsum("bsn,sn->b", w, base) / np.einsum("bsn,sn->b", w, strat)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(ratio, [tail, 100.0 - tail])
    point = float(base.mean() / strat.mean())
    return float(min(lo, point)), float(max(hi, point))


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals share a point (a tie when one is the leader's)."""
    return a[0] <= b[1] and b[0] <= a[1]


def tied_with_leader(speedups: Sequence[float], intervals: Sequence[Sequence[float]]) -> list[int]:
    """Indices (in input order) of the leader, the first of the largest ``speedups``, and of
    every candidate whose interval ``(lo, hi)`` overlaps the leader's: the tie of a verdict.
    The caller recommends the simplest among them.

    Raises:
        ValueError: no candidate, or ``speedups`` and ``intervals`` of different lengths.
    """
    if not speedups or len(speedups) != len(intervals):
        raise ValueError(f"{len(speedups)} speed-ups, {len(intervals)} intervals: need equal, >= 1")
    lead = int(np.argmax(speedups))
    band = (intervals[lead][0], intervals[lead][1])
    return [i for i, ci in enumerate(intervals) if i == lead or overlaps((ci[0], ci[1]), band)]
