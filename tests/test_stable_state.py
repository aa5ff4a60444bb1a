"""Stable-state detector (variance and range in sliding windows) and forecast errors in the
stable state, as *Prediction Is All MoE Needs* (arXiv 2404.16914) measures them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from gps.advisor.stable_state import (
    detect_stable_state,
    sampling_floor,
    stable_forecast_errors,
    window_statistics,
)
from gps.traces.synthetic import LoadSeriesConfig, generate_load_series
from gps.traces.trace import LoadSeries
from predictors import make_predictor


def test_window_statistics_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((30, 2, 4))
    p /= p.sum(axis=2, keepdims=True)
    var, rng_ = window_statistics(p, 5)
    # normalised by the mean proportion 1/E = 1/4 (variance by 1/16)
    want_var = [(p[t : t + 5].var(axis=0) * 16).mean() for t in range(26)]
    want_rng = [((p[t : t + 5].max(0) - p[t : t + 5].min(0)) * 4).mean() for t in range(26)]
    np.testing.assert_allclose(var, want_var)
    np.testing.assert_allclose(rng_, want_rng)


def _series(counts: np.ndarray, interval: int = 10) -> LoadSeries:
    return LoadSeries(counts=counts, step=np.arange(counts.shape[0]) * interval)


def test_detector_finds_a_hand_made_switch() -> None:
    # 1 layer, 2 experts recorded every 10 steps: loads alternate 80/20 <-> 20/80 for the first
    # 30 records (transient), then sit at 50/50 +- 1 (stable). Windows of 50 steps = 5 records:
    # the last window touching record 29 starts at record 25, so the stable state begins at
    # record 30 = step 300.
    s = 100
    counts = np.empty((s, 1, 2), dtype=np.int64)
    counts[:30, 0, 0] = np.where(np.arange(30) % 2 == 0, 80, 20)
    counts[30:, 0, 0] = 50 + np.where(np.arange(70) % 2 == 0, 1, -1)
    counts[:, 0, 1] = 100 - counts[:, 0, 0]
    st = detect_stable_state(_series(counts), window_steps=50)
    assert (st["begins_record"], st["begins_step"]) == (30, 300)
    assert st["first_range"] > 10 * st["settled_range"]
    # no transient at all: stable from the start
    flat = counts.copy()
    flat[:30] = counts[30:60]
    assert detect_stable_state(_series(flat), window_steps=50)["begins_step"] == 0


def test_detector_rejects_bad_input() -> None:
    counts = np.full((10, 1, 2), 5, dtype=np.int64)
    with pytest.raises(ValueError, match="window_steps"):
        detect_stable_state(_series(counts), window_steps=15)  # not a multiple of 10
    with pytest.raises(ValueError, match="factor"):
        detect_stable_state(_series(counts), window_steps=20, factor=1.0)
    with pytest.raises(ValueError, match="windows"):
        detect_stable_state(_series(counts), window_steps=90)


def test_synthetic_series_settles_after_its_transient() -> None:
    cfg = LoadSeriesConfig(num_steps=1200, step_interval=10, num_layers=2, num_experts=16,
                           transient_steps=1000.0, seed=1)  # fmt: skip
    st = detect_stable_state(generate_load_series(cfg), window_steps=500)
    # the transient's noise decays as exp(-t / 1000 steps): stable only once it has faded
    assert 500 <= st["begins_step"] <= 6000
    calm = dataclasses.replace(cfg, transient_noise=0.0, transient_drift=0.0)
    assert detect_stable_state(generate_load_series(calm), 500)["begins_step"] < st["begins_step"]


class _Uniform(BaseEstimator):
    """Predicts 1/E for every expert (a yardstick, not a registry predictor)."""

    def fit(self, loads):
        return self

    def predict_rolling(self, loads, start, horizon=1):
        return np.full((loads.shape[0] - start, *loads.shape[1:]), 1.0 / loads.shape[2])


def test_error_readings_by_hand() -> None:
    # 2 experts, true proportions 0.75/0.25 every record; the last-record predictor is exact,
    # so errors are 0; a constant 0.5/0.5 guess errs by 0.25 per expert: absolute 0.25,
    # relative (0.25/0.75 + 0.25/0.25)/2 = 2/3, relative to the mean 1/2: 0.5.
    counts = np.tile(np.array([[[75, 25]]]), (40, 1, 1))
    series = _series(counts)
    exact = stable_forecast_errors(series, make_predictor("last_batch"), [10, 50], 0)
    assert exact[10]["absolute"] == pytest.approx(0.0) and exact[50]["relative"] == 0.0
    assert exact[10]["uniform_absolute"] == pytest.approx(0.25)

    err = stable_forecast_errors(series, _Uniform(), [10], 0)[10]
    assert err["absolute"] == pytest.approx(0.25)
    assert err["relative"] == pytest.approx(2 / 3)
    assert err["relative_to_mean"] == pytest.approx(0.5)
    # a horizon longer than the fit half gives nan
    assert np.isnan(stable_forecast_errors(series, make_predictor("last_batch"), [300], 0)[300][
        "absolute"])  # fmt: skip


def test_sampling_floor_by_hand() -> None:
    # 128 experts, 524,288 copies per record: p = 1/128, n p = 4096,
    # floor = sqrt(2/pi) sqrt((1 - p) / (n p)) = 0.797885 * sqrt(0.9921875 / 4096) = 0.012419
    n, e = 524288, 128
    counts = np.full((20, 1, e), n // e, dtype=np.int64)
    assert sampling_floor(_series(counts), 0) == pytest.approx(0.012419, abs=2e-6)
    # ~1.2%: the paper's 1.3% sits at this floor


def test_sampling_floor_is_the_error_of_multinomial_draws() -> None:
    """The floor is what sampling alone costs: simulate records that are multinomial draws of
    n copies from fixed proportions and measure the mean relative error of the measured
    proportions directly (Monte Carlo, 400 records x 128 experts: ~0.4% relative noise)."""
    rng = np.random.default_rng(0)
    n, e = 524288, 128
    p = rng.dirichlet(np.full(e, 20.0))  # uneven but not extreme popularity
    counts = rng.multinomial(n, p, size=(400, 1))  # [S, L=1, E]
    measured = np.abs(counts[:, 0] / n - p) / p  # |p_measured - p| / p
    assert sampling_floor(_series(counts), 0) == pytest.approx(measured.mean(), rel=0.02)
