"""Accuracy metrics on hand-computed examples; overhead pricing with the cost model's roofline."""

from __future__ import annotations

import numpy as np
import pytest
from test_predictors_helpers import constant_loads, gpu, load_series, periodic_loads

from gps.cost.roofline import op_time
from gps.traces import LoadSeries
from predictors import (
    GlobalPriorPredictor,
    LastBatchPredictor,
    LinearARPredictor,
    PredictorCost,
    TokenIdDistributionPredictor,
    WindowMeanPredictor,
    exact_set_accuracy,
    expert_histogram,
    horizon_errors,
    induced_distribution_error,
    l1_distance,
    layer_overhead_s,
    max_load_relative_error,
    price,
    proportion_mae,
    record_interval,
    steps_to_records,
    topk_hit_rate,
    total_variation,
)
from predictors.base import topk_from_scores


def test_topk_hit_rate_and_exact_set_by_hand():
    true = np.array([[[0, 1]], [[2, 3]], [[4, 5]]])  # T=3, L=1, k=2
    pred = np.array([[[1, 0]], [[2, 7]], [[6, 7]]])
    # hits: token 0 both (2), token 1 one (1), token 2 none -> 3 / 6
    assert topk_hit_rate(pred, true) == pytest.approx(0.5)
    # exact sets (order ignored): token 0 only -> 1 / 3
    assert exact_set_accuracy(pred, true) == pytest.approx(1 / 3)
    # a wider prediction can recover more but is never an exact set
    wide = np.array([[[0, 1, 9]], [[2, 3, 9]], [[4, 5, 9]]])
    assert topk_hit_rate(wide, true) == 1.0
    assert exact_set_accuracy(wide, true) == 0.0


def test_distribution_distances_by_hand():
    p = np.array([0.5, 0.5, 0.0, 0.0])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    assert total_variation(p, q) == pytest.approx(0.5)
    assert l1_distance(p, q) == pytest.approx(1.0)
    # counts are normalised first
    assert total_variation(p * 10, q * 4) == pytest.approx(0.5)
    # max share 0.5 vs 0.25 -> |0.5 - 0.25| / 0.25 = 1
    assert max_load_relative_error(p, q) == pytest.approx(1.0)
    # mean |p - q| over 4 entries: (0.25 + 0.25 + 0.25 + 0.25) / 4
    assert proportion_mae(p, q) == pytest.approx(0.25)
    # along the last axis only
    both = total_variation(np.stack([p, q]), np.stack([q, q]))
    np.testing.assert_allclose(both, [0.5, 0.0])


def test_expert_histogram_and_induced_error():
    true = np.array([[[0, 1]], [[0, 2]], [[1, 2]], [[3, 0]], [[9, 9]]])[:4]
    hist = expert_histogram(true, 4, batch_size=2)
    np.testing.assert_array_equal(hist, [[[2, 1, 1, 0]], [[1, 1, 1, 1]]])
    pred = np.array([[[0, 1]], [[0, 1]], [[1, 2]], [[3, 0]]])
    err = induced_distribution_error(pred, true, 4, batch_size=2)
    # batch 0: pred [2,2,0,0]/4 vs [2,1,1,0]/4 -> TV 0.25; batch 1 identical
    assert err["tv"] == pytest.approx(0.125)
    assert err["max_load_rel_err"] == pytest.approx(0.0)  # max shares 0.5 / 0.5 and equal
    with pytest.raises(ValueError, match="batch_size"):
        expert_histogram(true, 4, batch_size=5)
    with pytest.raises(ValueError, match=r"\[T, L\]"):
        topk_hit_rate(pred[:3], true)


def test_horizon_errors_constant_and_periodic():
    series = load_series(constant_loads(n=80))
    errs = horizon_errors(series, LastBatchPredictor(), horizons=(1, 10))
    assert errs[1] == pytest.approx(0.0, abs=1e-12)
    assert errs[10] == pytest.approx(0.0, abs=1e-12)
    # a horizon longer than the fit part is undefined
    assert np.isnan(horizon_errors(series, LastBatchPredictor(), horizons=(100,))[100])
    # period-4 pattern: last batch is wrong at h=1, right at h=4; the AR model (direct
    # h-step) learns both
    periodic = load_series(np.round(periodic_loads(n=200) * 1e6))
    last = horizon_errors(periodic, LastBatchPredictor(), horizons=(1, 4))
    ar = horizon_errors(periodic, LinearARPredictor(lags=8), horizons=(1, 4))
    assert last[4] < 1e-6 < last[1]
    assert ar[1] < 0.1 * last[1] and ar[4] < 1e-3
    with pytest.raises(ValueError, match="load-history"):
        horizon_errors(periodic, TokenIdDistributionPredictor())
    with pytest.raises(ValueError, match="LoadSeries"):
        horizon_errors(periodic.counts, GlobalPriorPredictor())


