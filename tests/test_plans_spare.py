"""Home + spare slots: hand-checkable migrations, link pricing, the planner's steps on cases
solved by hand, the bounds that hold by construction (property tests), and bad inputs."""

from __future__ import annotations

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
    expert_gpu_counts,
    fetch_seconds,
    fetch_tier,
    improve_placement,
    keep_slots,
    matched_loads,
    max_gpu_load,
    migration_bytes_per_gpu,
    migration_seconds_per_gpu,
    place_replicas,
    plan_duplication,
    plan_spare,
    plan_spare_slacks,
    replica_counts,
    spare_lower_bound,
    spare_slots_per_gpu,
    static_placement,
)
from gps.plans.migration import check_source
from gps.plans.spare import _peaks, busiest_first_pays, check_replicas, wide_count_search
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


def test_fetch_seconds_by_tier() -> None:
    cl = _cluster(2, 2)  # nodes {0, 1} and {2, 3}
    home = static_placement(1, 4, 4, 2)  # expert g at home on GPU g
    intra, inter = INTRA_LAT + EB / INTRA_BW, INTER_LAT + EB / INTER_BW
    np.testing.assert_allclose(fetch_seconds(home, EB, cl, "peer")[0], [
        [0.0, intra, inter, inter],
        [intra, 0.0, inter, inter],
        [inter, inter, 0.0, intra],
        [inter, inter, intra, 0.0],
    ])  # fmt: skip
    host = HOST_LAT + EB / HOST_BW
    np.testing.assert_allclose(fetch_seconds(home, EB, cl, "host")[0], host * (1 - np.eye(4)))


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
    egr=hs.sampled_from(
        [(8, 8, 2), (16, 8, 3), (64, 16, 5), (6, 4, 3), (3, 4, 2), (8, 4, 3), (256, 64, 5)]
    ),
    skew=hs.floats(0.1, 3.0),
    slack=hs.sampled_from([0.0, 0.05]),
    cap=hs.sampled_from([None, 2]),
)
def test_spare_plan_bounds(seed, egr, skew, slack, cap) -> None:
    """Every plan is valid (home copies kept, at most R slots and one copy of an expert per
    GPU, every expert present) and lies between the certified bound and home copies only."""
    e, g, r = egr
    rng = np.random.default_rng(seed)
    load = rng.gamma(skew, 1.0, (3, e)) * 100
    home = static_placement(3, e, g, r)
    prev = plan_spare(rng.permutation(load, axis=1), home, max_replicas=cap)
    plan = plan_spare(load, home, previous=prev, migration_slack=slack, max_replicas=cap)
    meta = plan.meta
    assert np.all(meta["predicted_max_load"] <= meta["home_max_load"] * (1 + 1e-12))
    bound = spare_lower_bound(load, home, max_replicas=cap)
    assert np.all(bound >= meta["lower_bound"] * (1 - 1e-12))
    assert np.all(meta["predicted_max_load"] >= bound * (1 - 1e-9))
    np.testing.assert_allclose(meta["predicted_max_load"], plan.gpu_load(load).max(axis=1))
    assert np.array_equal(plan.home, home.home)
    assert np.all(
        np.where(home.home, plan.slot_expert, -1) == np.where(home.home, home.slot_expert, -1)
    )
    assert migration_bytes_per_gpu(plan, plan.home_only(), EB).sum() == 0.0
    assert plan.used_slots().max() <= r
    assert (plan.expert_gpu_counts() <= 1).all()  # never two copies of an expert on one GPU
    assert (plan.replica_counts() >= 1).all()
    if cap is not None:
        assert (plan.replica_counts() <= cap).all()


# ---------------------------------------------------------------------- the planner's steps


def _homes(e: int, g: int, r: int):
    home = static_placement(1, e, g, r)
    base = np.where(home.home, home.slot_expert, -1)
    return home, base, expert_gpu_counts(base, e) > 0, (~home.home).sum(axis=2)


def test_matched_loads_by_hand() -> None:
    # one spare slot per GPU: heaviest lump on the lightest GPU
    loads, top = matched_loads(np.array([[5.0, 1.0, 3.0]]), np.array([[0.0, 2.0, 4.0]]),
                               np.ones((1, 3), dtype=int))  # fmt: skip
    np.testing.assert_allclose(loads, [[5.0, 5.0, 5.0]])  # 1 + 4, 3 + 2
    np.testing.assert_allclose(top, [[0.0, 4.0, 2.0]])
    # more lumps than spare slots: infeasible
    assert np.isinf(matched_loads(np.zeros((1, 2)), np.ones((1, 3)), np.ones((1, 2), int))[0]).any()
    # two slots on GPU 0, none on GPU 1: both lumps land on GPU 0
    loads, _ = matched_loads(np.array([[0.0, 0.0]]), np.array([[3.0, 1.0]]), np.array([[2, 0]]))
    np.testing.assert_allclose(loads, [[4.0, 0.0]])


