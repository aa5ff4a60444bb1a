"""MoETuner's two-stage ILP (grouping, then group-to-GPU mapping) on hand-checkable cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gps.plans import static_slot_expert, transition_counts
from gps.plans.ilp_two_stage import (
    _link_weight,
    bandwidth_matrix,
    group_deviation,
    group_experts,
    group_transitions,
    link_cost,
    map_groups,
    two_stage_placement,
)


def test_megatron_contiguous_baseline_is_static_contiguous():
    """The paper's baseline: experts 0-1 on GPU 0, 2-3 on GPU 1, ... (Mixtral on EP4)."""
    assert static_slot_expert(8, 4).tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_bandwidth_matrix_two_nodes():
    b = bandwidth_matrix(np.arange(4) // 2, 400.0, 100.0)
    assert b[0, 1] == 400.0 and b[2, 3] == 400.0 and b[0, 2] == 100.0 and b[1, 3] == 100.0
    assert np.isinf(np.diag(b)).all()
    w = _link_weight(b)
    assert w[0, 1] == 1.0 and w[0, 2] == 4.0 and w[0, 0] == 0.0
    with pytest.raises(ValueError, match="inter_bandwidth"):
        bandwidth_matrix(np.arange(4) // 2, 400.0, None)


def test_stage1_perfect_split_by_hand():
    # {4, 1} and {3, 2}: both groups at the mean 5 -> objective 0
    groups, method, gap, _ = group_experts(np.array([[4.0, 3.0, 2.0, 1.0]]), 2, time_limit_s=5)
    assert method == "milp-optimal" and gap == 0.0
    g = groups[0]
    assert g[0] == g[3] and g[1] == g[2] and g[0] != g[1]
    assert group_deviation(groups, np.array([[4.0, 3.0, 2.0, 1.0]]), 2).tolist() == [0.0]


def test_stage1_one_hot_expert_by_hand():
    # E=8, C=4, two experts per group; mean 17/4 = 4.25. The hot expert's group holds
    # 10 + 1 = 11 (|11 - 4.25| = 6.75), the other three hold 2 each (3 x 2.25 = 6.75): 13.5.
    load = np.array([[10.0, 1, 1, 1, 1, 1, 1, 1]])
    groups, method, _, _ = group_experts(load, 4, time_limit_s=5)
    assert method == "milp-optimal"
    assert np.bincount(groups[0], minlength=4).tolist() == [2, 2, 2, 2]
    assert group_deviation(groups, load, 4)[0] == pytest.approx(13.5)


def test_stage1_matches_brute_force_and_heuristic_is_valid():
    rng = np.random.default_rng(3)
    load = rng.integers(1, 50, size=(2, 6)).astype(float)
    best = []
    for layer in load:
        vals = [
            group_deviation(np.array([p]), layer[None], 3)[0]
            for p in itertools.product(range(3), repeat=6)
            if np.bincount(p, minlength=3).tolist() == [2, 2, 2]
        ]
        best.append(min(vals))
    groups, method, gap, _ = group_experts(load, 3, time_limit_s=10)
    assert method == "milp-optimal" and gap <= 1e-3
    assert group_deviation(groups, load, 3) == pytest.approx(best)
    heur, method, _, msg = group_experts(load, 3, max_variables=0)
    assert method == "heuristic-fallback" and "not built" in msg
    assert all(np.bincount(h, minlength=3).tolist() == [2, 2, 2] for h in heur)
    assert np.all(group_deviation(heur, load, 3) >= np.array(best) - 1e-9)


def test_group_transitions_sum_over_members():
    trans = np.arange(16, dtype=float).reshape(1, 4, 4)
    groups = np.array([[0, 0, 1, 1], [0, 1, 0, 1]])
    gt = group_transitions(trans, groups, 2)
    # layer-0 group 0 = experts {0, 1}; layer-1 group 0 = experts {0, 2}
    assert gt[0, 0, 0] == trans[0, 0, 0] + trans[0, 0, 2] + trans[0, 1, 0] + trans[0, 1, 2]
    assert gt.sum() == trans.sum()


def test_stage2_colocates_a_crossed_flow():
    # group 0 -> group 1 and group 1 -> group 0: the optimum swaps layer 1's groups, cost 0
    gt = np.array([[[0.0, 5.0], [7.0, 0.0]]])
    bw = bandwidth_matrix(np.zeros(2), 1.0, None)
    out, method, gap, _ = map_groups(gt, bw, time_limit_s=5, exact="milp")
    assert method == "milp-optimal" and gap == 0.0
    assert out[1, 1] == out[0, 0] and out[1, 0] == out[0, 1]
    assert link_cost(out, gt, _link_weight(bw)).tolist() == [0.0]


def test_stage2_sends_unavoidable_traffic_over_the_fast_link():
    # two nodes of two GPUs, NVLink 4x InfiniBand. Groups {0, 1} of layer 0 each send 10 tokens
    # to each of layer 1's groups {0, 1} (same for {2, 3} -> {2, 3}): one flow per group must
    # cross; on the intra-node link the worst link carries 10 x 1 = 10, over IB 10 x 4 = 40.
    gt = np.zeros((1, 4, 4))
    gt[0, :2, :2] = 10.0
    gt[0, 2:, 2:] = 10.0
    bw = bandwidth_matrix(np.arange(4) // 2, 400.0, 100.0)
    for exact in ("milp", "dp"):
        out, method, _, _ = map_groups(gt, bw, time_limit_s=10, exact=exact)
        assert method == f"{exact}-optimal"
        assert link_cost(out, gt, _link_weight(bw))[0] == pytest.approx(10.0)
        node = out // 2
        assert node[1, 0] == node[1, 1] == node[0, 0] == node[0, 1]


def brute_force_stage2(gt, weight):
    nl, c = gt.shape[0] + 1, gt.shape[1]
    perms = list(itertools.permutations(range(c)))
    combos = itertools.product(perms, repeat=nl)
    return min(link_cost(np.array(combo), gt, weight).sum() for combo in combos)


@pytest.mark.parametrize("nodes", [1, 2])
def test_stage2_matches_brute_force(nodes):
    rng = np.random.default_rng(7 + nodes)
    gt = rng.integers(0, 20, size=(2, 3, 3)).astype(float)
    node = np.zeros(3) if nodes == 1 else np.array([0, 0, 1])
    bw = bandwidth_matrix(node, 400.0, 100.0 if nodes > 1 else None)
    best = brute_force_stage2(gt, _link_weight(bw))
    for exact in ("milp", "dp"):
        out, method, gap, _ = map_groups(gt, bw, time_limit_s=20, mip_gap=0.0, exact=exact)
        assert method == f"{exact}-optimal" and gap <= 1e-6
        assert link_cost(out, gt, _link_weight(bw)).sum() == pytest.approx(best)
    heur, method, _, _ = map_groups(gt, bw, max_variables=0, exact="milp")
    assert method == "heuristic-fallback"
    assert all(sorted(row) == [0, 1, 2] for row in heur)
    assert link_cost(heur, gt, _link_weight(bw)).sum() >= best - 1e-9


def test_two_stage_plan_end_to_end():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 8, size=(300, 3, 2))
    ids[:, 1] = (ids[:, 0] + 1) % 8  # layer 1's expert follows layer 0's
    load = np.stack([np.bincount(ids[:, la].ravel(), minlength=8) for la in range(3)]) * 1.0
    trans = transition_counts(ids, 8).astype(float)
    bw = bandwidth_matrix(np.zeros(4), 1.0, None)
    res = two_stage_placement(load, trans, bw, time_limit_s=10)
    plan = res.plan
    assert plan.slot_expert.shape == (3, 4, 2)
    assert np.all(plan.replica_counts() == 1) and np.all(plan.used_slots() == 2)
    # every GPU holds exactly one stage-1 group
    for la in range(3):
        for g in range(4):
            members = plan.slot_expert[la, g]
            assert len(set(res.groups[la, members])) == 1
    assert res.stage1_objective == pytest.approx(group_deviation(res.groups, load, 4).sum())
    assert res.method == "milp-optimal/dp-optimal"


def test_two_stage_rejects_bad_input():
    bw2, bw4 = bandwidth_matrix(np.zeros(2), 1, None), bandwidth_matrix(np.zeros(4), 1, None)
    with pytest.raises(ValueError, match="transitions"):
        two_stage_placement(np.ones((2, 4)), np.ones((2, 4, 4)), bw2)
    with pytest.raises(ValueError, match="G <= E"):
        two_stage_placement(np.ones((2, 2)), np.ones((1, 2, 2)), bw4)
