"""ILP placement with cross-layer routing dependency (MoETuner) and its heuristic fallback."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from gps.plans import (
    heuristic_placement,
    ilp_placement,
    placement_bound,
    placement_cost,
    transition_counts,
)


def correlated_trace(tokens: int, layers: int, experts: int, k: int, seed: int) -> np.ndarray:
    """``[T, L, k]`` ids whose expert at layer l+1 depends on the one at layer l."""
    rng = np.random.default_rng(seed)
    logits = rng.gumbel(size=(tokens, experts))
    out = np.empty((tokens, layers, k), dtype=np.int16)
    for layer in range(layers):
        perm = rng.permutation(experts)
        logits = 0.7 * logits[:, perm] + 0.3 * rng.gumbel(size=(tokens, experts))
        out[:, layer] = np.argsort(-logits, axis=1)[:, :k]
    return out


def loads_of(ids: np.ndarray, experts: int) -> np.ndarray:
    layers = ids.shape[1]
    idx = ids.astype(np.int64) + np.arange(layers)[None, :, None] * experts
    return np.bincount(idx.ravel(), minlength=layers * experts).reshape(layers, experts) * 1.0


def test_transition_counts_hand_case():
    ids = np.array([[[0], [1], [1]], [[0], [1], [0]], [[1], [0], [0]]])
    c = transition_counts(ids, 2)
    assert c.shape == (2, 2, 2)
    assert c[0].tolist() == [[0, 2], [1, 0]]
    assert c[1].tolist() == [[1, 0], [1, 1]]
    top2 = np.array([[[0, 1], [1, 2]]])
    assert transition_counts(top2, 3).sum() == 4  # k*k pairs per token


def brute_force(load, c, g, r, weight):
    """Minimum objective over every placement (tiny instances only)."""
    layers, e = load.shape
    options = [p for p in itertools.product(range(g), repeat=e) if max(np.bincount(p)) <= r]
    best = np.inf
    for combo in itertools.product(options, repeat=layers):
        best = min(best, placement_cost(np.array(combo), load, c, g, weight)[2])
    return best


def test_tiny_instance_is_optimal_and_matches_brute_force():
    ids = correlated_trace(400, 3, 4, 2, seed=1)
    load, c = loads_of(ids, 4), transition_counts(ids, 4).astype(float)
    res = ilp_placement(load, c, 2, 2, traffic_weight=0.5, time_limit_s=20)
    assert res.method == "milp-optimal"
    assert res.gap <= 1e-6
    assert res.objective == pytest.approx(brute_force(load, c, 2, 2, 0.5), rel=1e-9)
    assert np.all(res.plan.replica_counts() == 1)
    assert np.all(res.plan.used_slots() <= 2)


def test_warm_start_is_highs_first_incumbent():
    """Stopped after 1 ms, HiGHS has found nothing of its own: what it returns is the
    heuristic's placement handed to it as the warm start (without it: no incumbent)."""
    from gps.plans.ilp import _kept_pairs, _milp_model, _warm_start
    from gps.plans.milp_rows import solve

    ids = correlated_trace(3000, 6, 16, 2, seed=3)
    load, c = loads_of(ids, 16), transition_counts(ids, 16).astype(float)
    heur = heuristic_placement(load, c, 4, 4, traffic_weight=0.25)
    pairs = _kept_pairs(c, None)
    cost, rows, integrality, lb, ub, _ = _milp_model(load, 4, 4, 0.25, pairs)
    x0 = _warm_start(heur, load, pairs, 4)
    res = solve(cost, rows, integrality, lb, ub, 1e-3, 1e-4, start=x0)
    assert res.start_passed and res.x is not None
    assert cost @ res.x <= cost @ x0 + 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_bound_is_exact_with_one_slot_per_gpu(seed):
    """R = 1: the straggler term is fixed and each layer pair's co-location is a matching, so
    ``placement_bound`` equals the brute-force optimum and the heuristic reaches it."""
    ids = correlated_trace(300, 3, 3, 2, seed=10 + seed)
    load, c = loads_of(ids, 3), transition_counts(ids, 3).astype(float)
    g = 3 + seed % 2  # E = G and E < G
    best = brute_force(load, c, g, 1, 1.0 / g)
    assert placement_bound(load, c, g, 1, 1.0 / g) == pytest.approx(best, rel=1e-12)
    res = ilp_placement(load, c, g, 1, mip_gap=1e-9)
    assert res.method == "bound-optimal" and res.gap_bound == "combinatorial"
    assert res.objective == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_bound_never_exceeds_the_optimum(seed):
    ids = correlated_trace(300, 3, 4, 2, seed=20 + seed)
    load, c = loads_of(ids, 4), transition_counts(ids, 4).astype(float)
    weight = [0.5, 0.1, 2.0, 0.0][seed]
    bound = placement_bound(load, c, 2, 2, weight)
    assert bound <= brute_force(load, c, 2, 2, weight) + 1e-9
    assert bound >= np.maximum(load.sum(axis=1) / 2, load.max(axis=1)).sum() - 1e-9


