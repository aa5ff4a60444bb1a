"""Accuracy metrics, pure functions on arrays (``numpy``), plus the horizon protocol.

Token-to-Expert (``[T, L, k]`` expert ids): :func:`topk_hit_rate`, :func:`exact_set_accuracy`,
:func:`induced_distribution_error`. Distribution-Only (proportions or counts ``[..., E]``,
normalised along the last axis inside): :func:`total_variation`, :func:`l1_distance`,
:func:`max_load_relative_error`, :func:`proportion_mae`, :func:`horizon_errors` (horizons in
training steps: :func:`record_interval`, :func:`steps_to_records`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import clone

from gps.traces.trace import LoadSeries
from predictors.base import DistributionPredictor, proportions


def _check_experts(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.ndim != 3 or true.ndim != 3:
        raise ValueError(f"pred and true must be [T, L, k], got {pred.shape} and {true.shape}")
    if pred.shape[:2] != true.shape[:2]:
        raise ValueError(f"pred {pred.shape} and true {true.shape} differ in [T, L]")
    if true.size == 0:
        raise ValueError("true: no tokens")
    return pred, true


def topk_hit_rate(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of true top-k experts that appear in the predicted set of the same
    (token, layer). ``pred [T, L, k']``, ``true [T, L, k]`` (``k'`` may differ from ``k``)."""
    pred, true = _check_experts(pred, true)
    hit = (true[..., :, None] == pred[..., None, :]).any(axis=-1)  # [T, L, k]
    return float(hit.mean())