def test_peaks_match_matched_loads_with_closed_gpus() -> None:
    """``_peaks``' sorting shortcut (at most one spare slot per GPU) gives the four highest loads
    of ``matched_loads``, also where some GPUs have no spare slot (uneven home copies)."""
    # by hand: GPU 0 has no slot, the lump of 4 goes to GPU 1 (home load 1): loads 5, 5, 2, 3
    top = _peaks(np.array([[5.0, 1.0, 2.0, 3.0]]), np.array([[4.0, 0.0, 0.0, 0.0]]),
                 np.array([[0, 1, 1, 1]]))  # fmt: skip
    np.testing.assert_allclose(top, [[5.0, 5.0, 3.0, 2.0]])
    rng = np.random.default_rng(5)
    hl = rng.uniform(0, 10, (200, 6))
    lumps = rng.uniform(0, 10, (200, 6)) * (rng.random((200, 6)) < 0.5)
    room = (rng.random((200, 6)) < 0.7).astype(int)
    want = -np.sort(-matched_loads(hl, lumps, room)[0], axis=1)[:, :4]
    got = _peaks(hl, lumps, room)
    lost = np.isinf(want[:, 0])  # more lumps than free slots: every peak infinite
    assert lost.any() and (~lost).sum() > 100
    assert np.isinf(got[lost]).all()
    np.testing.assert_allclose(got[~lost], want[~lost])
    # every GPU with a slot (``_one_slot_loads``' default), lumps wider than the GPUs: a row
    # with a seventh positive lump cannot be hosted
    lumps = rng.uniform(0, 10, (200, 8)) * (rng.random((200, 8)) < 0.75)
    full = np.ones((200, 6), dtype=int)
    want = -np.sort(-matched_loads(hl, lumps, full)[0], axis=1)[:, :4]
    got = _peaks(hl, lumps, full)
    lost = np.isinf(want[:, 0])
    assert lost.any() and (~lost).sum() > 50
    assert np.isinf(got[lost]).all()
    np.testing.assert_allclose(got[~lost], want[~lost])


def test_water_fill_reaches_the_hand_optimum() -> None:
    # 4 GPUs, expert g at home on GPU g, one spare slot each; loads [6, 6, 2, 2]: mean 4. Two
    # copies of every expert put 3 + 1 on each GPU: max 4 = the mean, the optimum.
    home, base, hm, room = _homes(4, 4, 2)
    load = np.array([[6.0, 6.0, 2.0, 2.0]])
    counts, level = replica_counts(load, hm, room)
    assert level[0, 0] == pytest.approx(4.0) and counts[0, 0].sum() - 4 <= 4
    se = place_replicas(load, base, ~home.home, counts[0], level[0])
    assert max_gpu_load(se, load)[0] == pytest.approx(4.0)
    assert plan_spare(load, home).meta["predicted_max_load"][0] == pytest.approx(4.0)
    # [9, 1, 1, 1]: expert 0 on every GPU (2.25 each) and the last spare slot, on GPU 0, for
    # expert 1: loads [2.75, 2.75, 3.25, 3.25]; no plan does better (3 copies: 1 + 3 = 4)
    load = np.array([[9.0, 1.0, 1.0, 1.0]])
    counts, level = replica_counts(load, hm, room)
    assert level[0, 0] == pytest.approx(3.25)
    assert plan_spare(load, home).meta["predicted_max_load"][0] == pytest.approx(3.25)