def test_placement_bound_hand_case():
    """One layer pair, 2 experts, 2 GPUs, R = 1: load [[3, 1], [2, 2]], c = [[5, 1], [2, 4]]:
    straggler 3 + 2; the best matching keeps 5 + 4 of the 12 tokens; lambda = 0.5 -> 5 + 1.5."""
    load = np.array([[3.0, 1.0], [2.0, 2.0]])
    c = np.array([[[5.0, 1.0], [2.0, 4.0]]])
    assert placement_bound(load, c, 2, 1, 0.5) == pytest.approx(6.5)
    # R = 2 (both experts fit on one GPU): every pair can be kept, straggler 2 + 2
    assert placement_bound(load, c, 2, 2, 0.5) == pytest.approx(max(2.0, 3.0) + 2.0)


def test_mixtral_shape_slice_proves_optimality():
    ids = correlated_trace(2048, 6, 8, 2, seed=2)
    load, c = loads_of(ids, 8), transition_counts(ids, 8)
    res = ilp_placement(load, c, 8, time_limit_s=30)
    assert res.method == "bound-optimal"  # R = 1: the combinatorial bound is exact
    assert res.gap_bound == "combinatorial" and res.gap <= 1e-4
    static = np.tile(np.arange(8), (6, 1))
    assert res.objective <= placement_cost(static, load, c, 8, 1 / 8)[2] + 1e-9
    assert res.max_load == pytest.approx(load.max(axis=1))  # R = 1: the hottest expert


def test_too_large_falls_back_and_says_so():
    ids = correlated_trace(500, 3, 8, 2, seed=3)
    load, c = loads_of(ids, 8), transition_counts(ids, 8)
    res = ilp_placement(load, c, 4, max_variables=10, heuristic_time_s=2)
    assert res.method == "heuristic-fallback"
    assert "not built" in res.message
    assert res.gap_bound == "combinatorial"
    assert 0.0 <= res.gap < 1.0
    assert np.all(res.plan.used_slots() <= 2)
    assert np.all(res.plan.replica_counts() == 1)


def test_reduced_model_is_not_labelled_optimal():
    ids = correlated_trace(500, 3, 6, 2, seed=4)
    load, c = loads_of(ids, 6), transition_counts(ids, 6)
    res = ilp_placement(load, c, 3, max_pairs=2, time_limit_s=10, heuristic_time_s=2)
    assert res.method in ("milp-timelimit", "heuristic-fallback")
    assert "reduced model" in res.message


