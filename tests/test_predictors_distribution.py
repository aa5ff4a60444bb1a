"""Distribution-Only predictors: planted patterns, rolling == one-at-a-time, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from test_predictors_helpers import constant_loads, id_mapped_trace, make_trace, periodic_loads

from gps.traces import batch_loads
from predictors import (
    DISTRIBUTION_PREDICTORS,
    EWMAPredictor,
    LastBatchPredictor,
    LightGBMLoadPredictor,
    LinearARPredictor,
    TokenIdDistributionPredictor,
    WindowMeanPredictor,
    proportion_mae,
    total_variation,
)
from predictors.base import proportions

LOAD_PREDICTORS = [
    name for name, cls in DISTRIBUTION_PREDICTORS.items() if cls.input_kind == "loads"
]


def fast(name: str):
    cls = DISTRIBUTION_PREDICTORS[name]
    if name == "lightgbm_load":
        return cls(n_estimators=20, n_jobs=1)
    if name == "whatif_distribution":
        return cls(relative_error=0.0)
    return cls()


@pytest.mark.parametrize("name", LOAD_PREDICTORS)
def test_constant_distribution_gives_zero_error(name):
    loads = constant_loads(n=60)
    truth = proportions(loads[0])
    model = fast(name).fit(loads[:40])
    roll = model.predict_rolling(loads, start=40)
    assert roll.shape == (20, 3, 8)
    np.testing.assert_allclose(roll.sum(axis=-1), 1.0)
    assert total_variation(roll, truth).max() < 1e-3
    if name != "whatif_distribution":
        one = model.predict(loads[:50])
        assert one.shape == (3, 8)
        assert total_variation(one, truth).max() < 1e-3
        assert total_variation(model.predict(), truth).max() < 1e-3  # after the fit history


def test_token_id_predictor_constant_routing_gives_zero_error():
    trace, _ = id_mapped_trace(num_tokens=1000)
    const = trace.experts.copy()
    const[:] = np.array([1, 5], dtype=np.int16)
    trace = type(trace)(const, trace.token_id, trace.sequence_id, trace.position, 8)
    model = TokenIdDistributionPredictor().fit(trace)
    pred = model.predict_batches(trace, 100)
    truth = proportions(batch_loads(trace, 100))
    assert proportion_mae(pred, truth) < 1e-12


def test_periodic_pattern_ar_and_lightgbm_beat_last_batch():
    p = periodic_loads(n=240, period=4)
    start = 160
    errors = {}
    for name, model in [
        ("last", LastBatchPredictor()),
        ("ewma", EWMAPredictor()),
        ("ar", LinearARPredictor(lags=8)),
        ("lgbm", LightGBMLoadPredictor(lags=8, n_estimators=50, n_jobs=1)),
    ]:
        model.fit(p[:start])
        errors[name] = proportion_mae(model.predict_rolling(p, start=start), p[start:])
    assert errors["ar"] < 0.05 * errors["last"]
    assert errors["lgbm"] < 0.05 * errors["last"]
    assert errors["ewma"] < errors["last"]  # smoothing a period-4 cycle helps a little


@pytest.mark.parametrize(
    "name", ["last_batch", "window_mean", "ewma", "linear_ar", "lightgbm_load"]
)
@pytest.mark.parametrize("horizon", [1, 3])
def test_rolling_equals_one_at_a_time(name, horizon):
    rng = np.random.default_rng(1)
    loads = rng.integers(0, 100, size=(30, 2, 4))
    model = fast(name).fit(loads[:20])
    roll = model.predict_rolling(loads, start=20, horizon=horizon)
    for i, t in enumerate(range(20, 30)):
        one = model.predict(loads[: t - horizon + 1])
        np.testing.assert_allclose(roll[i], one, atol=1e-12)


def test_window_and_ewma_by_hand():
    p = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 1.0]]])  # [3, 1, 2]
    w = WindowMeanPredictor(window=2).fit(p)
    np.testing.assert_allclose(w.predict(), [[0.0, 1.0]])
    np.testing.assert_allclose(w.predict(p[:2]), [[0.5, 0.5]])
    np.testing.assert_allclose(w.predict(p[:1]), [[1.0, 0.0]])  # fewer than window at start
    e = EWMAPredictor(alpha=0.5).fit(p)
    # s0 = [1, 0]; s1 = [0.5, 0.5]; s2 = [0.25, 0.75]
    np.testing.assert_allclose(e.predict(), [[0.25, 0.75]])
    np.testing.assert_allclose(e.predict_rolling(p, start=1), [[[1.0, 0.0]], [[0.5, 0.5]]])


def test_token_id_predictor_learns_id_map_and_falls_back_for_unseen_ids():
    trace, table = id_mapped_trace(num_tokens=6000, vocab=50)
    model = TokenIdDistributionPredictor(smoothing=0.0).fit(trace)
    # a batch of one known id: its two experts, half each
    one = model.predict(np.array([int(trace.token_id[0])]))
    expected = np.zeros((4, 8))
    np.put_along_axis(expected, table[trace.token_id[0]], 0.5, axis=-1)
    np.testing.assert_allclose(one, expected, atol=1e-6)
    # unseen (and unknown -1) ids: the global prior
    prior = proportions(batch_loads(trace, trace.num_tokens)[0])
    np.testing.assert_allclose(model.predict(np.array([999_999, -1])), prior, atol=1e-6)
    # batches: error well below the prior's
    pred = model.predict_batches(trace, 200)
    truth = proportions(batch_loads(trace, 200))
    assert proportion_mae(pred, truth) < 1e-6
    assert proportion_mae(np.broadcast_to(prior, truth.shape), truth) > 1e-3


def test_token_id_predictor_domain_key():
    trace, _ = id_mapped_trace(num_tokens=500)
    with pytest.raises(ValueError, match="domain"):
        TokenIdDistributionPredictor(key="domain").fit(trace)
    with pytest.raises(ValueError, match="key"):
        TokenIdDistributionPredictor(key="bogus").fit(trace)


def test_bad_inputs():
    loads = constant_loads(n=10)
    with pytest.raises(ValueError, match="empty history"):
        LastBatchPredictor().fit(loads[:0])
    with pytest.raises(ValueError, match=r"\[N, L, E\]"):
        LastBatchPredictor().fit(loads[0])
    with pytest.raises(ValueError, match="finite"):
        LastBatchPredictor().fit(-loads)
    with pytest.raises(ValueError, match="numeric"):
        LastBatchPredictor().fit(loads.astype(str))
    model = LinearARPredictor().fit(loads)
    with pytest.raises(ValueError, match="history: 6 experts, but the predictor was fit on 8"):
        model.predict(loads[:, :, :6])
    with pytest.raises(ValueError, match="layers"):
        model.predict(loads[:, :2])
    with pytest.raises(ValueError, match="start"):
        model.predict_rolling(loads, start=0)
    with pytest.raises(ValueError, match="horizon"):
        model.predict_rolling(loads, start=5, horizon=0)
    with pytest.raises(NotFittedError):
        LastBatchPredictor().predict(loads)
    with pytest.raises(ValueError, match="window"):
        WindowMeanPredictor(window=0).fit(loads)
    with pytest.raises(ValueError, match="alpha"):
        EWMAPredictor(alpha=0.0).fit(loads)
    with pytest.raises(ValueError, match="horizon"):
        LinearARPredictor(horizon=20).fit(loads)  # needs 21 batches
    trace, _ = id_mapped_trace(num_tokens=300)
    model = TokenIdDistributionPredictor().fit(trace)
    with pytest.raises(ValueError, match="TokenTrace"):
        TokenIdDistributionPredictor().fit(loads)
    with pytest.raises(ValueError, match="no tokens"):
        model.predict(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="batch_size"):
        model.predict_batches(trace, 1000)


def test_costs_are_declared():
    loads = constant_loads(n=30)
    for name in LOAD_PREDICTORS:
        cost = fast(name).fit(loads).cost()
        assert cost.per == "batch" and cost.invocations == 1
        if name != "whatif_distribution":
            assert cost.where == "cpu_offpath" and cost.bytes > 0
    trace, _ = id_mapped_trace(num_tokens=300)
    cost = TokenIdDistributionPredictor().fit(trace).cost()
    assert (cost.per, cost.where, cost.flops) == ("token", "gpu_critical", 4 * 8)


def test_seeded_models_are_deterministic():
    rng = np.random.default_rng(3)
    loads = rng.integers(0, 50, size=(80, 2, 4))
    a = LightGBMLoadPredictor(n_estimators=10, max_train_samples=200, seed=5).fit(loads[:60])
    b = LightGBMLoadPredictor(n_estimators=10, max_train_samples=200, seed=5).fit(loads[:60])
    np.testing.assert_array_equal(a.predict_rolling(loads, 60), b.predict_rolling(loads, 60))


def test_token_id_predictor_smoothing_by_hand():
    experts = np.array([[[0, 1]], [[2, 3]]])  # two tokens, one layer, E = 4, k = 2
    trace = make_trace(experts, np.array([5, 6]), 4)
    model = TokenIdDistributionPredictor(smoothing=1.0).fit(trace)
    # g = 1/4 each; q[5] = ([1, 1, 0, 0] + 1 * 2 * g) / (1 + 1) = [.75, .75, .25, .25]
    np.testing.assert_allclose(model.predict(np.array([5])), [[0.375, 0.375, 0.125, 0.125]])
    np.testing.assert_allclose(model.predict(np.array([5, 6, 7])), np.full((1, 4), 0.25))