def test_wide_count_search_by_hand() -> None:
    # 4 GPUs, expert g at home on GPU g, one spare slot each.
    hg = np.array([[0, 1, 2, 3]])
    # [6, 6, 2, 2] from the poor start [1, 1, 1, 4] (GPU 0 at 6 + 2/3): moves of one copy reach
    # max 4 = the mean, the optimum (e.g. [3, 2, 1, 2]: homes [2, 3, 2, 1] + lumps [2, 2, 3, 1]
    # heaviest onto the lightest: 4 everywhere)
    counts, level = wide_count_search(np.array([[6.0, 6.0, 2.0, 2.0]]), hg,
                                      np.array([[1, 1, 1, 4]]), 4)  # fmt: skip
    assert level[0] == pytest.approx(4.0) and (counts >= 1).all() and counts.sum() <= 8
    # [9, 1, 1, 1] from home copies only: 4 copies of expert 0 (2.25 each, lumps onto GPUs 1-3:
    # 3.25), the optimum (3 copies: 1 + 3 = 4)
    counts, level = wide_count_search(np.array([[9.0, 1.0, 1.0, 1.0]]), hg, np.ones((1, 4), int), 4)
    np.testing.assert_array_equal(counts, [[4, 1, 1, 1]])
    assert level[0] == pytest.approx(3.25)
    # at most 2 copies: expert 0's home GPU keeps 4.5 and its lump lands on a GPU of load >= 0.5
    # (expert 1 split in two): max 5, the optimum under the cap
    counts, level = wide_count_search(np.array([[9.0, 1.0, 1.0, 1.0]]), hg, np.ones((1, 4), int), 2)
    assert level[0] == pytest.approx(5.0) and counts.max() <= 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=hs.integers(0, 2**16), skew=hs.floats(0.2, 3.0))
def test_wide_search_never_worse_than_its_start(seed, skew) -> None:
    """``wide_count_search`` never raises the matched level of the counts it starts from, and
    ``plan_spare(..., wide_search=True)`` gives valid plans above the certified bound."""
    rng = np.random.default_rng(seed)
    home = static_placement(2, 16, 8, 3)  # 2 home + 1 spare slot per GPU
    hm = expert_gpu_counts(np.where(home.home, home.slot_expert, -1), 16) > 0
    room = (~home.home).sum(axis=2)
    load = rng.gamma(skew, 1.0, (2, 16)) * 100
    counts, level = replica_counts(load, hm, room)
    hg = np.argmax(hm, axis=1)
    wide, wlevel = wide_count_search(load, hg, counts[0], 8)
    assert np.all(wlevel <= level[0] * (1 + 1e-9))  # the same matching, summed in another order
    assert np.all(wide >= 1) and np.all((wide - 1).sum(axis=1) <= 8)
    plan = plan_spare(load, home, wide_search=True)
    assert np.all(plan.meta["predicted_max_load"] >= spare_lower_bound(load, home) * (1 - 1e-9))
    assert (plan.expert_gpu_counts() <= 1).all() and plan.used_slots().max() <= 3
    assert np.array_equal(np.where(home.home, plan.slot_expert, -1),
                          np.where(home.home, home.slot_expert, -1))  # fmt: skip


def test_water_fill_with_one_useful_slot() -> None:
    # 2 GPUs x (2 home + 1 spare): GPU 0 holds experts 0 and 1 (load 4 each), GPU 1 experts 2
    # and 3 (load 0). Only GPU 1's spare slot helps: a replica of expert 0 there gives loads
    # [6, 2]; GPU 0's own spare slot cannot take a copy of an expert it holds.
    home, _, hm, room = _homes(4, 2, 3)
    load = np.array([[4.0, 4.0, 0.0, 0.0]])
    _, level = replica_counts(load, hm, room)
    assert level[0, 0] == pytest.approx(6.0)
    assert plan_spare(load, home).meta["predicted_max_load"][0] == pytest.approx(6.0)


def test_placement_prefers_cheap_fetches_within_the_level() -> None:
    # 3 GPUs, one home expert each + 1 spare slot; one replica of expert 0 (load 6: copies of
    # 3), level 3.5: GPUs 1 and 2 (home load 0.5) both stay within it; GPU 2 already holds the
    # weights (fetch 0), so it gets the replica although GPU 1 is as light.
    home, base, _, _ = _homes(3, 3, 2)
    load = np.array([[6.0, 0.5, 0.5]])
    counts = np.array([[2, 1, 1]])
    fetch = np.ones((1, 3, 3))
    fetch[0, 2, 0] = 0.0
    se = place_replicas(load, base, ~home.home, counts, np.array([3.5]), fetch_s=fetch)
    np.testing.assert_array_equal(se[0, :, 1], [-1, -1, 0])
    se = place_replicas(load, base, ~home.home, counts, np.array([3.5]))
    np.testing.assert_array_equal(se[0, :, 1], [-1, 0, -1])  # by balance: the first lightest


