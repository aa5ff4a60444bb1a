"""Plans: static placement, greedy replication + packing, node-aware variant, migration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gps.plans import (
    Plan,
    balanced_lower_bound,
    cross_node_copies,
    max_gpu_load,
    migration_bytes,
    migration_bytes_per_gpu,
    pack_balanced,
    plan_duplication,
    plan_duplication_node_aware,
    replicate_greedy,
    slots_needed,
    static_placement,
)
from gps.plans.plan import expert_gpu_counts, expert_gpu_holds


def zipf_loads(layers: int, experts: int, a: float, tokens: int, seed: int) -> np.ndarray:
    """``[L, E]`` multinomial counts from a Zipf(a) popularity, shuffled per layer."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, experts + 1) ** a
    p /= p.sum()
    return np.stack([rng.multinomial(tokens, rng.permutation(p)) for _ in range(layers)]).astype(
        float
    )


def check_invariants(plan: Plan, slots_per_gpu: int) -> None:
    assert plan.slot_expert.shape[2] == slots_per_gpu
    assert np.all(plan.replica_counts() >= 1)
    assert np.all(plan.used_slots() <= slots_per_gpu)


# ---- static placement -----------------------------------------------------------------------


def test_static_contiguous_and_round_robin():
    c = static_placement(2, 6, 3)
    assert c.slot_expert[0].tolist() == [[0, 1], [2, 3], [4, 5]]
    rr = static_placement(1, 6, 3, layout="round_robin")
    assert rr.slot_expert[0].tolist() == [[0, 3], [1, 4], [2, 5]]
    padded = static_placement(1, 5, 2, slots_per_gpu=4)
    assert padded.slot_expert[0].tolist() == [[0, 1, 2, -1], [3, 4, -1, -1]]
    assert padded.gpu_of_slot().tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]


def test_static_fewer_experts_than_gpus_replicates_like_cost_model():
    plan = static_placement(1, 2, 4)
    assert plan.slot_expert[0, :, 0].tolist() == [0, 0, 1, 1]
    assert plan.replica_counts().tolist() == [[2, 2]]


def test_plan_rejects_missing_expert_and_bad_ids():
    with pytest.raises(ValueError, match="without a replica"):
        Plan(np.array([[[0, 0]]]), 2)
    with pytest.raises(ValueError, match="slot_expert"):
        Plan(np.array([[[0, 5]]]), 2)
    with pytest.raises(ValueError, match="slot_expert"):
        Plan(np.zeros((2, 2)), 2)


def test_plan_counts_hand_case_and_missing_home_copy():
    # GPU 0 holds expert 0 twice, GPU 1 expert 1 once and an empty slot
    plan = Plan(np.array([[[0, 0], [1, -1]]]), 2)
    assert plan.replica_counts().tolist() == [[2, 1]]
    assert plan.replica_counts().dtype == np.int64
    with pytest.raises(ValueError, match="layer 1 leaves an expert without a home slot"):
        Plan(np.array([[[0, 1]], [[0, 1]]]), 2, home=np.array([[[True, True]], [[True, False]]]))


def test_expert_gpu_holds_hand_case_and_counts():
    se = np.array([[[0, 2, -1], [1, 1, 2]], [[-1, -1, 0], [2, 0, 2]]])  # [L=2, G=2, R=3]
    holds = expert_gpu_holds(se, 3)
    assert holds.tolist() == [
        [[True, False, True], [False, True, True]],
        [[True, False, False], [True, False, True]],
    ]
    rng = np.random.default_rng(0)
    se = rng.integers(-1, 5, (4, 3, 6))  # empty slots and repeated experts
    np.testing.assert_array_equal(expert_gpu_holds(se, 5), expert_gpu_counts(se, 5) > 0)


# ---- greedy replication + packing ------------------------------------------------------------


def test_replicate_greedy_hand_case():
    counts = replicate_greedy(np.array([[8.0, 4.0, 1.0, 0.0]]), 7)
    # 1 each, then 8/1 -> 8/2=4, tie 4 vs 4 -> first (expert 0) -> 8/3, then expert 1
    assert counts.tolist() == [[3, 2, 1, 1]]


