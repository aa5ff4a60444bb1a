"""Rebalance schedules and the window x interval choice of periodic EPLB.

* :func:`periodic_schedule`: re-plan every ``I`` steps from the mean of the last ``W`` steps
  served (or a predictor's forecast), each plan serving from when its rebalance lands;
* :func:`mean_stall`: one rebalance's stall (``gps.plans.rebalance``), averaged over a
  schedule's consecutive plans;
* :func:`transfer_mode`: whether rebalances are priced synchronously or asynchronously, and
  why (the engine's own mode with its source, or the override);
* :func:`interval_study`: for each window, the mean step time of a plan ``h`` steps old (its
  age curve), amortised with one rebalance's stall into step time against the interval
  (:func:`interval_curve`), the best ``(W, I)``, and the recorded loads' drift
  (:func:`window_drift`).

Shapes: ``S`` evaluation steps, ``H`` history steps, ``L`` MoE layers, ``E`` experts, ``G``
GPUs, ``A`` measured plan ages. Units: seconds, steps, token copies.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gps.advisor.eplb.pricing import StepTimeModel
from gps.advisor.eplb.replay import load_ratio
from gps.engine import EngineProfile
from gps.hardware import Cluster
from gps.plans.eplb_placement import eplb_placement
from gps.plans.plan import Plan
from gps.plans.rebalance import RebalanceCosts, rebalance_stall


@dataclass
class Schedule:
    """Plans a strategy serves: ``plans[i]`` from evaluation step ``starts[i]``."""

    starts: list[int]
    plans: list[Plan]

    def ratios(self, loads: np.ndarray) -> np.ndarray:
        """``[S, L]`` load ratio of every evaluation step under its plan."""
        out = np.empty(loads.shape[:2])
        bounds = [*self.starts[1:], loads.shape[0]]
        for start, end, plan in zip(self.starts, bounds, self.plans, strict=True):
            if end > start:
                out[start:end] = load_ratio(plan, loads[start:end])
        return out


def periodic_schedule(
    history: np.ndarray,
    loads: np.ndarray,
    window: int,
    interval: int,
    num_gpus: int,
    num_redundant: int,
    forecast: Callable[[int], np.ndarray] | None = None,
    lag_steps: int = 0,
) -> Schedule:
    """Re-plan every ``interval`` evaluation steps from the mean of the last ``window`` steps
    served (history first), or from ``forecast(t) -> [L, E]`` when given (predictive).

    A plan made at step ``t > 0`` serves from ``t + lag_steps`` (an asynchronous rebalance's
    transfer time); the first plan, from the history, serves from step 0 (steady state)."""
    seen = np.concatenate([history, loads])
    h = history.shape[0]
    starts, plans = [], []
    for t in range(0, loads.shape[0], max(interval, 1)):
        start = t + (lag_steps if t > 0 else 0)
        if start >= loads.shape[0]:
            break
        end = h + t
        base = forecast(t) if forecast is not None else seen[max(0, end - window) : end].mean(0)
        starts.append(start)
        plans.append(eplb_placement(base, num_gpus, num_redundant))
    return Schedule(starts=starts, plans=plans)


def window_drift(
    props: np.ndarray, window: int, horizons: list[int], cum: np.ndarray | None = None
) -> list[float | None]:
    """Drift of recorded loads: mean absolute error of the window-``W`` mean proportions as a
    forecast of the proportions ``h`` steps later, averaged over experts, layers and origins
    (at most about 100 evenly spaced origins)
    (``predictors.metrics.proportion_mae`` of ``window_mean`` forecasts ``h`` ahead; ``None``
    where the series is too short).

    Args:
        props: ``[S, L, E]`` proportions per step.
        cum: ``[S + 1, L, E]`` their cumulative sum from a zero row (computed when ``None``;
            pass it to share it between windows): the means are taken at the origins only.
    """
    p = np.asarray(props, dtype=float)
    s = p.shape[0]
    if cum is None:
        cum = np.concatenate([np.zeros((1, *p.shape[1:])), np.cumsum(p, axis=0)])
    out: list[float | None] = []
    for h in horizons:
        if h < 1 or s - h < 1 or window > s - h:
            out.append(None)
            continue
        origins = np.arange(window - 1, s - h, max(1, (s - h - window + 1) // 100))
        means = (cum[origins + 1] - cum[origins + 1 - window]) / window
        out.append(float(np.abs(p[origins + h] - means).mean()))
    return out


def interval_curve(
    step_s_by_age: np.ndarray,
    stall_s: float,
    intervals: list[int],
    *,
    extrapolate: bool = True,
    lag_steps: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Amortised seconds per step for each interval ``I``: the mean of
    ``step_s_by_age[lag : lag + I]`` (a plan serves ages ``lag .. lag + I - 1``: ``lag`` = the
    steps an asynchronous rebalance takes to land, 0 when synchronous) plus ``stall_s / I``.
    An interval shorter than ``lag`` (rebalances would overlap) is ``inf``.

    Ages beyond the measured ``A`` are, with ``extrapolate``, priced at the mean of the last
    quarter of the measured ages (staleness taken to have levelled off: an assumption the
    result marks), else ``nan``.

    Returns:
        ``(step_s [I], extrapolated [I] bool)``.

    Raises:
        ValueError: an interval below 1, a negative stall, no measured age.
    """
    if stall_s < 0:
        raise ValueError(f"stall_s: {stall_s} < 0")
    a = np.asarray(step_s_by_age, dtype=float)
    if a.size == 0:
        raise ValueError("step_s_by_age: no measured age")
    cum = np.concatenate([[0.0], np.cumsum(a)])
    tail = float(a[-max(1, a.size // 4) :].mean())
    lag = max(int(lag_steps), 0)
    out, extra = [], []
    for i in intervals:
        if i < 1:
            raise ValueError(f"interval: {i} < 1")
        end = lag + i
        if i < lag:
            out.append(math.inf)
            extra.append(False)
        elif end <= a.size:
            out.append((cum[end] - cum[lag]) / i + stall_s / i)
            extra.append(False)
        else:
            seen = cum[-1] - cum[min(lag, a.size)]
            total = seen + (end - max(lag, a.size)) * tail
            out.append(total / i + stall_s / i if extrapolate else math.nan)
            extra.append(True)
    return np.asarray(out), np.asarray(extra)


def best_interval(curve: np.ndarray, intervals: list[int]) -> int | None:
    """The interval of the lowest finite amortised step time (``None`` if none)."""
    c = np.asarray(curve, dtype=float)
    if not np.isfinite(c).any():
        return None
    return int(intervals[int(np.argmin(np.where(np.isfinite(c), c, np.inf)))])


@dataclass(frozen=True)
class StallSummary:
    """Mean cost of a schedule's rebalances.

    Attributes:
        stall_s: serving seconds lost per rebalance (0 when asynchronous, unless exposed).
        max_pass_stall_s: the worst single forward pass's stall (chunked rebalance).
        bytes_per_gpu: expert-weight bytes the busiest GPU receives per rebalance.
        lag_s: seconds from the trigger until the new placement serves every layer.
    """

    stall_s: float = 0.0
    max_pass_stall_s: float = 0.0
    bytes_per_gpu: float = 0.0
    lag_s: float = 0.0


def mean_stall(
    plans: list[Plan],
    expert_bytes: float,
    cluster: Cluster,
    costs: RebalanceCosts,
    *,
    synchronous: bool,
    layers_per_chunk: int | None = None,
) -> StallSummary:
    """Mean :class:`StallSummary` over consecutive ``plans`` (at most 4 evenly spaced
    rebalances: each is a pass over ``[L, G, E]``); all zeros with fewer than 2 plans."""
    if len(plans) < 2:
        return StallSummary()
    pairs = list(itertools.pairwise(plans))
    pairs = [pairs[i] for i in sorted({round(x) for x in np.linspace(0, len(pairs) - 1, 4)})]
    out = [
        rebalance_stall(a, c, expert_bytes, cluster, costs, synchronous=synchronous,
                        layers_per_chunk=layers_per_chunk)
        for a, c in pairs
    ]  # fmt: skip
    return StallSummary(
        stall_s=float(np.mean([r.stall_s for r in out])),
        max_pass_stall_s=float(np.mean([r.max_pass_stall_s for r in out])),
        bytes_per_gpu=float(np.mean([r.max_bytes_per_gpu for r in out])),
        lag_s=float(np.mean([r.lag_s for r in out])),
    )


def lag_steps(lag_s: float, step_s: float, synchronous: bool) -> int:
    """Steps an asynchronous rebalance takes to land, ``ceil(lag_s / step_s)``; 0 when
    synchronous (serving waits for it instead)."""
    return 0 if synchronous else math.ceil(lag_s / step_s)


@dataclass(frozen=True)
class IntervalStudy:
    """The window x interval curves of periodic EPLB (``interval_study``).

    Attributes:
        windows: ``[W]`` windows priced (steps).
        intervals: ``[I]`` intervals priced (steps).
        step_s: window -> ``[I]`` amortised seconds per step (``inf``: shorter than the lag).
        extrapolated: window -> ``[I]`` bool, ages beyond the recorded span were extrapolated.
        stalls: window -> the mean rebalance of that window's plans.
        measured_ages: window -> plan ages measured (steps).
        drift: window -> ``[I]`` window-mean proportion error ``h = I`` steps ahead (or
            ``None``).
        best: the ``(window, interval)`` of the lowest amortised step time, ``None`` when no
            interval is feasible.
    """

    windows: list[int]
    intervals: list[int]
    step_s: dict[int, np.ndarray]
    extrapolated: dict[int, np.ndarray]
    stalls: dict[int, StallSummary]
    measured_ages: dict[int, int]
    drift: dict[int, list[float | None]]
    best: tuple[int, int] | None


def interval_study(
    history: np.ndarray,
    loads: np.ndarray,
    model: StepTimeModel,
    windows: list[int],
    intervals: list[int],
    *,
    num_gpus: int,
    num_redundant: int,
    anchors: int,
    stall: Callable[[list[Plan]], StallSummary],
    step_ref_s: float,
    synchronous: bool,
) -> IntervalStudy:
    """Age curves and amortised interval curves for each window (module docstring).

    For each window ``W``, ``anchors`` plans are made along the first half of the evaluation
    span from the ``W`` steps served before each anchor and replayed on every later step: the
    mean step seconds of a plan ``h`` steps old (ages sampled every ``max(1, A/128)`` steps,
    interpolated between; an age counts when at least half the anchors reach it).

    Args:
        history, loads: ``[H, L, E]`` history and ``[S, L, E]`` evaluation copies.
        model: the step-time model of ``num_redundant`` redundant experts.
        stall: plans -> their mean rebalance (``mean_stall`` with the engine's costs).
        step_ref_s: seconds of a step, to turn an asynchronous rebalance's lag into steps.
    """
    n_eval = loads.shape[0]
    max_age = n_eval - 1
    points = sorted({int(a) for a in np.linspace(0, max(n_eval // 2 - 1, 0), max(anchors, 1))})
    seen = np.concatenate([history, loads])
    n_hist = history.shape[0]
    stride = max(1, max_age // 128)
    curves, extrapolated, stalls, measured = {}, {}, {}, {}
    best = None
    for w in windows:
        by_age, n_age = np.zeros(max_age + 1), np.zeros(max_age + 1)
        plans = []
        for a in points:
            end = n_hist + a
            plan = eplb_placement(seen[max(0, end - w) : end].mean(0), num_gpus, num_redundant)
            plans.append(plan)
            ages = np.arange(0, n_eval - a, stride)
            if ages[-1] != n_eval - a - 1:
                ages = np.append(ages, n_eval - a - 1)
            t = model.step_s(load_ratio(plan, loads[a + ages]))
            t = np.interp(np.arange(n_eval - a), ages, t)
            by_age[: t.size] += t
            n_age[: t.size] += 1
        ok = n_age >= max(2, len(points) // 2)
        usable = int(np.argmin(ok)) if not ok.all() else ok.size
        age_curve = by_age[:usable] / n_age[:usable]
        stalls[w] = stall(plans)
        measured[w] = int(age_curve.size)
        curves[w], extrapolated[w] = interval_curve(
            age_curve, stalls[w].stall_s, intervals,
            lag_steps=lag_steps(stalls[w].lag_s, step_ref_s, synchronous),
        )  # fmt: skip
        bi = best_interval(curves[w], intervals)
        if bi is not None:
            val = float(curves[w][intervals.index(bi)])
            if best is None or val < best[2]:
                best = (w, bi, val)
    props = seen / np.maximum(seen.sum(-1, keepdims=True), 1e-300)
    cum = np.concatenate([np.zeros((1, *props.shape[1:])), np.cumsum(props, axis=0)])
    drift = {w: window_drift(props, w, intervals, cum) for w in windows}
    return IntervalStudy(
        windows=list(windows), intervals=list(intervals), step_s=curves,
        extrapolated=extrapolated, stalls=stalls, measured_ages=measured, drift=drift,
        best=None if best is None else (best[0], best[1]),
    )  # fmt: skip


def transfer_mode(engine: EngineProfile, override: bool | None, setting: str) -> tuple[bool, str]:
    """``(asynchronous, why)``: how periodic EPLB's rebalances are priced. ``override`` (the
    user's setting, ``True``: asynchronous) named as ``setting`` (e.g.
    ``strategy.eplb_async=true``), or, when ``None``, the engine's own mode
    (``engine.eplb_async``: vLLM asynchronous, SGLang synchronous), cited with its version and
    source (``conf/engine/<engine>.yaml``). ``gps`` and ``gps-eplb`` say the same sentence.

    Raises:
        ValueError: an engine profile without EPLB defaults.
    """
    if engine.eplb is None:
        raise ValueError(f"engine {engine.name!r} has no EPLB defaults (engine.eplb_* unset)")
    own = engine.eplb.asynchronous
    version = f" {engine.version}" if engine.version else ""
    source = engine.sources.get("eplb_async", "no source in the profile")

    def mode(asynchronous: bool) -> str:
        return "asynchronous" if asynchronous else "synchronous"

    what = {
        True: "the copies run beside serving, no stall, the new placement lands later",
        False: "serving stops for each rebalance, its stall amortised over the interval",
    }
    asynchronous = own if override is None else bool(override)
    if override is None:
        why = f"{engine.name}{version}'s own mode ({source})"
    else:
        why = f"{setting} overrides {engine.name}{version}'s own {mode(own)} mode ({source})"
    return asynchronous, f"{mode(asynchronous)} transfer ({what[asynchronous]}): {why}"