def test_horizon_errors_count_training_steps_not_records():
    """A series recorded every 10 training steps: a horizon of 10 steps is one record ahead,
    so it errs exactly as a 1-step horizon on the same loads recorded every step."""
    rng = np.random.default_rng(0)
    drift = np.cumsum(rng.normal(0.0, 0.05, size=(120, 2, 4)), axis=0)  # error grows with h
    counts = np.round(1e4 * np.exp(drift)).astype(np.int64)
    every_step = load_series(counts)
    every_10 = LoadSeries(counts=counts, step=np.arange(120, dtype=np.int64) * 10)
    assert record_interval(every_10) == 10 and record_interval(every_step) == 1
    for model in (LastBatchPredictor(), WindowMeanPredictor(window=4), LinearARPredictor(lags=2)):
        in_steps = horizon_errors(every_10, model, horizons=(10, 50))
        in_records = horizon_errors(every_step, model, horizons=(1, 5))
        assert set(in_steps) == {10, 50}
        assert in_steps[10] == pytest.approx(in_records[1], rel=1e-12)
        assert in_steps[50] == pytest.approx(in_records[5], rel=1e-12)
        assert in_steps[10] < in_steps[50]
    # 700 steps = 70 records: beyond the 60-record fit half
    assert np.isnan(horizon_errors(every_10, LastBatchPredictor(), horizons=(700,))[700])
    with pytest.raises(ValueError, match="multiple of the record interval"):
        horizon_errors(every_10, LastBatchPredictor(), horizons=(15,))
    uneven = LoadSeries(counts=counts[:3], step=np.array([0, 10, 30], dtype=np.int64))
    with pytest.raises(ValueError, match="evenly spaced"):
        record_interval(uneven)
    assert steps_to_records(2000, 10, "h") == 200


def test_price_uses_the_roofline():
    g = gpu()
    # per token, 8 invocations (layers): each op = 100 tokens * (2e6 FLOPs, 1e3 B) + fixed
    cost = PredictorCost(
        flops=2e6, bytes=1e3, per="token", where="gpu_critical", launches=2, invocations=8,
        fixed_bytes=1e6,
    )  # fmt: skip
    f, b = cost.invocation_work(100)
    assert (f, b) == (2e8, 1e5 + 1e6)
    expected = 8 * float(op_time(2e8, 1.1e6, g, "bf16", 2))
    # by hand: max(2e8 / 1e15, 1.1e6 / 1e12) = 1.1e-6 s, + 2 launches * 1e-6 s, x 8
    assert expected == pytest.approx(8 * 3.1e-6)
    assert price(cost, g, 100) == pytest.approx(expected)
    assert cost.batch_work(100) == (1.6e9, 8 * 1.1e6)
    per_layer = layer_overhead_s(cost, g, 100, 8)
    np.testing.assert_allclose(per_layer, np.full(8, 3.1e-6))
    # once per batch on the CPU: on layer 0, no kernel launches, hidden by the cost model
    once = PredictorCost(flops=0.0, bytes=1e6, per="batch", where="cpu_offpath")
    assert not once.on_critical_path
    assert price(once, g, 4096) == pytest.approx(1e-6)
    np.testing.assert_allclose(layer_overhead_s(once, g, 4096, 3), [1e-6, 0, 0])
    with pytest.raises(ValueError, match="invocations"):
        layer_overhead_s(cost, g, 100, 4)
    with pytest.raises(ValueError, match="per"):
        PredictorCost(flops=1.0, bytes=1.0, per="layer", where="gpu_critical")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flops"):
        PredictorCost(flops=-1.0, bytes=1.0, per="token", where="gpu_critical")


@pytest.mark.parametrize("experts", [8, 64])
def test_topk_from_scores_breaks_ties_to_lower_ids(experts):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(500, experts)).astype(float)  # many ties
    scores[0] = 1.0  # all tied
    got = topk_from_scores(scores, 5)
    expected = np.argsort(-scores, axis=-1, kind="stable")[:, :5]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[0], np.arange(5))
    neg = np.where(rng.random((50, experts)) < 0.5, -np.inf, rng.random((50, experts)))
    np.testing.assert_array_equal(
        topk_from_scores(neg, 3), np.argsort(-neg, axis=-1, kind="stable")[:, :3]
    )