def exact_set_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of (token, layer) whose predicted set equals the true set (order ignored)."""
    pred, true = _check_experts(pred, true)
    if pred.shape[2] != true.shape[2]:
        return 0.0
    if pred.shape[2] == 2:  # sorted pairs are (min, max): no per-row sort
        lo = np.minimum(pred[..., 0], pred[..., 1]) == np.minimum(true[..., 0], true[..., 1])
        hi = np.maximum(pred[..., 0], pred[..., 1]) == np.maximum(true[..., 0], true[..., 1])
        return float((lo & hi).mean())
    return float(np.all(np.sort(pred, axis=-1) == np.sort(true, axis=-1), axis=-1).mean())


def expert_histogram(experts: np.ndarray, num_experts: int, batch_size: int) -> np.ndarray:
    """``[T, L, k]`` ids -> ``[N, L, E]`` int64 counts per batch of ``batch_size`` consecutive
    tokens (``N = T // batch_size``, partial tail dropped; as ``gps.traces.batch_loads``)."""
    experts = np.asarray(experts)
    t, layers, _ = experts.shape
    n = t // batch_size
    if n == 0:
        raise ValueError(f"{t} tokens, fewer than batch_size={batch_size}")
    ids = np.asarray(experts[: n * batch_size])
    if ids.min() < 0 or ids.max() >= num_experts:
        raise ValueError(f"expert ids outside [0, {num_experts})")
    out = np.empty((n, layers, num_experts), dtype=np.int64)
    for b in range(n):  # per batch and layer: short bincounts, no [T, L, k] int64 index array
        part = ids[b * batch_size : (b + 1) * batch_size]
        for layer in range(layers):
            out[b, layer] = np.bincount(part[:, layer].ravel(), minlength=num_experts)
    return out


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``0.5 * sum |p - q|`` along the last axis after normalising both; shape ``[...]``."""
    return 0.5 * np.abs(proportions(p) - proportions(q)).sum(axis=-1)


def l1_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``sum |p - q|`` of the normalised distributions along the last axis (``2 * TV``)."""
    return np.abs(proportions(p) - proportions(q)).sum(axis=-1)


def max_load_relative_error(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``|max(pred) - max(true)| / max(true)`` of the normalised rows, shape ``[...]``.

    The maximum expert share sets the straggler (the busiest GPU) of an MoE layer.
    """
    pm, tm = proportions(pred).max(axis=-1), proportions(true).max(axis=-1)
    return np.abs(pm - tm) / tm


def proportion_mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error of load proportions over all entries (experts, layers, steps).

    The error-rate metric of *Prediction Is All MoE Needs* (arXiv 2404.16914): the mean of
    ``|predicted proportion - actual proportion|``.
    """
    return float(np.abs(proportions(pred) - proportions(true)).mean())


def induced_distribution_error(
    pred: np.ndarray, true: np.ndarray, num_experts: int, batch_size: int
) -> dict[str, float]:
    """How far a token predictor's implied per-batch loads are from the true ones.

    Histograms both ``[T, L, k]`` predictions and truth per batch of ``batch_size`` tokens and
    returns :func:`distribution_accuracy` of the two.
    """
    pred, true = _check_experts(pred, true)
    return distribution_accuracy(
        expert_histogram(pred, num_experts, batch_size),
        expert_histogram(true, num_experts, batch_size),
    )


def distribution_accuracy(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Means over batches and layers of ``tv``, ``l1``, ``max_load_rel_err`` and
    ``proportion_mae`` of ``[N, L, E]`` forecasts (counts or proportions) against the truth."""
    return {
        "tv": float(total_variation(pred, true).mean()),
        "l1": float(l1_distance(pred, true).mean()),
        "max_load_rel_err": float(max_load_relative_error(pred, true).mean()),
        "proportion_mae": proportion_mae(pred, true),
    }


def record_interval(series: LoadSeries) -> int:
    """Training steps between two records of ``series`` (``series.step`` evenly spaced).

    A series recorded every 10 steps has interval 10; a single record counts as interval 1.

    Raises:
        ValueError: ``series.step`` unevenly spaced (horizons in steps would be ambiguous).
    """
    step = np.asarray(series.step, dtype=np.int64)
    if step.size < 2:
        return 1
    gaps = np.diff(step)
    if not np.all(gaps == gaps[0]) or gaps[0] < 1:
        raise ValueError(
            f"series.step: records are not evenly spaced (gaps {np.unique(gaps)[:5].tolist()}); "
            "horizons in training steps need one record interval"
        )
    return int(gaps[0])


def steps_to_records(steps: int, interval: int, name: str) -> int:
    """``steps`` training steps as a whole number of records ``interval`` steps apart.

    Raises:
        ValueError: ``steps < 1`` or not a multiple of ``interval`` (the message names ``name``).
    """
    steps = int(steps)
    if steps < 1 or steps % interval:
        raise ValueError(
            f"{name}={steps}: must be a positive multiple of the record interval "
            f"({interval} training steps)"
        )
    return steps // interval


def horizon_errors(
    series: LoadSeries,
    predictor: DistributionPredictor,
    horizons: Sequence[int] = (1, 10, 100, 1000),
    *,
    train_fraction: float = 0.5,
) -> dict[int, float]:
    """Proportion MAE of forecasting training step ``t + h`` from the loads up to step ``t``.

    ``horizons`` are in **training steps** (the unit of ``series.step``), each a multiple of
    the series' record interval ``r`` (:func:`record_interval`); a horizon of ``h`` steps is
    ``h / r`` records ahead. The series' first ``n = floor(train_fraction * S)`` records fit a
    fresh clone of ``predictor`` (with ``horizon=h / r`` when it has that parameter: a direct
    model, in records); test records are ``t in [n, S)``, each forecast from
    ``counts[: t - h / r + 1]`` (past records only; test records already seen count as
    history, the fitted parameters do not change). The MAE averages over experts, layers and
    test records. A horizon beyond the fit history (``h / r > n``, or too short a fit history
    for a direct model) gives ``nan``. Predictor parameters such as ``window`` or ``lags``
    still count records.

    Returns:
        ``{h: MAE}`` keyed by the horizons in steps as given.

    Raises:
        ValueError: not a ``LoadSeries``, a token-input predictor, a bad ``train_fraction``,
            or a horizon that is not a positive multiple of the record interval.
    """
    if not isinstance(series, LoadSeries):
        raise ValueError(f"series: expected a LoadSeries, got {type(series).__name__}")
    if getattr(predictor, "input_kind", "loads") != "loads":
        raise ValueError("predictor: horizon_errors needs a load-history predictor")
    counts = np.asarray(series.counts)
    s = counts.shape[0]
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n = int(train_fraction * s)
    if n < 1 or n >= s:
        raise ValueError(f"series: {s} records leave no train or no test records")
    interval = record_interval(series)
    ahead = {int(h): steps_to_records(h, interval, "horizons") for h in horizons}
    truth = counts[n:]
    out: dict[int, float] = {}
    for h, records in ahead.items():
        model = clone(predictor)
        if "horizon" in model.get_params():
            model.set_params(horizon=records)
            if n < records + 1:
                out[h] = float("nan")
                continue
        if records > n:
            out[h] = float("nan")
            continue
        model.fit(counts[:n])
        forecast = model.predict_rolling(counts, start=n, horizon=records)
        out[h] = proportion_mae(forecast, truth)
    return out