def test_heuristic_beats_or_matches_static_placement():
    ids = correlated_trace(1000, 4, 8, 2, seed=5)
    load, c = loads_of(ids, 8), transition_counts(ids, 8)
    assign = heuristic_placement(load, c, 4, time_limit_s=5)
    static = np.tile(np.arange(8) // 2, (4, 1))
    assert np.all(np.bincount(assign[0], minlength=4) <= 2)
    assert (
        placement_cost(assign, load, c, 4, 0.25)[2]
        <= placement_cost(static, load, c, 4, 0.25)[2] + 1e-9
    )


@pytest.mark.parametrize(
    ("load", "c", "g", "match"),
    [
        (np.ones((2, 4)), np.ones((2, 4, 4)), 2, "transitions"),
        (np.ones((2, 4)), -np.ones((1, 4, 4)), 2, "transitions"),
        (-np.ones((2, 4)), np.ones((1, 4, 4)), 2, "negative"),
        (np.ones((2, 4)), np.ones((1, 4, 4)), 0, "num_gpus"),
    ],
)
def test_bad_inputs(load, c, g, match):
    with pytest.raises(ValueError, match=match):
        ilp_placement(load, c, g)
    with pytest.raises(ValueError, match="slots_per_gpu"):
        ilp_placement(np.ones((2, 5)), np.ones((1, 5, 5)), 2, 2)


@pytest.mark.parametrize(("g", "r", "max_pairs"), [(2, 2, None), (4, 1, None), (3, 2, 3)])
def test_warm_start_is_a_feasible_point_of_the_milp(g, r, max_pairs):
    """The heuristic's placement, as ``[x, z, w]``, satisfies every row and bound of the MILP
    (symmetry break included) and has the heuristic's objective."""
    from gps.plans.ilp import _kept_pairs, _milp_model, _warm_start

    ids = correlated_trace(500, 3, 4, 2, seed=7)
    load, c = loads_of(ids, 4), transition_counts(ids, 4).astype(float)
    weight = 1.0 / g
    heur = heuristic_placement(load, c, g, r, traffic_weight=weight)
    pairs = _kept_pairs(c, max_pairs)
    cost, rows, _, lb, ub, scale = _milp_model(load, g, r, weight, pairs)
    x0 = _warm_start(heur, load, pairs, g)
    lo, hi = rows.bounds()
    ax = rows.matrix(cost.size) @ x0
    assert np.all(ax >= lo - 1e-9) and np.all(ax <= hi + 1e-9)
    assert np.all(x0 >= lb) and np.all(x0 <= ub)
    if max_pairs is None:  # full model: the MILP objective is the placement's
        want = placement_cost(heur, load, c, g, weight)[2]
        assert cost @ x0 * scale + weight * c.sum() == pytest.approx(want)


def test_solve_hand_case_and_infeasible_model():
    """min -x - 2y, x + y <= 1.5, x, y binary: y = 1, objective -2; x + y >= 2.5: infeasible."""
    from gps.plans.milp_rows import ConstraintRows, solve

    rows = ConstraintRows()
    rows.add(np.zeros(2, dtype=int), np.arange(2), 1.0, -np.inf, 1.5, 1)
    cost, ones = np.array([-1.0, -2.0]), np.ones(2)
    res = solve(cost, rows, ones, np.zeros(2), ones, 5.0, 0.0, start=np.array([1.0, 0.0]))
    assert res.status == 0 and res.start_passed and res.x.tolist() == [0.0, 1.0]
    assert res.mip_dual_bound == pytest.approx(-2.0)
    rows = ConstraintRows()
    rows.add(np.zeros(2, dtype=int), np.arange(2), 1.0, 2.5, np.inf, 1)
    res = solve(cost, rows, ones, np.zeros(2), ones, 5.0, 0.0)
    assert res.status == 2 and res.x is None and not res.start_passed


@settings(max_examples=60, deadline=None)
@given(
    hs.integers(2, 4), hs.integers(2, 9), hs.integers(1, 4), hs.integers(0, 2),
    hs.sampled_from([0.0, 0.1, 1.0, 5.0]), hs.integers(0, 2**31 - 1),
)  # fmt: skip
def test_bound_never_above_any_placement(layers, e, g, extra, weight, seed):
    """By construction: ``placement_bound`` <= the objective of every feasible placement (here
    a random one), for any slots per GPU ``R >= ceil(E/G)`` and any ``lambda``."""
    rng = np.random.default_rng(seed)
    r = -(-e // g) + extra
    load = rng.integers(0, 50, size=(layers, e)).astype(float)
    c = rng.integers(0, 20, size=(layers - 1, e, e)).astype(float)
    slots = np.repeat(np.arange(g), r)  # every layer: E distinct slots of the G*R
    assign = np.stack([rng.permutation(slots)[:e] for _ in range(layers)])
    cost = placement_cost(assign, load, c, g, weight)[2]
    assert placement_bound(load, c, g, r, weight) <= cost + 1e-9 * max(cost, 1.0)
