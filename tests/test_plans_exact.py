"""Exact small layers (``gps.plans.exact``): brute force on tiny layers, no wasted work (a
candidate at the bound skips enumeration and solver; the enumeration's plan is never thrown
away), statuses that say what happened, and Mixtral's real routing (skipped without
``../shared``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from gps.plans import exact as ex
from gps.plans import plan_duplication, plan_spare, static_placement
from gps.plans.exact import PROVED, STATUSES, check_small, exact_candidates, exact_layer


def _brute_force(load: np.ndarray, g: int, r: int, home: np.ndarray | None) -> float:
    """Min over every slot assignment of the max GPU load (even split), for tiny layers."""
    e, best = load.size, np.inf
    free = [(gi, ri) for gi in range(g) for ri in range(r) if home is None or home[gi, ri] < 0]
    for combo in itertools.product(range(-1, e), repeat=len(free)):
        se = np.full((g, r), -1) if home is None else home.copy()
        for (gi, ri), x in zip(free, combo, strict=True):
            se[gi, ri] = x
        counts = np.bincount(se[se >= 0], minlength=e)
        if counts.min() < 1 or any(len(set(row[row >= 0])) < (row >= 0).sum() for row in se):
            continue
        per = load / counts
        best = min(best, np.where(se >= 0, per[np.maximum(se, 0)], 0).sum(axis=1).max())
    return best


def _no_solver(*args, **kwargs):
    raise AssertionError("the MILP must not run here")


@settings(max_examples=12, deadline=None)
@given(
    seed=hs.integers(0, 2**31 - 1),
    spare=hs.booleans(),
    egr=hs.sampled_from([(3, 2, 3), (3, 3, 2), (4, 2, 3), (2, 2, 1), (4, 4, 2), (5, 3, 3)]),
)
def test_exact_layer_matches_brute_force(seed, spare, egr) -> None:
    rng = np.random.default_rng(seed)
    e, g, r = egr
    load = np.round(rng.gamma(0.5, 1.0, e) * 20, 1)
    home = static_placement(1, e, g, r).slot_expert[0] if spare else None
    se, value, status = exact_layer(load, g, r, home=home)
    assert status in PROVED and se is not None
    assert value == pytest.approx(_brute_force(load, g, r, home), rel=1e-9)
    assert value == pytest.approx(ex.plan_max_load(se, load), rel=1e-12)
    if home is not None:  # home copies kept
        np.testing.assert_array_equal(np.where(home >= 0, se, -1), home)


def test_a_candidate_at_the_bound_skips_enumeration_and_solver(monkeypatch) -> None:
    # 2 GPUs x (2 home + 1 spare), loads [6, 6, 0, 0]: GPU 0 holds experts 0 and 1. The bound
    # (export: GPU 0 sheds at most one lump of 3 onto GPU 1) is 9; a plan reaching 9 is optimal.
    monkeypatch.setattr(ex, "_milp", _no_solver)
    monkeypatch.setattr(ex, "_spare_enumeration", _no_solver)
    load = np.array([6.0, 6.0, 0.0, 0.0])
    home = np.array([[0, 1, -1], [2, 3, -1]])
    cand = np.array([[0, 1, -1], [2, 3, 0]])
    se, value, status = exact_layer(load, 2, 3, home=home, candidates=[cand])
    assert status == "optimal-bound" and value == 9.0
    np.testing.assert_array_equal(se, cand)


def test_enumeration_proves_without_the_solver(monkeypatch) -> None:
    monkeypatch.setattr(ex, "_milp", _no_solver)
    load = np.array([5.0, 4.0, 3.0, 3.0, 3.0, 2.0])  # 3 GPUs x 2 slots, no home copies
    _, value, status = exact_layer(load, 3, 2)
    assert status == "optimal-enumeration" and value == pytest.approx(7.0)  # {5,2},{4,3},{3,3}
    # home copies, one free slot per GPU: [9, 1, 1, 1] on 4 GPUs reaches 3.25 (by hand)
    home = static_placement(1, 4, 4, 2).slot_expert[0]
    _se, value, status = exact_layer(np.array([9.0, 1.0, 1.0, 1.0]), 4, 2, home=home)
    assert status == "optimal-enumeration" and value == pytest.approx(3.25)


def test_clashing_assignment_is_solved_exactly(monkeypatch) -> None:
    # 3 GPUs x (1 home + 1 spare), expert g at home on GPU g, loads [1.5, 2, 0]. Optimum by
    # hand: expert 0 twice (0.75), expert 1 three times (2/3): GPU 1 hosts expert 0's replica
    # (2/3 + 3/4 = 17/12), GPUs 0 and 2 host expert 1's (3/4 + 2/3 and 2/3). The bottleneck
    # rule would put an expert-1 lump on GPU 1, which holds expert 1: the exact assignment
    # with that pair forbidden is solved instead (and agrees with brute force).
    calls = []
    real = ex._bottleneck_assignment
    monkeypatch.setattr(ex, "_bottleneck_assignment",
                        lambda *a: calls.append(1) or real(*a))  # fmt: skip
    load = np.array([1.5, 2.0, 0.0])
    home = np.array([[0, -1], [1, -1], [2, -1]])
    se, value, status = exact_layer(load, 3, 2, home=home)
    assert calls and status == "optimal-enumeration"
    assert value == pytest.approx(17 / 12)
    assert value == pytest.approx(_brute_force(load, 3, 2, home))
    np.testing.assert_array_equal(np.bincount(se[se >= 0], minlength=3), [2, 3, 1])


def test_solver_stopping_early_keeps_the_best_known_plan(monkeypatch) -> None:
    # R = 3 without home copies: no enumeration; HiGHS "stops" with nothing (patched): the
    # candidate comes back, status time-limit (not proved), never worse than the candidate.
    monkeypatch.setattr(ex, "_milp", lambda *a, **k: (None, False))
    load = np.array([5.0, 4.0, 3.0, 1.0])
    cand = plan_duplication(load[None], 2, 3).slot_expert[0]
    _se, value, status = exact_layer(load, 2, 3, candidates=[cand])
    assert status == "time-limit" and status in STATUSES and status not in PROVED
    assert value == pytest.approx(ex.plan_max_load(cand, load))
    # with R <= 2 the enumeration's best plan is a candidate too: never worse than it
    load = np.array([6.0, 1.0, 1.0, 1.0])  # 2 GPUs x 2 slots: {6}+{1,1,1} cannot fit: pairs
    _, plan = ex._repack_enumeration(load, 2, 2, 2)
    _, value, _ = exact_layer(load, 2, 2)
    assert value <= ex.plan_max_load(plan, load) + 1e-12


def test_exact_candidates_per_layer_and_planners() -> None:
    rng = np.random.default_rng(1)
    load = rng.gamma(0.6, 1.0, (3, 6)) * 50
    home = static_placement(3, 6, 3, 3)
    base = np.where(home.home, home.slot_expert, -1)
    fallback = plan_spare(load, home).slot_expert
    out, status = exact_candidates(load, 3, 3, fallback, home=base)
    assert len(status) == 3 and set(status) <= set(STATUSES)
    for layer in range(3):
        assert ex.plan_max_load(out[layer], load[layer]) <= ex.plan_max_load(
            fallback[layer], load[layer]) * (1 + 1e-12)  # fmt: skip
    plan = plan_spare(load, home, exact=True)
    assert plan.meta["exact_status"] == status
    assert np.all(plan.meta["predicted_max_load"]
                  <= plan_spare(load, home).meta["predicted_max_load"] * (1 + 1e-12))  # fmt: skip
    heur = plan_duplication(load, 3, 2)
    exact = plan_duplication(load, 3, 2, exact=True)
    assert np.all(exact.meta["predicted_max_load"]
                  <= heur.meta["predicted_max_load"] * (1 + 1e-12))  # fmt: skip


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="exact: only for E <= 16 and G <= 8"):
        check_small(64, 8)
    with pytest.raises(ValueError, match=r"got E=8, G=16"):
        check_small(8, 16)


def test_mixtral_real_routing_every_layer_optimal(mixtral_trace, monkeypatch) -> None:
    """Mixtral-8x7B's real routing (vLLM, 192-token batches): with home copies on 8 GPUs x 2
    slots and 4 GPUs x 3 slots, every layer's optimum is proved without the solver, never
    worse than the heuristic nor than the solver's own optimum (checked on a few layers)."""
    from gps.traces.batching import batch_loads

    loads = batch_loads(mixtral_trace, 192).reshape(-1, 8) * 1.0
    for g, r in ((8, 2), (4, 3)):
        home = static_placement(loads.shape[0], 8, g, r)
        heur = plan_spare(loads, home)
        with monkeypatch.context() as mp:
            mp.setattr(ex, "_milp", _no_solver)
            exact = plan_spare(loads, home, exact=True)
        assert set(exact.meta["exact_status"]) <= {"optimal-bound", "optimal-enumeration"}
        assert np.all(exact.meta["predicted_max_load"]
                      <= heur.meta["predicted_max_load"] * (1 + 1e-12))  # fmt: skip
        base = np.where(home.home, home.slot_expert, -1)
        for layer in range(0, loads.shape[0], 24):
            solved, proved = ex._milp(loads[layer], g, r, base[layer], None,
                                      loads[layer].sum() / g, None, 60.0)  # fmt: skip
            assert proved
            assert exact.meta["predicted_max_load"][layer] == pytest.approx(
                ex.plan_max_load(solved, loads[layer]), rel=1e-9)  # fmt: skip