def test_one_hot_expert_gets_one_replica_per_gpu():
    load = np.array([[100.0, 1.0, 1.0, 1.0]])
    plan = plan_duplication(load, 4, 2)
    check_invariants(plan, 2)
    assert plan.replica_counts()[0, 0] == 4
    assert np.all(plan.expert_gpu_counts()[0, :, 0] == 1)  # every GPU, once
    gpu = plan.gpu_load(load)[0]
    assert gpu.max() == pytest.approx(26.0)  # 25 (a quarter of the hot expert) + 1
    assert gpu.max() <= 1.01 * balanced_lower_bound(load, 4)[0]


def test_uniform_load_is_perfectly_balanced_without_replicas():
    load = np.full((3, 8), 10.0)
    plan = plan_duplication(load, 4, 3)
    check_invariants(plan, 3)
    np.testing.assert_allclose(plan.gpu_load(load), 20.0)
    assert plan.used_slots().sum(axis=1).tolist() == [8, 8, 8]  # ties keep fewer weights


def test_more_replica_slots_than_needed():
    load = np.array([[30.0, 10.0, 10.0, 10.0]])
    plan = plan_duplication(load, 4, 4)  # 16 slots for 4 experts
    check_invariants(plan, 4)
    assert plan.gpu_load(load).max() == pytest.approx(15.0)  # total 60 / 4 GPUs
    assert plan.replica_counts().max() <= 4


def test_single_gpu_holds_everything():
    load = np.array([[5.0, 3.0, 2.0]])
    plan = plan_duplication(load, 1, 3)
    assert sorted(plan.slot_expert[0, 0].tolist()) == [0, 1, 2]
    assert plan.gpu_load(load)[0, 0] == pytest.approx(10.0)


def test_zero_load_layer():
    plan = plan_duplication(np.zeros((2, 4)), 2, 2)
    check_invariants(plan, 2)


@pytest.mark.parametrize(
    ("load", "g", "r", "match"),
    [
        (np.array([[1.0, -1.0]]), 2, 1, "negative"),
        (np.ones((1, 5)), 2, 2, "slots_per_gpu"),
        (np.ones((1, 2)), 2, 0, "slots_per_gpu"),
        (np.ones(4), 2, 2, "load"),
        (np.array([[1.0, np.nan]]), 2, 1, "finite"),
        (np.ones((1, 2)), 0, 2, "num_gpus"),
    ],
)
def test_bad_inputs(load, g, r, match):
    with pytest.raises(ValueError, match=match):
        plan_duplication(load, g, r)


def test_pack_balanced_rejects_too_many_replicas():
    with pytest.raises(ValueError, match="counts"):
        pack_balanced(np.ones((1, 2)), np.array([[3, 2]]), 2, 2)


