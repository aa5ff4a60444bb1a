"""Cost-model properties (hypothesis): monotone, bounded below, symmetric, scale-invariant."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_cost_helpers import cluster, gqa_model

from gps.cost.e2e import batch_cost
from gps.cost.routing import traffic_from_slot_tokens
from gps.cost.step import StepExtras, StepRouting
from gps.workload import Workload

SPEC = gqa_model(num_experts=8)  # 2 MoE layers, E/G = 2 experts per GPU
CL = cluster(2, 2)  # 4 GPUs on 2 nodes
WORKLOADS = st.sampled_from(
    [Workload("decode", 8, 1, 512), Workload("prefill", 4, 64), Workload("decode", 4, 1, 64, "tp")]
)
SLOTS = arrays(np.float64, (2, 4, 2), elements=st.integers(0, 5000).map(float))
TRAFFIC = arrays(np.float64, (2, 4, 4), elements=st.floats(0, 1e8, allow_subnormal=False))
FEW = settings(max_examples=40, deadline=None)


def total(spec, cl, wl, slots, traffic=None, extras=None):
    traffic = traffic_from_slot_tokens(slots, spec) if traffic is None else traffic
    extras = StepExtras() if extras is None else extras
    return float(batch_cost(spec, cl, wl, StepRouting(slots, traffic), extras).total_s)


@FEW
@given(wl=WORKLOADS, slots=SLOTS, extra=SLOTS)
def test_monotone_non_decreasing_in_tokens(wl, slots, extra):
    assert total(SPEC, CL, wl, slots + extra) >= total(SPEC, CL, wl, slots)


@FEW
@given(wl=WORKLOADS, slots=SLOTS, traffic=TRAFFIC)
def test_never_below_balanced_bound(wl, slots, traffic):
    c = batch_cost(SPEC, CL, wl, StepRouting(slots, traffic))
    assert float(c.total_s) >= float(c.balanced_total_s) * (1 - 1e-12)
    assert float(c.imbalance_overhead()) >= -1e-12


@FEW
@given(
    wl=WORKLOADS,
    slots=SLOTS,
    traffic=TRAFFIC,
    swap_nodes=st.booleans(),
    swap_within=st.tuples(st.booleans(), st.booleans()),
)
def test_invariant_to_node_preserving_gpu_permutations(wl, slots, traffic, swap_nodes, swap_within):
    perm = np.arange(4).reshape(2, 2)
    for node, swap in enumerate(swap_within):
        if swap:
            perm[node] = perm[node, ::-1]
    perm = (perm[::-1] if swap_nodes else perm).ravel()
    permuted = traffic[:, perm][:, :, perm]
    assert np.isclose(
        total(SPEC, CL, wl, slots[:, perm], permuted),
        total(SPEC, CL, wl, slots, traffic),
        rtol=1e-12,
    )


@FEW
@given(wl=WORKLOADS, slots=SLOTS, perm=st.permutations(range(4)))
def test_invariant_to_any_gpu_permutation_on_one_node(wl, slots, perm):
    one_node = cluster(1, 4)
    perm = np.array(perm)
    assert np.isclose(
        total(SPEC, one_node, wl, slots[:, perm]), total(SPEC, one_node, wl, slots), rtol=1e-12
    )


@FEW
@given(wl=WORKLOADS, slots=SLOTS, traffic=TRAFFIC)
def test_doubling_all_rates_halves_time_without_fixed_costs(wl, slots, traffic):
    base = cluster(2, 2, launch_overhead_s=0.0)
    base = replace(
        base,
        intra_link=replace(base.intra_link, latency_s=0.0),
        inter_link=replace(base.inter_link, latency_s=0.0),
    )
    fast_gpu = replace(base.gpu, peak_flops={"bf16": 2e15}, hbm_bandwidth=4e12)
    fast = replace(
        base,
        gpu=fast_gpu,
        intra_link=replace(base.intra_link, bandwidth=2 * base.intra_link.bandwidth),
        inter_link=replace(base.inter_link, bandwidth=2 * base.inter_link.bandwidth),
    )
    copies = np.zeros((2, 4))
    copies[:, 1] = 1e7 / base.intra_link.gpu_bandwidth  # replica copies to GPU 1 (no latency)
    t_base = total(SPEC, base, wl, slots, traffic,
                   StepExtras(migration_s={"intra": copies}, window=0.5))  # fmt: skip
    t_fast = total(SPEC, fast, wl, slots, traffic,
                   StepExtras(migration_s={"intra": copies / 2}, window=0.5))  # fmt: skip
    assert np.isclose(t_fast, t_base / 2, rtol=1e-12)
