"""Token-to-Expert predictors: planted maps are learned, outputs well formed, bad inputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from test_predictors_helpers import (
    gpu,
    id_mapped_trace,
    layer_chained_trace,
    make_trace,
    random_trace,
)

from gps.traces import split_by_sequence, take_tokens
from predictors import (
    TOKEN_PREDICTORS,
    LightGBMTokenPredictor,
    MLPTokenPredictor,
    PopularityTokenPredictor,
    PreviousLayerPredictor,
    TokenIdTablePredictor,
    exact_set_accuracy,
    price,
    topk_hit_rate,
)

SMALL = {
    "lightgbm_token": {"n_estimators": 20, "n_jobs": 1, "max_train_samples": 4000},
    "mlp_token": {"max_iter": 15, "max_train_samples": 4000, "id_buckets": 256},
    "hidden_router": {"max_iter": 5},
}


def small(name: str):
    return TOKEN_PREDICTORS[name](**SMALL.get(name, {}))


def test_table_predictor_learns_a_deterministic_id_map():
    trace, _ = id_mapped_trace(num_tokens=6000, vocab=200)
    train, test = split_by_sequence(trace, 0.3, seed=0)
    model = TokenIdTablePredictor().fit(train)
    pred = model.predict(test)
    seen = np.isin(test.token_id, train.token_id)
    assert seen.mean() > 0.99
    assert topk_hit_rate(pred, test.experts) >= 0.99
    assert topk_hit_rate(pred[seen], test.experts[seen]) == 1.0
    assert exact_set_accuracy(pred[seen], test.experts[seen]) == 1.0


def test_table_predictor_unseen_ids_fall_back_to_popularity():
    trace, _ = id_mapped_trace(num_tokens=2000)
    model = TokenIdTablePredictor().fit(trace)
    odd = make_trace(trace.experts[:3], np.array([10**6, -1, 10**6 + 1]), 8)
    pred = model.predict(odd)
    popular = PopularityTokenPredictor().fit(trace).predict(odd)
    np.testing.assert_array_equal(pred, popular)
    _, seen = model.lookup(odd.token_id)
    assert not seen.any()


def test_previous_layer_predictor_learns_a_chained_map():
    trace = layer_chained_trace(num_tokens=4000, layers=5)
    train, test = split_by_sequence(trace, 0.3, seed=0)
    model = PreviousLayerPredictor(first_layer="popularity").fit(train)
    pred = model.predict(test)
    # layers >= 1 follow exactly from layer l - 1
    assert topk_hit_rate(pred[:, 1:], test.experts[:, 1:]) == 1.0
    assert exact_set_accuracy(pred[:, 1:], test.experts[:, 1:]) == 1.0
    # layer 0 (random here) falls back to popularity: far lower
    assert topk_hit_rate(pred[:, :1], test.experts[:, :1]) < 0.5


def test_previous_layer_first_layer_uses_the_token_table():
    trace, _ = id_mapped_trace(num_tokens=3000, layers=3)
    model = PreviousLayerPredictor(first_layer="table").fit(trace)
    pred = model.predict(trace)
    assert topk_hit_rate(pred[:, :1], trace.experts[:, :1]) == 1.0


@pytest.mark.parametrize("name", ["lightgbm_token", "mlp_token"])
def test_learned_models_learn_planted_patterns(name):
    chained = layer_chained_trace(num_tokens=2000, layers=4)
    train, test = split_by_sequence(chained, 0.3, seed=0)
    model = small(name).fit(train)
    pred = model.predict(test)
    popular = PopularityTokenPredictor().fit(train).predict(test)
    hit = topk_hit_rate(pred[:, 1:], test.experts[:, 1:])
    assert hit > 0.9
    assert hit > topk_hit_rate(popular[:, 1:], test.experts[:, 1:]) + 0.4


@pytest.mark.parametrize("name", list(TOKEN_PREDICTORS))
def test_output_contract_and_determinism(name):
    trace = random_trace(num_tokens=1200, layers=3, k=2)
    if name == "hidden_router":  # reads activations: attach random ones
        hidden = np.random.default_rng(0).standard_normal((1200, 3, 4)).astype(np.float16)
        trace = replace(trace, hidden=hidden, hidden_layers=np.arange(3, dtype=np.int16))
    train, test = split_by_sequence(trace, 0.3, seed=1)
    a = small(name).fit(train).predict(test)
    b = small(name).fit(train).predict(test)
    assert a.shape == test.experts.shape and a.dtype == np.int16
    assert a.min() >= 0 and a.max() < 8
    assert (a[..., 0] != a[..., 1]).all()  # distinct within (token, layer)
    np.testing.assert_array_equal(a, b)
    cost = small(name).fit(train).cost()
    assert cost.per == "token" and cost.invocations == 3
    assert cost.where == "gpu_critical"


def test_popularity_predicts_most_popular():
    trace = random_trace(num_tokens=3000, layers=2, k=2)  # popularity rises with expert id
    pred = PopularityTokenPredictor().fit(trace).predict(trace)
    assert (pred[..., 0] == 7).all() and (pred[..., 1] == 6).all()


def test_mlp_cost_counts_dense_flops():
    trace = random_trace(num_tokens=300, layers=3)
    model = MLPTokenPredictor(hidden_layer_sizes=(16,), id_buckets=32, max_iter=2).fit(trace)
    inputs = 32 + 3 + 8 + 1
    assert model.cost().flops == 2 * (inputs * 16 + 16 * 8)


def _lightgbm_hand_work(model: LightGBMTokenPredictor) -> tuple[float, float]:
    """(comparisons, nodes) per layer, recomputed by recursion over each booster's dumped trees
    and from their ``num_leaves``: mean over layers of the sum over trees of the unweighted
    mean leaf depth, and of the node count ``2 * leaves - 1``."""

    def leaf_depths(node: dict, depth: int = 0) -> list[int]:
        if "left_child" not in node:
            return [depth]
        return leaf_depths(node["left_child"], depth + 1) + leaf_depths(
            node["right_child"], depth + 1
        )

    comparisons, nodes = [], []
    for m in model.models_:
        trees = m.booster_.dump_model()["tree_info"]
        comparisons.append(sum(np.mean(leaf_depths(t["tree_structure"])) for t in trees))
        nodes.append(sum(2 * t["num_leaves"] - 1 for t in trees))
    return float(np.mean(comparisons)), float(np.mean(nodes))


def _hand_seconds(name: str, model) -> float:
    """Priced seconds for a batch of 1,000 tokens on the round test GPU (1e15 FLOP/s, 1e12 B/s,
    1 us per launch), 3 MoE layers, E = 8, k = 2, worked out from each predictor's docstring:
    per layer ``max(FLOPs / 1e15, bytes / 1e12) + launches * 1e-6``, times 3 layers."""
    if name == "popularity":  # write k int16 ids per token
        per_layer = 1000 * 2 * 2 / 1e12 + 1e-6
    elif name == "token_id_table":  # read an int32 id + k int16 entries, write k int16 ids
        per_layer = 1000 * (4 + 2 * 2 + 2 * 2) / 1e12 + 1e-6
    elif name == "previous_layer":  # k rows of E fp32 read, 2kE FLOPs; memory-bound
        per_layer = 1000 * (2 * 2 * 2 + 4 * 2 * 8) / 1e12 + 1e-6
    elif name == "lightgbm_token":  # comparisons per token; 4(2+k) + 2k B; 16 B per tree node
        comparisons, nodes = _lightgbm_hand_work(model)
        per_layer = max(1000 * comparisons / 1e15, (1000 * 20 + 16 * nodes) / 1e12) + 1e-6
    elif name == "mlp_token":  # inputs 256 buckets + 3 layers + 8 experts + position = 268
        macs = 268 * 64 + 64 * 8  # default hidden_layer_sizes=(64,)
        act_bytes = 2 * 2 * (64 + 8)  # bf16 activations written and read
        token_bytes = 4 * (3 + 2) + act_bytes + 2 * 2
        weights = 2 * (macs + 64 + 8)  # bf16 weights and biases, once per layer
        per_layer = max(1000 * 2 * macs / 1e15, (1000 * token_bytes + weights) / 1e12) + 2e-6
    else:  # whatif_token: overhead is a parameter (0 by default)
        per_layer = 0.0
    return 3 * per_layer


# hidden_router needs recorded hidden activations; its cost is hand-checked in
# tests/test_predictors_hidden.py (test_router_cost_is_its_gemms_hand_computed)
@pytest.mark.parametrize("name", [n for n in TOKEN_PREDICTORS if n != "hidden_router"])
def test_priced_cost_matches_a_hand_value(name):
    trace = random_trace(num_tokens=1200, layers=3, experts=8, k=2)
    model = small(name).fit(trace)
    assert price(model.cost(), gpu(), 1000) == pytest.approx(_hand_seconds(name, model), rel=1e-9)


def test_bad_inputs():
    trace = random_trace(num_tokens=400, layers=3)
    model = TokenIdTablePredictor().fit(trace)
    wrong_e = make_trace(trace.experts, trace.token_id, 16)
    with pytest.raises(ValueError, match="num_experts=16, but the predictor was fit on 8"):
        model.predict(wrong_e)
    with pytest.raises(ValueError, match="layers"):
        model.predict(make_trace(trace.experts[:, :2], trace.token_id, 8))
    with pytest.raises(ValueError, match="no tokens"):
        TokenIdTablePredictor().fit(take_tokens(trace, slice(0, 0)))
    with pytest.raises(ValueError, match="TokenTrace"):
        TokenIdTablePredictor().fit(trace.experts)
    with pytest.raises(NotFittedError):
        TokenIdTablePredictor().predict(trace)
    with pytest.raises(ValueError, match="first_layer"):
        PreviousLayerPredictor(first_layer="bogus").fit(trace)
    prev = PreviousLayerPredictor().fit(trace)
    with pytest.raises(ValueError, match="top-k"):
        prev.predict(make_trace(trace.experts[..., :1], trace.token_id, 8))
    with pytest.raises(ValueError, match="max_train_samples"):
        LightGBMTokenPredictor(max_train_samples=0).fit(trace)


def test_sparse_table_equals_dense_reference():
    trace = random_trace(num_tokens=3000, layers=3, experts=8, k=2, seed=4)
    ids = np.random.default_rng(5).integers(0, 2000, trace.num_tokens)
    trace = make_trace(trace.experts, ids, 8)  # many ids seen once or twice
    model = TokenIdTablePredictor().fit(trace)
    ids = np.asarray(trace.token_id, dtype=np.int64)
    vocab, inv = np.unique(ids, return_inverse=True)
    counts = np.zeros((vocab.size, 3, 8))
    for j in range(2):  # dense reference: counts + 0.5 * popularity, stable top-k
        np.add.at(counts, (inv[:, None], np.arange(3)[None, :], trace.experts[:, :, j]), 1)
    scores = counts + 0.5 * model.popularity_[None]
    expected = np.argsort(-scores, axis=-1, kind="stable")[..., :2]
    np.testing.assert_array_equal(model.table_, expected)
