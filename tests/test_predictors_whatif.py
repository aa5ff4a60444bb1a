"""What-if (synthetic) predictors: set accuracy / error is what gets measured."""

from __future__ import annotations

import numpy as np
import pytest
from test_predictors_helpers import constant_loads, gpu, random_trace

from predictors import (
    WhatIfDistributionPredictor,
    WhatIfTokenPredictor,
    max_load_relative_error,
    price,
    topk_hit_rate,
)
from predictors.base import proportions


@pytest.mark.parametrize("accuracy", [0.0, 0.3, 0.7, 0.95, 1.0])
def test_whatif_token_hit_rate_matches_accuracy(accuracy):
    trace = random_trace(num_tokens=5000, layers=4, experts=8, k=2)
    model = WhatIfTokenPredictor(accuracy=accuracy, seed=3).fit(trace)
    pred = model.predict(trace)
    assert pred.dtype == np.int16 and pred.shape == trace.experts.shape
    assert (pred[..., 0] != pred[..., 1]).all()  # distinct within a token
    # 40,000 true experts: binomial std <= 0.0025
    assert topk_hit_rate(pred, trace.experts) == pytest.approx(accuracy, abs=0.01)
    np.testing.assert_array_equal(pred, model.predict(trace))  # seeded
    assert WhatIfTokenPredictor.synthetic is True


def test_whatif_token_wrong_experts_follow_popularity():
    trace = random_trace(num_tokens=20000, layers=1, experts=8, k=2)
    pred = WhatIfTokenPredictor(accuracy=0.0, seed=0).fit(trace).predict(trace)
    wrong = np.bincount(pred.ravel().astype(int), minlength=8)
    # popularity rises with expert id in random_trace: wrong picks should too (roughly)
    assert wrong[7] > wrong[0]
    assert np.corrcoef(wrong, np.arange(8))[0, 1] > 0.8


def test_whatif_token_with_too_few_wrong_experts_keeps_the_truth():
    trace = random_trace(num_tokens=500, layers=1, experts=3, k=2)
    pred = WhatIfTokenPredictor(accuracy=0.0, seed=0).fit(trace).predict(trace)
    true = np.asarray(trace.experts)
    # E=3, k=2: one wrong expert per token. Slot 0 (dropped first) takes it; slot 1 finds
    # no wrong expert left and keeps its true expert.
    only_wrong = 3 - true.sum(axis=-1)  # ids 0+1+2 = 3: the expert outside the true pair
    np.testing.assert_array_equal(pred[..., 0], only_wrong)
    np.testing.assert_array_equal(pred[..., 1], true[..., 1])
    assert topk_hit_rate(pred, true) == pytest.approx(0.5)


def test_whatif_token_overhead_is_a_parameter():
    trace = random_trace(num_tokens=100, layers=4)
    model = WhatIfTokenPredictor(flops_per_token=1e6, bytes_per_token=0.0).fit(trace)
    cost = model.cost()
    assert (cost.flops, cost.invocations, cost.where) == (1e6, 4, "gpu_critical")
    # per layer: 1000 tokens * 1e6 FLOPs / 1e15 + 1 launch of 1 us; 4 layers
    assert price(cost, gpu(), 1000) == pytest.approx(4 * (1e-6 + 1e-6))
    assert WhatIfTokenPredictor().fit(trace).cost().launches == 0


@pytest.mark.parametrize("rel", [0.0, 0.05, 0.2])
def test_whatif_distribution_relative_error(rel):
    rng = np.random.default_rng(0)
    loads = rng.integers(100, 1000, size=(400, 4, 16))
    model = WhatIfDistributionPredictor(relative_error=rel, seed=1).fit(loads[:10])
    pred = model.predict_rolling(loads, start=10)
    truth = proportions(loads[10:])
    np.testing.assert_allclose(pred.sum(axis=-1), 1.0)
    realised = np.std(pred / truth) / np.mean(pred / truth)
    assert realised == pytest.approx(rel, abs=0.01 + 0.1 * rel)
    if rel == 0.0:
        assert max_load_relative_error(pred, truth).max() < 1e-12
    # predict(true_next=x) is x's proportions with the same set error
    one = model.predict(true_next=loads[0])
    want = proportions(loads[0])
    assert one.shape == (4, 16)
    np.testing.assert_allclose(one.sum(axis=-1), 1.0)
    if rel == 0.0:
        np.testing.assert_allclose(one, want, rtol=1e-12)
    else:
        ratio = one / want
        assert 0 < np.std(ratio) / np.mean(ratio) < 3 * rel  # 64 draws of relative std rel
    np.testing.assert_array_equal(one, model.predict(true_next=loads[0]))  # seeded
    assert WhatIfDistributionPredictor.synthetic is True


def test_whatif_bad_inputs():
    trace = random_trace(num_tokens=100, layers=2)
    with pytest.raises(ValueError, match="accuracy"):
        WhatIfTokenPredictor(accuracy=1.5).fit(trace)
    with pytest.raises(ValueError, match="where"):
        WhatIfTokenPredictor(where="gpu").fit(trace)
    loads = constant_loads(n=5)
    with pytest.raises(ValueError, match="relative_error"):
        WhatIfDistributionPredictor(relative_error=-0.1).fit(loads)
    model = WhatIfDistributionPredictor().fit(loads)
    with pytest.raises(TypeError):
        model.predict(loads)  # needs true_next
    with pytest.raises(ValueError, match="experts"):
        model.predict(true_next=loads[0, :, :4])
