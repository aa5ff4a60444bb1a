"""The certified lower bound with fixed home copies (``gps.plans.spare_bound``): hand-computed
cases, never above the optimum (brute force) nor above any plan (property tests), bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from test_plans_exact import _brute_force

from gps.plans import Plan, plan_spare, spare_lower_bound, static_placement
from gps.plans.spare_bound import export_bound, spare_lower_bound_layer


def test_export_bound_by_hand() -> None:
    # 2 GPUs x (2 home + 1 spare); loads [6, 6, 0, 0]: GPU 0 (home load 12) can shed one lump
    # onto GPU 1's single spare slot, at most 6 / 2 = 3: GPU 0 keeps >= 12 - 3 = 9. The mean
    # is 6; a replica of expert 0 on GPU 1 reaches 9, so the bound is tight.
    home = static_placement(1, 4, 2, 3)
    load = np.array([[6.0, 6.0, 0.0, 0.0]])
    assert spare_lower_bound(load, home)[0] == pytest.approx(9.0)
    assert plan_spare(load, home).meta["predicted_max_load"][0] == pytest.approx(9.0)
    # 3 GPUs x (1 home + 1 spare), loads [9, 0, 0], at most 2 copies per expert: the one lump
    # weighs 4.5, so GPU 0 keeps 4.5 (mean 3)
    home = static_placement(1, 3, 3, 2)
    load = np.array([[9.0, 0.0, 0.0]])
    assert spare_lower_bound(load, home, max_replicas=2)[0] == pytest.approx(4.5)
    assert spare_lower_bound(load, home)[0] == pytest.approx(3.0)  # 3 copies: 9 / 3, the mean
    # [9, 1, 1, 1] on 4 GPUs x (1 + 1): the mean 3 is the best split (gains 4.5, 1.5, 0.75 of
    # expert 0 leave GPU 0 at 2.25 <= 3); the optimum is 3.25
    home = static_placement(1, 4, 4, 2)
    assert spare_lower_bound(np.array([[9.0, 1.0, 1.0, 1.0]]), home)[0] == pytest.approx(3.0)


def test_per_copy_bound_and_no_spare_slot() -> None:
    # no spare slot at all: the bound is the home load itself (no copy can move)
    home = static_placement(1, 4, 2, 2)
    load = np.array([[5.0, 1.0, 2.0, 0.0]])
    assert spare_lower_bound(load, home)[0] == pytest.approx(6.0)
    # one GPU: its home load
    home = static_placement(1, 3, 1, 4)
    assert spare_lower_bound(np.array([[1.0, 2.0, 3.0]]), home)[0] == pytest.approx(6.0)


@settings(max_examples=20, deadline=None)
@given(
    seed=hs.integers(0, 2**31 - 1),
    egr=hs.sampled_from([(3, 2, 3), (3, 3, 2), (4, 2, 3), (2, 2, 2), (4, 4, 2), (5, 3, 3)]),
    cap=hs.sampled_from([None, 2]),
)
def test_bound_never_above_the_optimum(seed, egr, cap) -> None:
    rng = np.random.default_rng(seed)
    e, g, r = egr
    load = np.round(rng.gamma(0.5, 1.0, e) * 20, 1)
    home = static_placement(1, e, g, r).slot_expert[0]
    if cap is None:
        best = _brute_force(load, g, r, home)
    else:
        best = _capped_brute_force(load, g, r, home, cap)
    bound = spare_lower_bound_layer(load, home, g if cap is None else cap)
    assert bound <= best * (1 + 1e-12)
    assert bound >= load.sum() / g * (1 - 1e-12)


def _capped_brute_force(load, g, r, home, cap) -> float:
    import itertools

    e, best = load.size, np.inf
    free = [(gi, ri) for gi in range(g) for ri in range(r) if home[gi, ri] < 0]
    for combo in itertools.product(range(-1, e), repeat=len(free)):
        se = home.copy()
        for (gi, ri), x in zip(free, combo, strict=True):
            se[gi, ri] = x
        counts = np.bincount(se[se >= 0], minlength=e)
        if counts.max() > cap or any(len(set(row[row >= 0])) < (row >= 0).sum() for row in se):
            continue
        per = load / counts
        best = min(best, np.where(se >= 0, per[np.maximum(se, 0)], 0).sum(axis=1).max())
    return best


@settings(max_examples=15, deadline=None)
@given(seed=hs.integers(0, 2**31 - 1), skew=hs.floats(0.1, 3.0))
def test_bound_vectorised_matches_layers(seed, skew) -> None:
    rng = np.random.default_rng(seed)
    load = rng.gamma(skew, 1.0, (4, 64)) * 100
    home = static_placement(4, 64, 16, 5)
    bound = spare_lower_bound(load, home)
    base = np.where(home.home, home.slot_expert, -1)
    for layer in range(4):
        assert bound[layer] == pytest.approx(spare_lower_bound_layer(load[layer], base[layer], 16))
    assert np.all(plan_spare(load, home).meta["predicted_max_load"] >= bound * (1 - 1e-9))


def test_bad_inputs() -> None:
    home = static_placement(1, 4, 2, 3)
    with pytest.raises(ValueError, match="no home slots"):
        spare_lower_bound(np.ones((1, 4)), Plan(home.slot_expert, 4))
    with pytest.raises(ValueError, match=r"load: shape \(2, 4\)"):
        spare_lower_bound(np.ones((2, 4)), home)
    with pytest.raises(ValueError, match="load: negative"):
        spare_lower_bound(-np.ones((1, 4)), home)
    with pytest.raises(ValueError, match="max_replicas: must be >= 1"):
        spare_lower_bound(np.ones((1, 4)), home, max_replicas=0)
    assert export_bound(np.zeros((1, 4)), np.ones((1, 2, 4)), np.ones((1, 2), int), 2)[0] == 0.0
