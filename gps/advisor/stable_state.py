"""The stable state of a training load series and forecast errors inside it, as *Prediction Is
All MoE Needs* (Cong et al., arXiv 2404.16914) measures them.

The paper splits training into a **transient** state (expert loads fluctuate strongly) and a
**stable** state (temporal locality), telling them apart by the variance and the range
(max - min) of each expert's load proportion in sliding windows, and reports forecast errors
in the stable state. Its thresholds and its error formula are not stated; what is assumed here
is named below and in ``docs/advisor.md``.

* ``detect_stable_state``: per window of ``window_steps`` training steps (sliding by one
  record), the variance and the range of every expert's proportion, each normalised by the
  mean proportion ``1/E`` (variance by ``1/E^2``) and averaged over layers and experts. The
  *settled level* of each statistic is its median over the last quarter of the windows; a
  window is stable when both statistics are at most ``factor`` times their settled level
  (assumption: ``factor = 2``). The stable state begins at the first window from which every
  later window is stable.
* ``stable_forecast_errors``: a predictor forecasts ``h`` training steps ahead from origins in
  the stable state. Fit on the first half of the stable records, tested on the second half.
  Three readings of "error of the predicted load proportion":

  - ``absolute``: ``mean |p_hat - p|`` over experts, layers and test records (proportion
    units; ``E`` times it is the L1 distance of the two distributions);
  - ``relative``: ``mean |p_hat - p| / p`` (each expert against its own proportion);
  - ``relative_to_mean``: ``mean |p_hat - p| / (1/E)`` (equal to the L1 distance
    ``sum_e |p_hat - p|``).

  ``uniform_absolute`` is the absolute error of predicting ``1/E`` for every expert, a yardstick
  no useful predictor should be above.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d
from sklearn.base import clone

from gps.traces.trace import LoadSeries
from predictors.base import proportions
from predictors.metrics import record_interval, steps_to_records

SETTLED_QUANTILE = 0.75  # the settled level: median of the windows after this fraction


def window_statistics(p: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(variance, range)``, each ``[S - window + 1]``: per window of ``window`` records of the
    proportions ``p [S, L, E]``, the variance and ``max - min`` of every expert's proportion,
    normalised by ``(1/E)^2`` and ``1/E`` and averaged over layers and experts."""
    s, _, e = p.shape
    if not 1 <= window <= s:
        raise ValueError(f"window: {window} records, must be in [1, {s}]")
    c1 = np.concatenate([np.zeros((1, *p.shape[1:])), np.cumsum(p, axis=0)])
    c2 = np.concatenate([np.zeros((1, *p.shape[1:])), np.cumsum(p * p, axis=0)])
    m1 = (c1[window:] - c1[:-window]) / window
    m2 = (c2[window:] - c2[:-window]) / window
    var = np.maximum(m2 - m1 * m1, 0.0)
    # a centred filter of size w at i covers records [i - w // 2, i - w // 2 + w): the window
    # starting at record t is the filter's output at t + w // 2
    half = window // 2
    span = maximum_filter1d(p, window, axis=0) - minimum_filter1d(p, window, axis=0)
    rng = span[half : half + s - window + 1]
    return (var * e * e).mean(axis=(1, 2)), (rng * e).mean(axis=(1, 2))


