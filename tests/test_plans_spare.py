"""Home + spare slots: hand-checkable migrations, link pricing, the bounds that hold by
construction (property tests), exact small layers, and bad inputs."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from test_cost_helpers import INTER_BW, INTER_LAT, INTRA_BW, INTRA_LAT, cluster, gqa_model

from gps.advisor import strategies as st
from gps.advisor.data import EvalData
from gps.advisor.ledger import Ledger
from gps.advisor.pricing import price_routed
from gps.cost.e2e import batch_cost
from gps.cost.step import StepExtras
from gps.hardware import LinkProfile
from gps.plans import (
    Plan,
    fetch_tier,
    keep_slots,
    migration_bytes_per_gpu,
    migration_seconds_per_gpu,
    plan_duplication,
    plan_spare,
    spare_slots_per_gpu,
    static_placement,
)
from gps.plans.exact import check_small, exact_layer
from gps.plans.migration import check_source
from gps.plans.spare import check_replicas
from gps.traces.trace import TokenTrace
from gps.workload import Workload

EB = 1e6  # bytes of one expert's weights in the hand-checked cases
HOST_BW, HOST_LAT = 2e10, 5e-6


def _cluster(nodes: int = 1, per_node: int = 2):
    host = LinkProfile("TestPCIe", HOST_BW, HOST_LAT, source="test")
    return replace(cluster(nodes, per_node), host_link=host)


def test_one_hot_expert_one_spare_slot_moves_exactly_one_expert() -> None:
    home = static_placement(1, 4, 2, 3)  # 2 GPUs: experts {0,1} and {2,3} at home, 1 spare each
    load = np.array([[10.0, 0.0, 0.0, 0.0]])
    plan = plan_spare(load, home)
    np.testing.assert_array_equal(plan.slot_expert[0], [[0, 1, -1], [2, 3, 0]])
    assert plan.meta["predicted_max_load"][0] == 5.0 and plan.meta["home_max_load"][0] == 10.0
    moved = migration_bytes_per_gpu(home, plan, EB)
    np.testing.assert_array_equal(moved, [[0.0, EB]])  # one expert's weights, onto GPU 1
    # a full re-pack of the same load moves home experts too
    repack = plan_duplication(load, 2, 3)
    assert migration_bytes_per_gpu(home, repack, EB).sum() >= EB
    # re-planning the same load from the plan in place moves nothing
    again = plan_spare(load, home, previous=plan)
    assert migration_bytes_per_gpu(plan, again, EB).sum() == 0.0
    np.testing.assert_array_equal(again.slot_expert, plan.slot_expert)


def test_new_hot_expert_rewrites_one_spare_slot() -> None:
    home = static_placement(1, 4, 4, 2)  # one home expert + one spare slot per GPU
    first = plan_spare(np.array([[9.0, 1.0, 1.0, 1.0]]), home)
    second = plan_spare(np.array([[9.0, 1.0, 1.0, 7.0]]), home, previous=first)
    moved = migration_bytes_per_gpu(first, second, EB)
    # expert 0's replicas are still useful and stay; expert 3 gets new spare slots
    kept = (first.slot_expert == 0) & (second.slot_expert == 0)
    assert kept.sum() >= 2
    assert moved.sum() == EB * ((second.expert_gpu_counts() > 0) & ~(first.expert_gpu_counts()
                                                                      > 0)).sum()  # fmt: skip
    assert second.meta["predicted_max_load"][0] < second.meta["home_max_load"][0]
    np.testing.assert_array_equal(second.slot_expert[0, :, 1], [1, 0, 3, 1])  # docs/plans.md
    third = plan_spare(np.array([[9.0, 1.0, 1.0, 7.0]]), home, previous=second)
    assert migration_bytes_per_gpu(second, third, EB).sum() == 0.0


def test_keep_slots_keeps_a_replica_in_its_slot() -> None:
    spare = np.array([[[False, True, True]]])
    prev = np.array([[[0, 5, 7]]])
    new = np.array([[[0, 7, 9]]])  # 7 stays on this GPU, 9 is new
    np.testing.assert_array_equal(keep_slots(new, spare, prev), [[[0, 9, 7]]])


def test_migration_seconds_by_link() -> None:
    cl = _cluster(2, 2)
    home = static_placement(1, 4, 4, 2)  # expert g at home on GPU g
    se = home.slot_expert.copy()
    se[0, 1, 1] = 0  # GPU 1 (node 0) copies expert 0 from GPU 0: NVLink
    se[0, 2, 1] = 1  # GPU 2 (node 1) copies expert 1: only node 0 holds it: InfiniBand
    new = Plan(se, 4, home=home.home)
    np.testing.assert_array_equal(fetch_tier(home, 2)[0, [1, 2], [0, 1]], [1, 2])
    peer = migration_seconds_per_gpu(home, new, EB, cl, "peer")
    np.testing.assert_allclose(
        peer, [[0.0, INTRA_LAT + EB / INTRA_BW, INTER_LAT + EB / INTER_BW, 0.0]]
    )
    host = migration_seconds_per_gpu(home, new, EB, cl, "host")
    np.testing.assert_allclose(host, [[0.0, HOST_LAT + EB / HOST_BW, HOST_LAT + EB / HOST_BW, 0]])
    # back to home copies only costs nothing
    assert migration_seconds_per_gpu(new, new.home_only(), EB, cl).sum() == 0.0


def test_batch_cost_takes_priced_migration_seconds() -> None:
    spec, cl = gqa_model(), cluster(1, 4)
    w = Workload(phase="decode", batch_size=8, context_len=256)
    base = batch_cost(spec, cl, w, extras=StepExtras(window=0.0))
    copies = np.zeros((2, 4))
    copies[0, 2] = 1e-3  # GPU 2 copies for 1 ms in layer 0
    c = batch_cost(spec, cl, w, extras=StepExtras(migration_s={"intra": copies}, window=0.0))
    np.testing.assert_allclose(c.components["migration"], [1e-3, 0.0])
    np.testing.assert_allclose(c.total_s - base.total_s, 1e-3)


# ---------------------------------------------------------------------- bounds (properties)


def _context(loads: np.ndarray, nodes: int, per_node: int, r_extra: int, overlap: float,
             horizon: float, source: str) -> st.Context:  # fmt: skip
    nl, e = loads.shape[1:]
    spec = gqa_model(num_layers=nl, num_experts=e)
    trace = TokenTrace(
        experts=np.zeros((1, nl, 2), dtype=np.int16), token_id=np.zeros(1, np.int32),
        sequence_id=np.zeros(1, np.int32), position=np.zeros(1, np.int32), num_experts=e,
    )  # fmt: skip
    data = EvalData(trace, trace, loads[:2], loads[2:], 64, "test")
    cl = _cluster(nodes, per_node)
    slots = -(-e // cl.num_gpus) + r_extra
    w = Workload(phase="prefill", batch_size=1, seq_len=64)
    return st.Context(spec, cl, w, data, slots, Ledger(window=overlap), "spare", source, horizon)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=hs.integers(0, 2**31 - 1),
    shape=hs.sampled_from([(1, 2, 4), (1, 4, 8), (2, 2, 8), (1, 4, 4)]),
    r_extra=hs.integers(0, 2),
    overlap=hs.sampled_from([0.0, 0.5, 1.0]),
    horizon=hs.sampled_from([1.0, 4.0, 100.0]),
    source=hs.sampled_from(["peer", "host"]),
    skew=hs.floats(0.2, 3.0),
)
def test_oracle_never_slower_than_no_balancing(seed, shape, r_extra, overlap, horizon, source,
                                               skew) -> None:  # fmt: skip
    nodes, per_node, e = shape
    rng = np.random.default_rng(seed)
    loads = np.floor(rng.gamma(skew, 1.0, (5, 2, e)) * 40)  # 2 history + 3 held-out batches
    ctx = _context(loads, nodes, per_node, r_extra, overlap, horizon, source)

    def step_s(r: st.Routed) -> np.ndarray:
        return price_routed(r, ctx.spec, ctx.cluster, ctx.workload, ctx.ledger).total_s

    none = st.no_balancing(ctx)
    base = step_s(none)
    oracle = st.oracle(ctx)
    # its own lookahead planning is never behind no balancing in total time, after every batch
    assert np.all(np.cumsum(step_s(oracle)) <= np.cumsum(base) * (1 + 1e-9))
    free = st.free_migration_candidates(ctx, [none, oracle])
    ceiling = st.per_batch_fastest(free, np.stack([step_s(c) for c in free]), "free")
    assert np.all(step_s(ceiling) <= np.minimum(base, step_s(oracle)) * (1 + 1e-9))  # every batch
    for plan in oracle.plans:  # home copies never move
        np.testing.assert_array_equal(np.where(plan.home, plan.slot_expert, -1),
                                      np.where(plan.home, ctx.static.slot_expert, -1))  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(
    seed=hs.integers(0, 2**31 - 1),
    egr=hs.sampled_from([(8, 8, 2), (16, 8, 3), (64, 16, 5), (6, 4, 3), (3, 4, 2)]),
    skew=hs.floats(0.1, 3.0),
)
def test_spare_plan_bounds(seed, egr, skew) -> None:
    e, g, r = egr
    rng = np.random.default_rng(seed)
    load = rng.gamma(skew, 1.0, (3, e)) * 100
    home = static_placement(3, e, g, r)
    prev = plan_spare(rng.permutation(load, axis=1), home)
    plan = plan_spare(load, home, previous=prev, migration_slack=0.05)
    meta = plan.meta
    assert np.all(meta["predicted_max_load"] <= meta["home_max_load"] * (1 + 1e-12))
    assert np.all(meta["predicted_max_load"] >= meta["lower_bound"] * (1 - 1e-12))
    np.testing.assert_allclose(meta["predicted_max_load"], plan.gpu_load(load).max(axis=1))
    assert np.array_equal(plan.home, home.home)
    assert np.all(
        np.where(home.home, plan.slot_expert, -1) == np.where(home.home, home.slot_expert, -1)
    )
    assert migration_bytes_per_gpu(plan, plan.home_only(), EB).sum() == 0.0
    assert plan.used_slots().max() <= r
    assert (plan.expert_gpu_counts() <= 1).all()  # never two copies of an expert on one GPU


# ---------------------------------------------------------------------- exact small layers


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


@settings(max_examples=10, deadline=None)
@given(
    seed=hs.integers(0, 2**31 - 1),
    spare=hs.booleans(),
    egr=hs.sampled_from([(3, 2, 3), (3, 3, 2), (4, 2, 3), (2, 2, 1)]),  # MILP and enumeration
)
def test_exact_layer_matches_brute_force(seed, spare, egr) -> None:
    rng = np.random.default_rng(seed)
    e, g, r = egr
    load = np.round(rng.gamma(0.5, 1.0, e) * 20, 1)
    home = static_placement(1, e, g, r).slot_expert[0] if spare else None
    se, value, status = exact_layer(load, g, r, home=home)
    assert status == "optimal" and se is not None
    assert value == pytest.approx(_brute_force(load, g, r, home), rel=1e-9)


def test_exact_candidate_beats_the_heuristic_when_it_can() -> None:
    load = np.array([[5.0, 4.0, 3.0, 3.0, 3.0, 2.0]])  # 3 GPUs x 2 slots, no spare slot
    heur = plan_duplication(load, 3, 2)
    exact = plan_duplication(load, 3, 2, exact=True)
    assert exact.meta["exact_status"] == ["optimal"]
    assert exact.meta["predicted_max_load"][0] == pytest.approx(7.0)  # {5,2},{4,3},{3,3}
    assert exact.meta["predicted_max_load"][0] <= heur.meta["predicted_max_load"][0]


# ---------------------------------------------------------------------- bad inputs


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"slots_per_gpu=1: 8 experts on 4 GPUs .* -1 spare"):
        spare_slots_per_gpu(8, 4, 1)
    with pytest.raises(ValueError, match=r"strategy\.migration_source='pigeon'"):
        check_source("pigeon")
    with pytest.raises(ValueError, match=r"strategy\.replicas='sometimes'"):
        check_replicas("sometimes")
    with pytest.raises(ValueError, match="exact: only for E <= 16"):
        check_small(64, 8)
    home = static_placement(1, 4, 2, 3)
    with pytest.raises(ValueError, match="no home slots"):
        plan_spare(np.ones((1, 4)), Plan(home.slot_expert, 4))
    with pytest.raises(ValueError, match="home: a home slot must hold an expert"):
        Plan(home.slot_expert, 4, home=np.ones((1, 2, 3), dtype=bool))
    with pytest.raises(ValueError, match="migration_slack"):
        plan_spare(np.ones((1, 4)), home, migration_slack=-1)
    loads = np.ones((3, 1, 4))
    with pytest.raises(ValueError, match=r"strategy\.horizon=0.5"):
        _context(loads, 1, 2, 1, 1.0, 0.5, "peer")
    with pytest.raises(ValueError, match="-1 spare slots"):
        _context(loads, 1, 2, -1, 1.0, 1.0, "peer")
    ctx = _context(loads, 1, 2, 1, 1.0, 1.0, "peer")
    with pytest.raises(ValueError, match=r"migration_source=host: .* no host_link"):
        replace(ctx, cluster=cluster(1, 2), migration_source="host")
