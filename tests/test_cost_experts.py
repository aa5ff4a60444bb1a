"""Routed/shared expert FFN time and the default uniform routing."""

from __future__ import annotations

import numpy as np
import pytest
from test_cost_helpers import HBM, LAUNCH, PEAK, cluster, gpu, gqa_model

from gps.cost.experts import balanced_expert_time, expert_time_per_gpu, swiglu_op
from gps.cost.routing import traffic_from_slot_tokens, uniform_routing, uniform_slot_tokens
from gps.workload import Workload

W = 3 * 1024 * 2048 * 2  # one expert's weights, bytes (d=1024, f=2048, bf16) = 12,582,912
ACT = 2 * (1024 + 2048) * 2  # activation bytes per token = 12,288
FLOP = 6 * 1024 * 2048  # FLOPs per token = 12,582,912


def test_expert_time_hand_computed():
    t = expert_time_per_gpu(np.array([[10.0, 0.0], [0.0, 0.0]]), gqa_model(), gpu())
    # GPU 0: one slot with weights + 10 tokens, memory bound; GPU 1: no tokens, no kernel.
    assert t[0] == pytest.approx((12_582_912 + 122_880) / HBM + LAUNCH, rel=1e-12)
    assert t[1] == 0.0


def test_decode_weight_bound_prefill_compute_bound():
    spec, g = gqa_model(), gpu(launch_overhead_s=0.0)
    decode = np.full((1, 2), 8.0)  # 8 tokens per slot, both slots busy
    t = expert_time_per_gpu(decode, spec, g)[0]
    bytes_ = 2 * W + 16 * ACT
    assert t == pytest.approx(bytes_ / HBM, rel=1e-12)
    assert 2 * W / bytes_ > 0.95  # weights dominate the bytes
    assert 16 * FLOP / PEAK < 0.05 * t  # compute is a few percent of the time
    prefill = np.full((1, 2), 8192.0)
    t = expert_time_per_gpu(prefill, spec, g)[0]
    assert t == pytest.approx(2 * 8192 * FLOP / PEAK, rel=1e-12)
    assert (2 * W + 2 * 8192 * ACT) / HBM < t


def test_expert_gemms_priced_by_reduction_length():
    # k0 = 1024: gate/up reduce over d = 1024 (e = 0.5 * 1/2 = 0.25), down over f = 2048
    # (e = 0.5 * 2/3 = 1/3): compute = 8192*FLOP*(2/3/0.25 + 1/3/(1/3)) / 1e15 per slot
    g = gpu(launch_overhead_s=0.0, gemm_k_knee=1024.0)
    t = expert_time_per_gpu(np.full((1, 2), 8192.0), gqa_model(), g)[0]
    assert t == pytest.approx(2 * 8192 * FLOP * (2 / 3 / 0.25 + 1.0) / 1e15, rel=1e-12)
    op = swiglu_op("dense", 100.0, 2048, gqa_model())
    assert op.gemm_k == ((1024.0, 2 / 3), (2048.0, 1 / 3))


def test_balanced_expert_time():
    spec = gqa_model()  # E = 4
    # 10 tokens on one slot: balanced keeps 1 expert's weights per GPU and 5 tokens each.
    one = balanced_expert_time(np.array([[10.0, 0.0], [0.0, 0.0]]), spec, gpu())
    assert float(one) == pytest.approx((W + 5 * ACT) / HBM + LAUNCH, rel=1e-12)
    # all 4 experts busy on 2 GPUs: E/G = 2 experts' weights per GPU
    four = balanced_expert_time(np.full((2, 2), 5.0), spec, gpu())
    assert float(four) == pytest.approx((2 * W + 10 * ACT) / HBM + LAUNCH, rel=1e-12)
    assert float(balanced_expert_time(np.zeros((2, 2)), spec, gpu())) == 0.0


def test_swiglu_op_zero_width_is_free():
    op = swiglu_op("shared", 100.0, 0, gqa_model())
    assert (float(op.flops), float(op.bytes)) == (0.0, 0.0)
    op = swiglu_op("dense", 100.0, 2048, gqa_model())
    assert (float(op.flops), float(op.bytes)) == (100 * FLOP, W + 100 * ACT)


def test_uniform_slot_tokens_layouts():
    wl = Workload("prefill", 2, 8)  # 16 tokens, top-2 -> 32 copies
    s = uniform_slot_tokens(gqa_model(), cluster(1, 2), wl)  # E=4, G=2
    assert s.shape == (2, 2, 2) and np.all(s == 8.0)
    s = uniform_slot_tokens(gqa_model(num_experts=8), cluster(1, 3), wl)  # R = 3, last empty
    np.testing.assert_array_equal(s[0], [[4, 4, 4], [4, 4, 4], [4, 4, 0]])
    s = uniform_slot_tokens(gqa_model(num_experts=3), cluster(1, 4), wl)  # replicas 2, 1, 1
    np.testing.assert_allclose(s[0, :, 0], [32 / 3 / 2, 32 / 3 / 2, 32 / 3, 32 / 3])
    assert s.sum() == pytest.approx(2 * 32)


def test_traffic_from_slot_tokens():
    t = traffic_from_slot_tokens(np.array([[10.0, 0.0], [6.0, 0.0]]), gqa_model())
    # each source sends n_j / G copies of 1024 * 2 bytes; the diagonal stays local
    np.testing.assert_allclose(t, [[0.0, 6 / 2 * 2048], [10 / 2 * 2048, 0.0]])
    slots, traffic = uniform_routing(gqa_model(), cluster(2, 2), Workload("decode", 4))
    assert slots.shape == (2, 4, 1) and traffic.shape == (2, 4, 4)
    assert np.all(np.diagonal(traffic, axis1=-2, axis2=-1) == 0)


def test_bad_model_for_uniform_routing():
    with pytest.raises(ValueError, match="num_experts=0"):
        uniform_slot_tokens(gqa_model(num_experts=0), cluster(1, 2), Workload())


@pytest.mark.parametrize(("g", "r"), [(4, 2), (32, 8)])  # G*R <= 128: BLAS path; else einsum
def test_expert_time_matches_per_gpu_formula(g, r):
    rng = np.random.default_rng(g)
    slots = rng.integers(0, 3, size=(5, g, r)).astype(float) * rng.uniform(0, 100, size=(5, g, r))
    t = expert_time_per_gpu(slots, gqa_model(), gpu())
    tokens, busy = slots.sum(-1), np.count_nonzero(slots, axis=-1)
    expected = np.maximum(tokens * FLOP / PEAK, (busy * W + tokens * ACT) / HBM)
    np.testing.assert_allclose(t, expected + np.where(tokens > 0, LAUNCH, 0.0), rtol=1e-12)
