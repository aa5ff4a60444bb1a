"""Hidden-state router predictor and hidden activations on traces: a router that reads the
activations a linear gate routes on beats popularity; its overhead is its GEMMs (hand-computed);
traces carry activations through validation, save/load and token selection."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_predictors_helpers import gpu

from gps.cost.roofline import op_time
from gps.traces import TokenTrace
from gps.traces.batching import split_by_sequence, take_tokens
from gps.traces.io import load_trace, save_trace
from gps.traces.validate import TraceError, validate_token_trace
from predictors import make_predictor, price, topk_hit_rate
from predictors.hidden import HiddenStateRouterPredictor, router_cost
from predictors.token import PopularityTokenPredictor


def gated_trace(tokens: int = 4000, layers: int = 3, d: int = 32, experts: int = 16,
                k: int = 2, seed: int = 0) -> TokenTrace:  # fmt: skip
    """Activations ``[T, L, d]`` and the experts a linear gate (random ``W_l``, plus a skew
    towards low ids) picks from them: the gate's input determines the routing."""
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((tokens, layers, d)).astype(np.float16)
    w = rng.standard_normal((layers, d, experts)) * 2 / np.sqrt(d)
    logits = np.einsum("tld,lde->tle", hidden.astype(float), w) + np.linspace(1.5, 0, experts)
    return TokenTrace(
        experts=np.argsort(-logits, axis=-1)[..., :k].astype(np.int16),
        token_id=rng.integers(0, 100, tokens).astype(np.int32),
        sequence_id=(np.arange(tokens) // 100).astype(np.int32),
        position=(np.arange(tokens) % 100).astype(np.int32),
        num_experts=experts,
        hidden=hidden,
        hidden_layers=np.arange(layers, dtype=np.int16),
    )


TRACE = gated_trace()
TRAIN, TEST = split_by_sequence(TRACE, 0.3, seed=0)


@pytest.mark.parametrize("hidden_units", [0, 32])
def test_router_beats_popularity_on_gated_activations(hidden_units: int) -> None:
    router = make_predictor("hidden_router", hidden_units=hidden_units).fit(TRAIN)
    hit = topk_hit_rate(router.predict(TEST), TEST.experts)
    popular = topk_hit_rate(PopularityTokenPredictor().fit(TRAIN).predict(TEST), TEST.experts)
    assert popular < 0.3  # the skew alone explains little
    assert hit > 0.8 and hit > popular + 0.5, (hit, popular)
    assert router.coverage_ == [0, 1, 2]


def test_lookahead_reads_the_previous_layer_and_falls_back_to_popularity() -> None:
    only_first = replace(TRAIN, hidden=TRAIN.hidden[:, :1], hidden_layers=np.array([0], np.int16))
    router = HiddenStateRouterPredictor(lookahead=1).fit(only_first)
    assert router.coverage_ == [1]  # activations entering layer 0 predict layer 1
    test = replace(TEST, hidden=TEST.hidden[:, :1], hidden_layers=np.array([0], np.int16))
    pred = router.predict(test)
    assert (pred[:, 0] == router.popular_topk_[0]).all()  # uncovered layer: popularity
    assert (pred[:, 2] == router.popular_topk_[2]).all()
    # Layer 1's experts were drawn from layer 1's own activations, independent of layer 0's.
    assert topk_hit_rate(pred[:, 1:2], test.experts[:, 1:2]) < 0.45


def test_router_errors_name_the_problem() -> None:
    bare = replace(TRAIN, hidden=None, hidden_layers=None)
    with pytest.raises(ValueError, match="no hidden activations"):
        HiddenStateRouterPredictor().fit(bare)
    with pytest.raises(ValueError, match="activation must be"):
        HiddenStateRouterPredictor(activation="tanh").fit(TRAIN)
    router = HiddenStateRouterPredictor(max_iter=2).fit(TRAIN)
    with pytest.raises(ValueError, match="hidden size 8"):
        router.predict(replace(TEST, hidden=TEST.hidden[:, :, :8]))


def test_router_cost_is_its_gemms_hand_computed() -> None:
    d, h, e, k, layers, t = 2048, 512, 64, 6, 26, 4096
    cost = router_cost([d, h, e], top_k=k, invocations=layers)
    flops, bytes_ = cost.invocation_work(t)
    assert flops == 2 * t * (d * h + h * e)
    weights = 2 * (d * h + h * e + h + e)  # bf16 weights and biases, read once per layer
    activations = t * (2 * (d + 2 * h + 2 * e) + 2 * k)  # in, hidden w+r, scores w+r, k ids
    assert bytes_ == weights + activations
    assert cost.launches == 2 and cost.invocations == layers and cost.on_critical_path
    expected = layers * float(op_time(flops, bytes_, gpu(), "bf16", 2))
    assert price(cost, gpu(), t) == pytest.approx(expected)
    # By hand: 2*4096*(2048*512 + 512*64) = 8.86e9 FLOPs -> 8.86 us at 1e15 FLOP/s, below the
    # 2,163,840 + 26,263,552 = 28,427,392 bytes -> 28.43 us at 1e12 B/s: memory-bound; plus
    # 2 launches of 1 us: 30.43 us per layer, x 26 layers.
    assert weights + activations == 28_427_392
    assert price(cost, gpu(), t) == pytest.approx(26 * 30.427392e-6)
    fitted = HiddenStateRouterPredictor(hidden_units=8, max_iter=2).fit(TRAIN)
    assert fitted.widths() == [32, 8, 16]
    assert fitted.cost().invocation_work(1)[0] == 2 * (32 * 8 + 8 * 16)
    with pytest.raises(ValueError, match="widths"):
        router_cost([d], top_k=k, invocations=1)


def test_trace_carries_hidden_through_io_and_selection(tmp_path: Path) -> None:
    path = save_trace(tmp_path / "t.npz", TRACE, compress=False)
    back = load_trace(path)
    np.testing.assert_array_equal(back.hidden, TRACE.hidden)
    np.testing.assert_array_equal(back.hidden_layers, TRACE.hidden_layers)
    sub = take_tokens(TRACE, np.arange(10, 20))
    np.testing.assert_array_equal(sub.hidden, TRACE.hidden[10:20])
    plain = replace(TRACE, hidden=None, hidden_layers=None)  # backward compatible: optional
    assert load_trace(save_trace(tmp_path / "p.npz", plain)).hidden is None


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"hidden_layers": None}, "hidden_layers", "missing"),
        ({"hidden": None}, "hidden", "missing"),
        ({"hidden": TRACE.hidden.astype(np.int16)}, "hidden", "float16 or float32"),
        ({"hidden": TRACE.hidden[:5]}, "hidden", "shape"),
        ({"hidden_layers": np.array([0, 2, 1], np.int16)}, "hidden_layers", "increasing"),
        ({"hidden_layers": np.array([0, 1, 3], np.int16)}, "hidden_layers", r"\[0, 3\)"),
        ({"hidden_layers": np.array([0, 1], np.int16)}, "hidden_layers", "shape"),
    ],
)  # fmt: skip
def test_validation_names_the_hidden_field(changes: dict, field: str, message: str) -> None:
    with pytest.raises(TraceError, match=message) as info:
        validate_token_trace(replace(TRACE, **changes), origin="x.npz")
    assert info.value.field == field


def test_validation_finds_a_non_finite_activation() -> None:
    hidden = TRACE.hidden.copy()
    hidden[3999, 2, 31] = np.inf
    with pytest.raises(TraceError, match="token 3999, slice 2, dim 31"):
        validate_token_trace(replace(TRACE, hidden=hidden))
