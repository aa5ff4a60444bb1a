"""Capacity-aware inference: token drop and token reroute."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gps.plans import capacity_drop, capacity_reroute, expert_capacity
from gps.traces.trace import TokenTrace


def trace(experts: np.ndarray, num_experts: int, scores=None) -> TokenTrace:
    t = experts.shape[0]
    ids = np.arange(t, dtype=np.int32)
    return TokenTrace(experts.astype(np.int16), ids, ids, ids * 0, num_experts, scores=scores)


def test_capacity_formula_and_bad_factor():
    assert expert_capacity(4, 1, 2, 1.0) == 2
    assert expert_capacity(10, 2, 8, 1.0) == 3  # ceil(2.5)
    assert expert_capacity(8, 2, 4, 1.0) == 4  # exact: uniform routing drops nothing
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="capacity_factor"):
            expert_capacity(4, 1, 2, bad)
        with pytest.raises(ValueError, match="capacity_factor"):
            capacity_drop(np.zeros((4, 1, 1), dtype=int), bad, num_experts=2)


def test_drop_lowest_scores_first():
    ids = np.zeros((4, 1, 1), dtype=int)  # every token wants expert 0; C = 2
    scores = np.array([0.9, 0.1, 0.5, 0.7]).reshape(4, 1, 1)
    res = capacity_drop(trace(ids, 2, scores.astype(np.float16)), 1.0)
    assert res.capacity == 2
    assert res.experts[:, 0, 0].tolist() == [0, -1, -1, 0]
    assert res.dropped.tolist() == [2]
    assert res.dropped_fraction.tolist() == [0.5]
    assert res.loads_after.tolist() == [[2, 0]]


def test_drop_without_scores_prefers_first_choice_then_earlier_tokens():
    # expert 0 copies have gate ranks 1, 0, 0; expert 1 copies 0, 1, 1
    ids = np.array([[[1, 0]], [[0, 1]], [[0, 1]]])
    res = capacity_drop(ids, 2 / 3, num_experts=2)  # C = ceil(2/3 * 3 * 2 / 2) = 2
    assert res.capacity == 2
    assert res.experts[:, 0].tolist() == [[1, -1], [0, 1], [0, -1]]


def test_reroute_moves_overflow_to_expert_with_room():
    ids = np.zeros((4, 1, 1), dtype=int)
    scores = np.array([0.9, 0.1, 0.5, 0.7]).reshape(4, 1, 1)
    res = capacity_reroute(ids, 1.0, scores=scores, num_experts=2)
    assert res.experts[:, 0, 0].tolist() == [0, 1, 1, 0]
    assert res.rerouted.tolist() == [1 * 2]
    assert res.rerouted_fraction.tolist() == [0.5]  # 2 of 4 routed copies
    assert res.dropped.tolist() == [0]
    assert res.mean_reroute_rank.tolist() == [2.0]  # k + 1: first fallback expert


def test_reroute_skips_experts_the_token_already_uses():
    # C = ceil(1.0 * 3 * 2 / 3) = 2; expert 0 gets 3 copies; token 2 overflows and already
    # uses expert 1, so it must go to expert 2 even though expert 1 has the same room.
    ids = np.array([[[0, 2]], [[0, 1]], [[1, 0]]])
    res = capacity_reroute(ids, 1.0, num_experts=3)
    assert res.experts[2, 0].tolist() == [1, 2]
    assert res.rerouted.tolist() == [1]


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 60),
    layers=st.integers(1, 3),
    e=st.integers(2, 9),
    k=st.integers(1, 3),
    gamma=st.floats(0.2, 2.0),
    seed=st.integers(0, 1000),
    with_scores=st.booleans(),
)
def test_every_copy_accounted_for(t, layers, e, k, gamma, seed, with_scores):
    k = min(k, e)
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(e, 0.3))
    ids = np.stack(
        [[rng.choice(e, k, replace=False, p=p) for _ in range(layers)] for _ in range(t)]
    )
    scores = rng.random(ids.shape) if with_scores else None
    for fn in (capacity_drop, capacity_reroute):
        res = fn(ids, gamma, scores=scores, num_experts=e)
        kept = (res.experts >= 0).sum(axis=(0, 2))
        assert np.all(kept + res.dropped == t * k)
        assert np.all(res.loads_after <= res.capacity)
        assert np.all(res.loads_after.sum(axis=1) == kept)
        live = np.where(res.experts >= 0, res.experts, -np.arange(1, k + 1))
        assert np.all(np.diff(np.sort(live, axis=2), axis=2) != 0)  # no duplicate per token
    drop = capacity_drop(ids, gamma, scores=scores, num_experts=e)
    reroute = capacity_reroute(ids, gamma, scores=scores, num_experts=e)
    assert np.all(reroute.dropped <= drop.dropped)
    assert np.all(reroute.rerouted + reroute.dropped == drop.dropped)


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_experts"):
        capacity_drop(np.zeros((2, 1, 1), dtype=int), 1.0)
    with pytest.raises(ValueError, match="routing"):
        capacity_drop(np.zeros((2, 1), dtype=int), 1.0, num_experts=2)
    with pytest.raises(ValueError, match="scores"):
        capacity_drop(np.zeros((2, 1, 1), dtype=int), 1.0, num_experts=2, scores=np.ones(2))
