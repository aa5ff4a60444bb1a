"""The accuracy x overhead frontier where Token-to-Expert beats Distribution-Only.

A what-if Token-to-Expert predictor of set top-k accuracy ``a`` (``predictors.whatif``) plans
duplication for the held-out batches; its step time without overhead is priced once per
``a``, and an overhead of ``o`` seconds per MoE layer on the critical path adds exactly
``o * L_moe`` to every step (``batch_cost`` adds on-path predictor time linearly), so the grid
``[O, A]`` costs ``A`` pricings. The crossover at overhead ``o`` is the lowest accuracy whose
speed-up beats the best real Distribution-Only predictor's (strictly: a tie is no reason to
deploy the costlier family), interpolated linearly between grid points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

TIE = 1e-9  # relative: speed-ups closer than this are equal (float noise)


def crossover(accuracy: np.ndarray, speedup: np.ndarray, target: float) -> float | None:
    """Lowest ``a`` at which ``speedup(a)`` (piecewise linear over ``accuracy``) exceeds
    ``target``; ``None`` when it never does in the grid. ``accuracy`` ascending."""
    above = np.flatnonzero(speedup > target * (1.0 + TIE))
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(accuracy[0])
    a0, a1, s0, s1 = accuracy[i - 1], accuracy[i], speedup[i - 1], speedup[i]
    return float(a0 + (target - s0) * (a1 - a0) / (s1 - s0))


def frontier(
    step_time_s: Callable[[float], float],
    accuracies: Sequence[float],
    overheads_s: Sequence[float],
    moe_layers: int,
    baseline_s: float,
    distribution_speedup: float,
) -> dict:
    """Speed-up grid ``[O, A]`` and crossover accuracy per overhead.

    Args:
        step_time_s: mean step seconds of the what-if predictor at accuracy ``a``, no overhead.
        accuracies: top-k accuracies to sweep (sorted here).
        overheads_s: seconds per MoE layer.
        moe_layers: ``L_moe``.
        baseline_s: no-balancing step seconds.
        distribution_speedup: best real Distribution-Only speed-up.

    Returns:
        ``accuracy [A]``, ``overhead_s [O]``, ``token_speedup [O][A]``,
        ``crossover_accuracy [O]`` (``None`` = never), ``distribution_speedup``.
    """
    acc = np.sort(np.asarray(accuracies, dtype=float))
    if acc.size == 0 or acc[0] < 0 or acc[-1] > 1:
        raise ValueError(f"report.accuracy_grid: need values in [0, 1], got {list(accuracies)}")
    ov = np.sort(np.asarray(overheads_s, dtype=float))
    if ov.size == 0 or np.any(ov < 0):
        raise ValueError(f"report.overhead_grid_us: need values >= 0, got {list(overheads_s)}")
    base = np.array([step_time_s(float(a)) for a in acc])  # [A]
    speed = baseline_s / (base[None, :] + ov[:, None] * moe_layers)  # [O, A]
    return {
        "accuracy": acc.tolist(),
        "overhead_s": ov.tolist(),
        "token_speedup": speed.tolist(),
        "crossover_accuracy": [crossover(acc, row, distribution_speedup) for row in speed],
        "distribution_speedup": float(distribution_speedup),
    }


def rule(guide: dict, setting: str) -> str:
    """The one-line guideline for this regime, from the crossover numbers."""
    name, dist = guide["distribution_name"], guide["distribution_speedup"]
    lowest = guide["accuracy"][0]
    wins = [
        (ov, x) for ov, x in zip(guide["overhead_s"], guide["crossover_accuracy"], strict=True)
        if x is not None
    ]  # fmt: skip
    head = f"{setting}: Distribution-Only ({name}, {dist:.3f}x) is the pick"
    if not wins:
        return (
            f"{head}: no Token-to-Expert predictor beats it at any swept accuracy "
            f"({lowest:.2f}-{guide['accuracy'][-1]:.2f}) and overhead."
        )
    parts = [
        f"{'any swept accuracy' if x <= lowest else f'top-k accuracy >= {x:.2f}'} at "
        f"{ov * 1e6:.0f} us/layer"
        for ov, x in wins
    ]
    never = [f"{ov * 1e6:.0f}" for ov, x in zip(guide["overhead_s"], guide["crossover_accuracy"],
                                              strict=True) if x is None]  # fmt: skip
    tail = f"; never at {', '.join(never)} us/layer" if never else ""
    return f"{head} unless a Token-to-Expert predictor reaches {'; '.join(parts)}{tail}."