@settings(max_examples=60, deadline=None)
@given(
    e=st.integers(1, 10),
    g=st.integers(1, 5),
    extra=st.integers(0, 3),
    a=st.floats(0.0, 2.5),
    seed=st.integers(0, 10_000),
)
def test_never_worse_than_no_duplication_or_plain_greedy(e, g, extra, a, seed):
    r = -(-e // g) + extra
    load = zipf_loads(2, e, a, 500, seed)
    plan = plan_duplication(load, g, r)
    check_invariants(plan, r)
    got = plan.gpu_load(load).max(axis=1)
    static = static_placement(2, e, g, r).gpu_load(load).max(axis=1)
    round_robin = static_placement(2, e, g, r, "round_robin").gpu_load(load).max(axis=1)
    greedy = pack_balanced(load, replicate_greedy(load, g * r, max_replicas=g), g, r)
    tol = 1e-9 * (1 + load.sum())
    assert np.all(got <= static + tol)
    assert np.all(got <= round_robin + tol)
    assert np.all(got <= max_gpu_load(greedy, load) + tol)
    assert np.all(got >= balanced_lower_bound(load, g) - tol)
    np.testing.assert_allclose(got, plan.meta["predicted_max_load"])
    # replicas of one expert sit on distinct GPUs (at most G replicas each)
    assert plan.expert_gpu_counts().max() <= 1


@pytest.mark.parametrize(("a", "seed"), [(0.8, 0), (1.0, 1), (1.2, 2)])
def test_skewed_load_within_5_percent_of_bound_with_enough_slots(a, seed):
    load = zipf_loads(8, 64, a, 16384, seed)
    g = 16
    r = int(-(-slots_needed(load, g).max() // g)) + 1  # the skew's slots plus a spare per GPU
    plan = plan_duplication(load, g, r)
    ratio = plan.gpu_load(load).max(axis=1) / balanced_lower_bound(load, g)
    assert ratio.max() <= 1.05


def test_balances_skew_far_better_than_static():
    load = zipf_loads(4, 32, 1.2, 8192, 3)
    static = static_placement(4, 32, 8).gpu_load(load).max(axis=1)
    plan = plan_duplication(load, 8, 6)
    assert np.all(plan.gpu_load(load).max(axis=1) < 0.6 * static)


# ---- node-aware --------------------------------------------------------------------------------


def test_node_aware_keeps_replicas_where_tokens_come_from():
    layers, e, n, gpn, r = 2, 8, 2, 2, 2  # no spare slots: the flat plan cannot cover both nodes
    load = zipf_loads(layers, e, 0.0, 4000, 5)
    source = np.zeros((layers, n, e))
    home = np.arange(e) % n
    source[:, home, np.arange(e)] = load  # expert e's tokens all come from node e % 2
    plan = plan_duplication_node_aware(load, n * gpn, r, gpn, source_load=source)
    check_invariants(plan, r)
    assert plan.meta["node_aware"].all()
    assert np.all(plan.meta["cross_node_copies"] == 0)
    assert np.all(plan.meta["flat_cross_node_copies"] > 0)


def test_node_aware_uniform_sources_keeps_flat_plan():
    load = zipf_loads(3, 8, 1.0, 4000, 6)
    plan = plan_duplication_node_aware(load, 4, 4, 2)
    flat = plan_duplication(load, 4, 4)
    assert not plan.meta["node_aware"].any()
    np.testing.assert_array_equal(plan.slot_expert, flat.slot_expert)
    # half of every expert's tokens on each node: a node's tokens to expert e cross iff none
    # of the node's 2 GPUs holds e (reference: plain loops over layers, nodes, experts)
    sources = np.repeat(load[:, None] / 2, 2, 1)
    want = np.zeros(load.shape[0])
    for layer in range(load.shape[0]):
        for node in range(2):
            held = set(plan.slot_expert[layer, 2 * node : 2 * node + 2].ravel().tolist())
            want[layer] += sum(sources[layer, node, e] for e in range(8) if e not in held)
    got = cross_node_copies(plan.slot_expert, sources, 2)
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(plan.meta["cross_node_copies"], want)


def test_node_aware_bad_inputs():
    with pytest.raises(ValueError, match="gpus_per_node"):
        plan_duplication_node_aware(np.ones((1, 4)), 4, 2, 3)
    with pytest.raises(ValueError, match="source_load"):
        plan_duplication_node_aware(np.ones((1, 4)), 4, 2, 2, source_load=np.ones((1, 3, 4)))


# ---- migration ----------------------------------------------------------------------------------


def test_migration_bytes_hand_case():
    old = Plan(np.array([[[0, 1], [2, 3]]]), 4)
    new = Plan(np.array([[[0, 3], [2, 1]]]), 4)  # GPU 0 gains 3, GPU 1 gains 1
    np.testing.assert_array_equal(migration_bytes_per_gpu(old, new, 10.0), [[10.0, 10.0]])
    np.testing.assert_array_equal(migration_bytes(old, new, 10.0), [20.0])
    np.testing.assert_array_equal(migration_bytes(new, new, 10.0), [0.0])
    with pytest.raises(ValueError, match="expert_bytes"):
        migration_bytes(old, new, -1.0)
    with pytest.raises(ValueError, match="old/new"):
        migration_bytes(old, Plan(np.zeros((1, 1, 4), dtype=int) + np.arange(4), 4), 1.0)


def test_previous_plan_alignment_cuts_migration():
    load = zipf_loads(4, 16, 1.0, 4000, 7)
    first = plan_duplication(load, 4, 6)
    perm = np.random.default_rng(0).permutation(4)
    shuffled = Plan(first.slot_expert[:, perm], 16)
    again = plan_duplication(load, 4, 6, previous=shuffled)
    assert migration_bytes(shuffled, again, 1.0).sum() == 0
    np.testing.assert_allclose(again.gpu_load(load).max(1), first.gpu_load(load).max(1))
