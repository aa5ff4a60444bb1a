"""Load simulation: slot tokens, traffic, dropped/rerouted counts, cost-model integration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cost_helpers import cluster, gqa_model

from gps.cost import StepRouting, batch_cost, traffic_from_slot_tokens
from gps.plans import Plan, capacity_reroute, plan_duplication, static_placement
from gps.simulate import simulate, simulate_loads, simulate_tokens, source_gpus, token_bytes_of
from gps.traces.trace import TokenTrace
from gps.workload import Workload


def token_trace(experts: np.ndarray, num_experts: int) -> TokenTrace:
    t = experts.shape[0]
    ids = np.arange(t, dtype=np.int32)
    return TokenTrace(experts.astype(np.int16), ids, ids, ids * 0, num_experts)


def random_ids(t, layers, e, k, seed, a=1.0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, e + 1) ** a
    p /= p.sum()
    return np.stack(
        [[rng.choice(e, k, replace=False, p=p) for _ in range(layers)] for _ in range(t)]
    )


def test_source_gpus():
    assert source_gpus(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    assert source_gpus(6, 3, "round_robin").tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="source"):
        source_gpus(6, 3, "random")


def test_loads_even_split_matches_cost_model_traffic():
    spec = gqa_model()
    load = np.array([[40.0, 20.0, 10.0, 10.0], [5.0, 5.0, 50.0, 20.0]])
    plan = plan_duplication(load, 4, 2)
    sim = simulate(plan, load, spec=spec)
    np.testing.assert_allclose(sim.traffic_bytes, traffic_from_slot_tokens(sim.slot_tokens, spec))
    np.testing.assert_allclose(sim.gpu_tokens, plan.gpu_load(load))
    np.testing.assert_allclose(sim.slot_tokens.sum(axis=(1, 2)), load.sum(axis=1))
    assert sim.token_bytes == token_bytes_of(spec) == 1024 * 2


def test_loads_batches_equal_single_batches():
    loads = np.random.default_rng(0).integers(0, 50, (3, 2, 4)).astype(float)
    plan = static_placement(2, 4, 2)
    many = simulate_loads(plan, loads, token_bytes=1.0, split="locality", gpus_per_node=1)
    for n in range(3):
        one = simulate_loads(plan, loads[n], token_bytes=1.0, split="locality", gpus_per_node=1)
        np.testing.assert_allclose(many.slot_tokens[n], one.slot_tokens)
        np.testing.assert_allclose(many.traffic_bytes[n], one.traffic_bytes)


def test_locality_split_uses_local_replica():
    plan = Plan(np.array([[[0, 1], [0, 2]]]), 3)  # expert 0 on both GPUs
    load = np.array([[10.0, 4.0, 6.0]])
    sim = simulate(plan, load, token_bytes=1.0, split="locality")
    # GPU 0 sources 5 copies of expert 0 and serves them itself; same for GPU 1
    np.testing.assert_allclose(sim.slot_tokens[0], [[5.0, 4.0], [5.0, 6.0]])
    np.testing.assert_allclose(sim.traffic_bytes[0], [[0.0, 3.0], [2.0, 0.0]])
    even = simulate(plan, load, token_bytes=1.0, split="even")
    np.testing.assert_allclose(even.traffic_bytes[0], [[0.0, 2.5 + 3.0], [2.5 + 2.0, 0.0]])


def test_tokens_hand_case():
    # 4 tokens, 1 layer, top-1, 2 GPUs (tokens 0,1 on GPU 0), expert 0 on GPU 0, 1 on GPU 1
    plan = static_placement(1, 2, 2)
    ids = np.array([[[0]], [[1]], [[0]], [[1]]])
    sim = simulate(plan, token_trace(ids, 2), token_bytes=10.0)
    np.testing.assert_array_equal(sim.slot_tokens[0], [[2.0], [2.0]])
    np.testing.assert_array_equal(sim.traffic_bytes[0], [[0.0, 10.0], [10.0, 0.0]])
    assert sim.gpu_tokens.tolist() == [[2.0, 2.0]] and sim.max_gpu_tokens.tolist() == [2.0]
    skew = token_trace(np.array([[[0]], [[0]], [[0]], [[1]]]), 2)
    skewed = simulate(plan, skew, token_bytes=10.0)
    assert skewed.max_gpu_tokens.tolist() == [3.0]  # the straggler: GPU 0 with expert 0


def test_tokens_even_split_round_robins_over_replicas():
    plan = Plan(np.array([[[0, 1], [0, 2]]]), 3)
    ids = np.zeros((5, 1, 1), dtype=int)
    sim = simulate_tokens(plan, ids, token_bytes=1.0, source="round_robin")
    assert sim.slot_tokens[0, :, 0].tolist() == [3.0, 2.0]  # copies 0,2,4 / 1,3
    loc = simulate_tokens(plan, ids, token_bytes=1.0, source="round_robin", split="locality")
    assert loc.slot_tokens[0, :, 0].tolist() == [3.0, 2.0]
    assert loc.traffic_bytes.sum() == 0.0


def test_locality_prefers_same_node():
    # 4 GPUs on 2 nodes; expert 0 on GPUs 1 and 2; tokens from GPU 0 go to GPU 1 (same node)
    plan = Plan(np.array([[[1], [0], [0], [2]]]), 3)
    ids = np.zeros((4, 1, 1), dtype=int)
    sim = simulate_tokens(
        plan, ids, token_bytes=1.0, split="locality", source_gpu=np.array([0, 0, 3, 3]),
        gpus_per_node=2,
    )  # fmt: skip
    assert sim.traffic_bytes[0, 0].tolist() == [0.0, 2.0, 0.0, 0.0]
    assert sim.traffic_bytes[0, 3].tolist() == [0.0, 0.0, 2.0, 0.0]


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 40),
    e=st.integers(2, 8),
    g=st.sampled_from([1, 2, 4]),
    extra=st.integers(0, 2),
    split=st.sampled_from(["even", "locality"]),
    source=st.sampled_from(["blocks", "round_robin"]),
    gamma=st.floats(0.3, 2.0),
    seed=st.integers(0, 1000),
)
def test_invariants(t, e, g, extra, split, source, gamma, seed):
    layers, k = 2, min(2, e)
    r = -(-e // g) + extra
    ids = random_ids(t, layers, e, k, seed)
    load = np.stack([np.bincount(ids[:, i].ravel(), minlength=e) for i in range(layers)])
    plan = plan_duplication(load.astype(float), g, r)
    routed = capacity_reroute(ids, gamma, num_experts=e)
    gpn = 2 if g % 2 == 0 else 1
    sim = simulate(plan, routed, token_bytes=3.0, split=split, source=source, gpus_per_node=gpn)
    # every copy processed exactly once or dropped
    np.testing.assert_array_equal(sim.slot_tokens.sum(axis=(1, 2)) + sim.dropped, t * k)
    np.testing.assert_array_equal(sim.rerouted, routed.rerouted)
    # no tokens on empty slots; slot counts match the routed loads per expert
    assert np.all(sim.slot_tokens[plan.slot_expert < 0] == 0)
    per_expert = np.zeros((layers, e))
    for i in range(layers):
        np.add.at(per_expert[i], plan.slot_expert[i].ravel(), sim.slot_tokens[i].ravel())
    np.testing.assert_array_equal(per_expert, routed.loads_after)
    # traffic row sums = copies each GPU sends to other GPUs
    src = source_gpus(t, g, source)
    sent_local = np.zeros((layers, g))
    for i in range(layers):
        live = routed.experts[:, i] >= 0
        np.add.at(sent_local[i], np.repeat(src, k)[live.ravel()], 1.0)
    assert np.all(sim.traffic_bytes.sum(axis=2) <= 3.0 * sent_local + 1e-9)
    assert np.all(np.diagonal(sim.traffic_bytes, axis1=1, axis2=2) == 0)
    received = sim.gpu_tokens - (sent_local - sim.traffic_bytes.sum(axis=2) / 3.0)
    np.testing.assert_allclose(sim.traffic_bytes.sum(axis=1) / 3.0, received, atol=1e-9)


def test_bad_inputs():
    plan = static_placement(2, 4, 2)
    with pytest.raises(ValueError, match="loads"):
        simulate(plan, np.ones((3, 4)), token_bytes=1.0)
    with pytest.raises(ValueError, match="loads"):
        simulate(plan, -np.ones((2, 4)), token_bytes=1.0)
    with pytest.raises(ValueError, match="split"):
        simulate(plan, np.ones((2, 4)), token_bytes=1.0, split="random")
    with pytest.raises(ValueError, match="spec/token_bytes"):
        simulate(plan, np.ones((2, 4)))
    with pytest.raises(ValueError, match="gpus_per_node"):
        simulate(plan, np.ones((2, 4)), token_bytes=1.0, split="locality", gpus_per_node=3)
    with pytest.raises(ValueError, match="experts"):
        simulate_tokens(plan, np.zeros((3, 1, 1), dtype=int), token_bytes=1.0)
    with pytest.raises(ValueError, match="routing"):
        simulate(plan, token_trace(np.zeros((3, 2, 1), dtype=int), 5), token_bytes=1.0)


def test_duplication_plan_lowers_expert_time_in_cost_model():
    spec = gqa_model(num_experts=8, num_layers=2)
    cl = cluster(2, 2)  # 4 GPUs on 2 nodes
    wl = Workload("prefill", 16, 2048)  # compute bound: extra replicas' weights are cheap
    tokens = wl.tokens_per_step
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, 9) ** 1.5
    load = np.stack([rng.multinomial(tokens * 2, rng.permutation(p / p.sum())) for _ in range(2)])
    load = load.astype(float)
    static = static_placement(2, 8, 4)
    dup = plan_duplication(load, 4, 4)
    costs = {}
    for name, plan in (("static", static), ("dup", dup)):
        sim = simulate(plan, load, spec=spec)
        costs[name] = batch_cost(spec, cl, wl, StepRouting.of(sim))
    assert np.all(costs["dup"].components["experts"] < 0.7 * costs["static"].components["experts"])
    assert costs["dup"].total_s < costs["static"].total_s
    assert float(costs["dup"].dropped_tokens) == 0.0


def test_capacity_result_feeds_cost_model_with_dropped_tokens():
    spec = gqa_model(num_experts=4, num_layers=2)
    cl = cluster(1, 2)
    wl = Workload("prefill", 1, 64)
    ids = random_ids(64, 2, 4, 2, seed=1, a=2.0)
    from gps.plans import capacity_drop

    dropped = capacity_drop(ids, 1.0, num_experts=4)
    sim = simulate(static_placement(2, 4, 2), dropped, spec=spec)
    cost = batch_cost(spec, cl, wl, StepRouting.of(sim))
    assert float(cost.dropped_tokens) == dropped.dropped.sum() > 0