def detect_stable_state(series: LoadSeries, window_steps: int = 1000, factor: float = 2.0) -> dict:
    """Where the stable state begins (module docstring).

    Args:
        series: the load series (``counts [S, L, E]``, evenly spaced ``step``).
        window_steps: window length in training steps (a multiple of the record interval).
        factor: a window is stable when its variance and range are at most ``factor`` times
            their settled level (``> 1``).

    Returns:
        ``{"begins_step", "begins_record", "window_steps", "factor", "settled_variance",
        "settled_range", "first_variance", "first_range"}``: statistics normalised as in
        ``window_statistics``; ``first_*`` are the first window's (the transient's scale).

    Raises:
        ValueError: window not a positive multiple of the record interval or longer than the
            series; ``factor <= 1``; fewer than 4 windows.
    """
    if not factor > 1.0:
        raise ValueError(f"factor: must be > 1, got {factor}")
    interval = record_interval(series)
    window = steps_to_records(window_steps, interval, "window_steps")
    p = proportions(np.asarray(series.counts, dtype=float))
    var, rng = window_statistics(p, window)
    n = var.size
    if n < 4:
        raise ValueError(f"series: {n} windows of {window_steps} steps; need at least 4")
    tail = slice(int(SETTLED_QUANTILE * n), n)
    lv, lr = float(np.median(var[tail])), float(np.median(rng[tail]))
    ok = (var <= factor * lv) & (rng <= factor * lr)
    bad = np.flatnonzero(~ok)
    begin = 0 if bad.size == 0 else int(bad[-1]) + 1
    return {
        "begins_step": int(series.step[begin]),
        "begins_record": begin,
        "window_steps": int(window_steps),
        "factor": float(factor),
        "settled_variance": lv,
        "settled_range": lr,
        "first_variance": float(var[0]),
        "first_range": float(rng[0]),
    }


def stable_forecast_errors(
    series: LoadSeries, predictor, horizons_steps: list[int], begin_record: int
) -> dict[int, dict[str, float]]:
    """Forecast errors in the stable state (module docstring), ``{h: {"absolute", "relative",
    "relative_to_mean", "uniform_absolute"}}`` per horizon ``h`` in training steps (``nan``
    where the fit history is shorter than the horizon).

    Args:
        series: the load series.
        predictor: a load-history Distribution-Only predictor (``predictors`` registry).
        horizons_steps: horizons in training steps (multiples of the record interval).
        begin_record: first record of the stable state (``detect_stable_state``).
    """
    interval = record_interval(series)
    counts = np.asarray(series.counts)
    s, _, e = counts.shape
    if not 0 <= begin_record < s - 1:
        raise ValueError(f"begin_record: {begin_record} leaves no stable records (S = {s})")
    n = begin_record + (s - begin_record) // 2
    truth = proportions(counts[n:].astype(float))
    eps = 1e-12
    out: dict[int, dict[str, float]] = {}
    for h in horizons_steps:
        records = steps_to_records(h, interval, "horizons")
        model = clone(predictor)
        if "horizon" in model.get_params():
            model.set_params(horizon=records)
        if records > n - begin_record:
            out[int(h)] = dict.fromkeys(
                ("absolute", "relative", "relative_to_mean", "uniform_absolute"), float("nan")
            )
            continue
        model.fit(counts[begin_record:n])
        pred = model.predict_rolling(counts[begin_record:], start=n - begin_record, horizon=records)
        err = np.abs(proportions(pred) - truth)
        out[int(h)] = {
            "absolute": float(err.mean()),
            "relative": float((err / np.maximum(truth, eps)).mean()),
            "relative_to_mean": float(err.mean() * e),
            "uniform_absolute": float(np.abs(truth - 1.0 / e).mean()),
        }
    return out


def sampling_floor(series: LoadSeries, begin_record: int) -> float:
    """Relative error no forecast of the *expected* proportions can beat: each record's
    proportion is a multinomial draw of ``n`` routed copies (``n = counts.sum`` per layer),
    so ``|p_measured - p|`` has mean ``sqrt(2/pi) * sqrt(p (1 - p) / n)``; returned relative to
    ``p`` and averaged over the stable records' layers and experts (normal approximation)."""
    counts = np.asarray(series.counts[begin_record:], dtype=float)
    n = counts.sum(axis=2, keepdims=True)
    p = np.maximum(counts.mean(axis=0, keepdims=True) / n.mean(axis=0, keepdims=True), 1e-12)
    return float((np.sqrt(2 / np.pi) * np.sqrt((1 - p) / (n.mean(axis=0) * p))).mean())