def test_improve_placement_by_hand() -> None:
    # 2 GPUs x (1 home + 2 spare): the only copies of experts 2 and 3 (load 4 each) sit in GPU
    # 0's spare slots: loads [9, 1]. Swapping expert 2 with GPU 1's empty slot gives [5, 5].
    se = np.array([[[0, 2, 3], [1, -1, -1]]])
    spare = np.array([[[False, True, True], [False, True, True]]])
    load = np.array([[1.0, 1.0, 4.0, 4.0]])
    out = improve_placement(se, spare, load)
    np.testing.assert_allclose(max_gpu_load(out, load), [5.0])
    np.testing.assert_array_equal(out[0, :, 0], [0, 1])  # home slots never change


def test_one_pass_plans_every_slack() -> None:
    """``plan_spare_slacks`` gives ``plan_spare``'s plan at every slack (the busiest-first
    candidate, where it runs, at the first slack's fetch ties)."""
    rng = np.random.default_rng(3)
    for e, g, r in ((64, 16, 5), (256, 64, 5)):  # busiest-first runs / does not run
        load = rng.gamma(0.7, 1.0, (2, e)) * 100
        home = static_placement(2, e, g, r)
        prev = plan_spare(rng.permutation(load, axis=1), home)
        fetch = rng.uniform(0.0, 1.0, (2, g, e)) * (prev.expert_gpu_counts() == 0)
        plans = plan_spare_slacks(load, home, (0.0, 0.05), previous=prev, fetch_s=fetch)
        for slack, plan in zip((0.0, 0.05), plans, strict=True):
            if slack > 0 and busiest_first_pays(g, ~home.home):
                continue
            one = plan_spare(load, home, previous=prev, fetch_s=fetch, migration_slack=slack)
            np.testing.assert_array_equal(plan.slot_expert, one.slot_expert)
        # the migration-first plan trades at most 5% balance for fetches
        first, cheap = plans
        assert np.all(cheap.meta["predicted_max_load"]
                      <= first.meta["predicted_max_load"] * 1.05 * (1 + 1e-12))  # fmt: skip


# ---------------------------------------------------------------------- bad inputs


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"slots_per_gpu=1: 8 experts on 4 GPUs .* -1 spare"):
        spare_slots_per_gpu(8, 4, 1)
    with pytest.raises(ValueError, match=r"strategy\.migration_source='pigeon'"):
        check_source("pigeon")
    with pytest.raises(ValueError, match=r"strategy\.replicas='sometimes'"):
        check_replicas("sometimes")
    home = static_placement(1, 4, 2, 3)
    with pytest.raises(ValueError, match="no home slots"):
        plan_spare(np.ones((1, 4)), Plan(home.slot_expert, 4))
    with pytest.raises(ValueError, match="home: a home slot must hold an expert"):
        Plan(home.slot_expert, 4, home=np.ones((1, 2, 3), dtype=bool))
    with pytest.raises(ValueError, match="migration_slack"):
        plan_spare(np.ones((1, 4)), home, migration_slack=-1)
    with pytest.raises(ValueError, match="migration_slack"):
        plan_spare_slacks(np.ones((1, 4)), home, (0.0, float("nan")))
    with pytest.raises(ValueError, match="max_replicas"):
        plan_spare(np.ones((1, 4)), home, max_replicas=0)
    with pytest.raises(ValueError, match=r"load: shape \(1, 5\)"):
        plan_spare(np.ones((1, 5)), home)
    with pytest.raises(ValueError, match="load: negative"):
        plan_spare(-np.ones((1, 4)), home)
    with pytest.raises(ValueError, match="load: must be finite"):
        plan_spare(np.full((1, 4), np.inf), home)
    with pytest.raises(ValueError, match=r"fetch_s: shape \(1, 2\)"):
        plan_spare(np.ones((1, 4)), home, fetch_s=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="previous: must have the same"):
        plan_spare(np.ones((1, 4)), home, previous=static_placement(1, 4, 2, 4))
    with pytest.raises(ValueError, match="exact: only for E <= 16"):
        plan_spare(np.ones((1, 32)), static_placement(1, 32, 4, 9), exact=True)
    loads = np.ones((3, 1, 4))
    with pytest.raises(ValueError, match=r"strategy\.horizon=0.5"):
        _context(loads, 1, 2, 1, 1.0, 0.5, "peer")
    with pytest.raises(ValueError, match="-1 spare slots"):
        _context(loads, 1, 2, -1, 1.0, 1.0, "peer")
    ctx = _context(loads, 1, 2, 1, 1.0, 1.0, "peer")
    with pytest.raises(ValueError, match=r"migration_source=host: .* no host_link"):
        replace(ctx, cluster=cluster(1, 2), migration_source="host")
