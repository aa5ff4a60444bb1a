"""DeepEP-style all-to-all, per-direction dtypes, two-batch overlap, roofline knee, busy experts."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_cost_helpers import (
    INTER_BW,
    INTER_LAT,
    INTRA_BW,
    INTRA_LAT,
    cluster,
    gpu,
    gqa_model,
    mla_model,
)

from gps.cost.attention import (
    PrefillChunk,
    attention_ops,
    attention_time,
    kv_cache_bytes_per_token,
)
from gps.cost.comm import (
    DEEPEP_LL_FIXED_S,
    dedup_factors,
    expected_distinct_bins,
    hierarchical_dispatch_bytes,
    moe_alltoall_times,
)
from gps.cost.e2e import batch_cost, micro_batches, two_batch_schedule
from gps.cost.roofline import op_time
from gps.cost.routing import traffic_from_slot_tokens, uniform_slot_tokens
from gps.cost.step import StepExtras, StepRouting
from gps.model import ModelSpecError, TensorDtypes, load_model_spec, spec_from_dict
from gps.workload import Workload, WorkloadError

MB = 1e6
# GPUs 0,1 on node 0, 2,3 on node 1 (the hand example of docs/cost_model.md)
TRAFFIC = np.array([[5, 10, 20, 0], [30, 0, 0, 40], [0, 0, 0, 10], [0, 0, 50, 0]]) * MB


def test_token_with_k_experts_on_one_remote_node_crosses_ib_once() -> None:
    cl = cluster(2, 4)  # 8 GPUs, 2 nodes of 4; expert e on GPU e
    # token on GPU 1 (node 0, local rank 1) routed to experts 4, 6, 7 (all on node 1)
    got = hierarchical_dispatch_bytes(np.array([[4, 6, 7]]), np.array([1]), np.arange(8), cl, 100.0)
    ib_send, ib_recv = got["ib_send"], got["ib_recv"]
    assert ib_send[1] == 100.0 and ib_send.sum() == 100.0  # once, not three times
    assert ib_recv[5] == 100.0 and ib_recv.sum() == 100.0  # to local rank 1 of node 1 (GPU 5)
    # GPU 5 fans it out over NVLink to GPUs 4, 6, 7
    assert got["nvlink_send"][5] == 300.0 and got["nvlink_send"].sum() == 300.0
    np.testing.assert_array_equal(got["nvlink_recv"], [0, 0, 0, 0, 100, 0, 100, 100])


def test_hierarchical_bytes_local_and_forwarder_targets() -> None:
    cl = cluster(2, 2)
    # token on GPU 0: experts on GPU 0 (itself), GPU 1 (own node), GPU 2 (the forwarder: local
    # rank 0 of node 1) -> one NVLink send inside node 0, one IB transfer, no fan-out
    got = hierarchical_dispatch_bytes(np.array([[0, 1, 2]]), np.array([0]), np.arange(4), cl, 1.0)
    np.testing.assert_array_equal(got["ib_send"], [1, 0, 0, 0])
    np.testing.assert_array_equal(got["ib_recv"], [0, 0, 1, 0])
    np.testing.assert_array_equal(got["nvlink_send"], [1, 0, 0, 0])
    np.testing.assert_array_equal(got["nvlink_recv"], [0, 1, 0, 0])


def test_expected_distinct_bins_by_enumeration() -> None:
    for e, k, bins in ((4, 2, 2), (8, 3, 4), (12, 4, 3)):
        b = e // bins
        combos = list(itertools.combinations(range(e), k))
        exact = np.mean([len({x // b for x in c}) for c in combos])
        assert expected_distinct_bins(e, k, bins) == pytest.approx(exact)
    assert expected_distinct_bins(4, 2, 2) == pytest.approx(5 / 3)  # 2 * (1 - 2/4 * 1/3)
    assert expected_distinct_bins(8, 2, 16) == 2.0  # replicas: every expert its own bin


def _enumerated_dedup(e: int, k: int, groups: int, topk_groups: int, gpus: int,
                      nodes: int) -> tuple[float, float]:  # fmt: skip
    """Distinct GPUs and nodes per token copy, by enumerating the routing itself: every choice
    of ``topk_groups`` of the ``groups`` expert groups, then every ``k`` of their experts, all
    equally likely (uniform routing); experts placed contiguously (expert ``x`` on GPU
    ``x // (E/G)``, GPU ``g`` on node ``g // (G/nodes)``)."""
    size, per_gpu, gpn = e // groups, e // gpus, gpus // nodes
    n_gpu = n_node = count = 0
    for chosen in itertools.combinations(range(groups), topk_groups):
        allowed = [x for g in chosen for x in range(g * size, (g + 1) * size)]
        for experts in itertools.combinations(allowed, k):
            on_gpu = {x // per_gpu for x in experts}
            n_gpu += len(on_gpu)
            n_node += len({g // gpn for g in on_gpu})
            count += 1
    return n_gpu / count / k, n_node / count / k


def test_dedup_factors_group_limited() -> None:
    """Against the routing enumerated token by token, not the formula they are computed by."""
    spec = gqa_model(num_experts=16, top_k=4, num_groups=4, topk_groups=2)
    # 4 nodes = 4 groups, a token reaches 2 of them: 8 candidate experts on 2 nodes (4 GPUs)
    want_gpu, want_node = _enumerated_dedup(16, 4, groups=4, topk_groups=2, gpus=8, nodes=4)
    assert dedup_factors(spec, cluster(4, 2)) == pytest.approx((want_gpu, want_node))
    # 2 nodes of 2 groups each: the limit is ignored at node level: the unconstrained routing,
    # an upper bound on the group-limited one
    free = _enumerated_dedup(16, 4, groups=1, topk_groups=1, gpus=8, nodes=2)[1]
    limited = _enumerated_dedup(16, 4, groups=4, topk_groups=2, gpus=8, nodes=2)[1]
    node_factor = dedup_factors(spec, cluster(2, 4))[1]
    assert node_factor == pytest.approx(free) and node_factor >= limited


def test_deepep_normal_hand_computed() -> None:
    cl = cluster(2, 2)
    t = TRAFFIC[None]
    d, c, _, _ = moe_alltoall_times(t, cl, mode="deepep", scales=(1.0, 2.0), dedup=(1.0, 0.5))
    # inter send/recv per GPU (MB): send [20, 40, 0, 0], recv [0, 0, 20, 40]; x0.5 -> peak 20 MB
    # intra: send [10, 30, 10, 50] recv [30, 10, 50, 10] + forwarded recv_inter * 1/2
    #   = [0, 0, 10, 20] -> send [10, 30, 20, 70], recv [30, 10, 60, 30] -> peak 70 MB
    inter = INTER_LAT + 20 * MB / INTER_BW
    intra = INTRA_LAT + 70 * MB / INTRA_BW
    assert d[0] == pytest.approx(max(inter, intra))
    assert c[0] == pytest.approx(
        max(INTER_LAT + 40 * MB / INTER_BW, INTRA_LAT + 140 * MB / INTRA_BW)
    )


def test_flat_mode_is_the_old_alltoall_and_combine_scales_with_its_dtype() -> None:
    cl = cluster(2, 2)
    d, c, db, _ = moe_alltoall_times(TRAFFIC[None], cl, mode="flat", scales=(1.0, 2.0))
    assert d[0] == pytest.approx(4.01e-3)  # docs hand example
    assert db[0] == pytest.approx(1.51e-3)
    assert c[0] == pytest.approx(INTER_LAT + 80 * MB / INTER_BW)  # bf16 combine of fp8 copies


def test_low_latency_fixed_cost_replaces_link_latency() -> None:
    cl = cluster(2, 2)
    d, *_ = moe_alltoall_times(TRAFFIC[None], cl, mode="deepep_low_latency")
    assert d[0] == pytest.approx(DEEPEP_LL_FIXED_S + max(40 * MB / INTER_BW, 50 * MB / INTRA_BW))
    zero, *_ = moe_alltoall_times(np.zeros((1, 4, 4)), cl, mode="deepep_low_latency")
    assert zero[0] == 0.0


def test_batch_cost_combine_dtype() -> None:
    spec = gqa_model(dtype="fp8", dtypes=TensorDtypes(combine="bf16"))
    cl = cluster(1, 2, peak_flops={"bf16": 1e15, "fp8": 2e15})
    wl = Workload("prefill", 2, 512, alltoall="flat")
    c = batch_cost(spec, cl, wl)
    d, cb = c.components["dispatch"][0], c.components["combine"][0]
    # latency + x/bw vs latency + 2x/bw
    assert cb - INTRA_LAT == pytest.approx(2 * (d - INTRA_LAT))


def test_two_batch_schedule_hand_computed() -> None:
    one = np.ones(1)
    assert two_batch_schedule(one, one, one, one)[0][0] == pytest.approx(5.0)  # sequential: 8
    # communication-bound: D = C = 3, A = B = 1:
    # a0=1 a1=2 d0=4 d1=7 b0=5 b1=8 f0=max(7,5)+3=10 f1=max(10,8)+3=13
    assert two_batch_schedule(one, 3 * one, one, 3 * one)[0][0] == pytest.approx(13.0)


def test_two_batch_schedule_with_sm_partitioning_hand_computed() -> None:
    # compute-bound A = B = 3, D = C = 1, the all-to-all holds half the SMs (rate 0.5):
    # a0 = 3; D0 3..4; A1 from 3: 1 s at half speed (0.5 done), 2.5 left -> 6.5; D1 6.5..7.5;
    # B0 from 6.5: 0.5 done by 7.5, 2.5 left -> 10; C0 10..11; B1 from 10 -> 13.5; C1 13.5..14.5
    one = np.ones(1)
    assert two_batch_schedule(3 * one, one, 3 * one, one)[0][0] == pytest.approx(13.0)  # full SMs
    t = two_batch_schedule(3 * one, one, 3 * one, one, compute_rate=0.5)[0][0]
    assert t == pytest.approx(14.5)
    # communication-bound A = B = 1, D = C = 3: compute finishes inside each all-to-all
    # (1 s of work at half speed = 2 s < 3 s), so the step stays at 13
    assert two_batch_schedule(one, 3 * one, one, 3 * one, compute_rate=0.5)[0][0] == pytest.approx(
        13
    )


def test_odd_batches_split_exactly() -> None:
    assert [h.batch_size for h in micro_batches(Workload("decode", 3, 1, 64))] == [1, 2]
    assert [h.seq_len for h in micro_batches(Workload("prefill", 1, 5))] == [2, 3]
    assert micro_batches(Workload("decode", 1, 1, 64)) is None
    # the step of B = 3 is the overlap of a 1-sequence and a 2-sequence micro-batch
    spec, cl = gqa_model(num_experts=8), cluster(1, 2)
    wl = Workload("prefill", 3, 64, alltoall="flat", overlap="two_batch")
    whole = batch_cost(spec, cl, wl)
    slots = whole.components  # the full batch's stages; the halves from their own routing
    routing = uniform_slot_tokens(spec, cl, replace(wl, overlap="none"))

    def stages(b: int) -> tuple[np.ndarray, ...]:
        c = batch_cost(spec, cl, replace(wl, batch_size=b, overlap="none"),
                       StepRouting(routing * b / 3)).components  # fmt: skip
        return c["attention"] + c["gate"], c["dispatch"], c["experts"] + c["shared"], c["combine"]

    expected = two_batch_schedule(*stages(1), second=stages(2))[0]
    np.testing.assert_allclose(whole.per_layer_s, expected, rtol=1e-12)
    assert slots["experts"].shape == expected.shape
    # ceil for both halves (the old split) prices 4 sequences' worth: strictly more
    assert float(whole.per_layer_s.sum()) < float(two_batch_schedule(*stages(2))[0].sum())


def test_two_batch_schedule_port_time_by_hand() -> None:
    """A = B = 1, D = C = 0.5, two layers. Layer 0: A0 0-1, D0 1-1.5 beside A1 1-2 (0.5 s of
    port time in attention), D1 2-2.5, B0 2-3, C0 3-3.5, B1 3-4, C1 4-4.5. Layer 1: A0 4-5
    beside layer 0's C1 (0.5 s), D0 5-5.5 beside A1 5-6 (0.5 s): 1 s."""
    one = np.ones(2)
    path, busy = two_batch_schedule(one, 0.5 * one, one, 0.5 * one)
    np.testing.assert_allclose(path, [4.5, 4.0])
    np.testing.assert_allclose(busy, [0.5, 1.0])


def test_two_batch_copies_share_the_ports_with_the_micro_batches() -> None:
    """Under two-batch overlap the micro-batches' all-to-alls cross NVLink during the attention
    stages, so replica copies worth the whole attention expose exactly that port time
    (``two_batch_schedule``'s second output); without overlap they expose nothing. A strategy
    with copies never gains from the overlap relative to the same step without copies."""
    spec, cl = gqa_model(num_experts=8), cluster(1, 4)
    wl = Workload("prefill", 4, 256, alltoall="flat", overlap="two_batch")
    serial = replace(wl, overlap="none")
    routing = uniform_slot_tokens(spec, cl, serial)
    half = batch_cost(spec, cl, replace(serial, batch_size=2), StepRouting(routing / 2))
    c = half.components
    stages = (c["attention"] + c["gate"], c["dispatch"], c["experts"] + c["shared"], c["combine"])
    path, taken = two_batch_schedule(*stages)
    assert np.all(taken > 0)
    attn = batch_cost(spec, cl, serial).components["attention"]  # [L]
    base = {ov: batch_cost(spec, cl, w) for ov, w in (("tbo", wl), ("serial", serial))}
    np.testing.assert_allclose(base["tbo"].per_layer_s, path, rtol=1e-12)  # no copies: as before
    for scale in (0.25, 0.5, 1.0, 1.5):
        copies = {"intra": np.repeat((scale * attn)[:, None], 4, axis=1)}  # [L, G]
        got = {ov: batch_cost(spec, cl, w, extras=StepExtras(migration_s=copies))
               for ov, w in (("tbo", wl), ("serial", serial))}  # fmt: skip
        want = np.maximum(scale * attn - (attn - taken), 0.0)
        np.testing.assert_allclose(got["tbo"].components["migration"], want, rtol=1e-12)
        np.testing.assert_allclose(got["tbo"].per_layer_s, path + want, rtol=1e-12)
        np.testing.assert_allclose(got["serial"].components["migration"],
                                   np.maximum(scale * attn - attn, 0.0))  # fmt: skip
        delta = {ov: float(got[ov].total_s - base[ov].total_s) for ov in got}
        assert delta["tbo"] >= delta["serial"] - 1e-15
    assert float(got["tbo"].components["migration"].sum()) > 0.0  # copies of 1.0x attention


def test_one_prompt_split_attends_to_its_first_half() -> None:
    """Two-batch overlap of one prompt: the second half's queries attend to the first half too.
    S = 64, one GPU, 8 query heads (2 KV) of 128: the whole prompt has 64^2/2 = 2048 pairs per
    head; the first half 32^2/2 = 512, the second 32 x 32 + 512 = 1536 (they add up), and the
    second half reads the K/V of all 64 tokens."""
    halves = micro_batches(Workload("prefill", 1, 5))
    assert isinstance(halves[1], PrefillChunk)
    assert (halves[0].seq_len, halves[1].seq_len, halves[1].prefix_len) == (2, 3, 2)
    spec = gqa_model()
    whole, (first, second) = Workload("prefill", 1, 64), micro_batches(Workload("prefill", 1, 64))

    def core(w: Workload, model=spec):
        return next(op for op in attention_ops(model, w, 1) if op.name == "attn_core")

    assert core(whole).flops == 4 * 2048 * 8 * 128
    assert core(first).flops == 4 * 512 * 8 * 128
    assert core(second).flops == 4 * 1536 * 8 * 128
    # read Q and write O of 32 tokens (bf16), read K and V of 64 tokens for 2 KV heads
    assert core(second).bytes == 2 * 2 * 32 * 8 * 128 + 2 * 64 * 2 * 2 * 128
    mla = mla_model()
    assert core(first, mla).flops + core(second, mla).flops == core(whole, mla).flops
    # the step of one 512-token prompt: the overlap of the halves as priced on their own
    cl = cluster(1, 2)
    wl = Workload("prefill", 1, 512, alltoall="flat", overlap="two_batch")
    routing = uniform_slot_tokens(spec, cl, replace(wl, overlap="none"))
    a, b = micro_batches(wl)

    def stages(w: Workload) -> tuple[np.ndarray, ...]:
        c = batch_cost(spec, cl, replace(w, overlap="none"), StepRouting(routing / 2)).components
        return c["attention"] + c["gate"], c["dispatch"], c["experts"] + c["shared"], c["combine"]

    want = two_batch_schedule(*stages(a), second=stages(b))[0]
    np.testing.assert_allclose(batch_cost(spec, cl, wl).per_layer_s, want, rtol=1e-12)
    # the second half attends over twice the keys; together the halves cost the whole prompt
    assert attention_time(spec, cl, b) > attention_time(spec, cl, a)
    halves_s = attention_time(spec, cl, a) + attention_time(spec, cl, b)
    assert halves_s >= attention_time(spec, cl, replace(wl, overlap="none"))
    with pytest.raises(WorkloadError, match="prefix_len"):
        PrefillChunk(prefix_len=-1)


STAGES = arrays(np.float64, (8, 3), elements=st.floats(0, 1e-2, allow_subnormal=False))


@settings(max_examples=80, deadline=None)
@given(stages=STAGES, rate=st.floats(0.05, 1.0))
def test_two_batch_overlap_between_longest_stage_and_sum(stages, rate):
    first, second = tuple(stages[:4]), tuple(stages[4:])
    total = two_batch_schedule(*first, second=second, compute_rate=rate)[0].sum()
    assert total <= stages.sum() * (1 + 1e-9) + 1e-15  # both micro-batches, serially
    assert total >= stages.max() * (1 - 1e-12)
    # fewer SMs for compute never make the step faster
    assert total >= two_batch_schedule(*first, second=second)[0].sum() * (1 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(stages=STAGES, rate=st.floats(0.05, 1.0))
def test_two_batch_port_time_in_attention_is_real_communication(stages, rate):
    """The port time the schedule reports inside a layer's attention stages (the budget it
    takes from replica copies and prefetch) is communication that exists: at most the first
    micro-batch's dispatch plus the previous layer's last combine, and at most the two
    attention stages' span (each at most ``A / rate``)."""
    a0, d0, _, _, a1, _, _, c1 = stages
    _, taken = two_batch_schedule(*stages[:4], second=tuple(stages[4:]), compute_rate=rate)
    before = np.concatenate([[0.0], c1[:-1]])  # the previous layer's C1
    eps = 1e-12 * stages.sum() + 1e-18
    assert np.all(taken >= 0.0)
    assert np.all(taken <= d0 + before + eps)
    assert np.all(taken <= (a0 + a1) / rate + eps)


ONE_BATCH = arrays(np.float64, (4, 3), elements=st.floats(0, 1e-2, allow_subnormal=False))


@settings(max_examples=60, deadline=None)
@given(stages=ONE_BATCH)
def test_two_batch_overlap_between_its_two_streams_and_the_serial_sum(stages):
    """Both micro-batches run: the compute stream carries A and B of both, the communication
    stream D and C of both, and each micro-batch runs its stages in order, so the step is at
    least ``max(2 sum(A + B), 2 sum(D + C), sum(A + D + B + C))``; at most everything serially.
    (A path that dropped a micro-batch could sit at ``sum(A + D + B + C)`` and pass the old
    bound, its longest single stage.)"""
    a, d, b, c = stages
    total = two_batch_schedule(a, d, b, c)[0].sum()
    assert total <= 2 * stages.sum() * (1 + 1e-12) + 1e-18  # both micro-batches, serially
    lower = max(2 * (a + b).sum(), 2 * (d + c).sum(), (a + d + b + c).sum())
    assert total >= lower * (1 - 1e-12) - 1e-18


def test_two_batch_bound_catches_a_dropped_micro_batch() -> None:
    # compute-bound layer: A = B = 1, D = C = 0.1; one micro-batch alone takes 2.2, the
    # compute stream alone needs 2 (A + B) = 4 for two: a path running one falls below it
    one = np.ones(1)
    single = (one + 0.1 * one + one + 0.1 * one).sum()
    assert single < 2 * (one + one).sum()
    assert two_batch_schedule(one, 0.1 * one, one, 0.1 * one)[0].sum() >= 4.0


def test_batch_cost_two_batch_overlap_bounds() -> None:
    spec, cl = gqa_model(num_experts=8), cluster(2, 2)
    for wl in (Workload("prefill", 4, 256), Workload("decode", 64, 1, 512)):
        seq = batch_cost(spec, cl, wl)
        tbo = batch_cost(spec, cl, replace(wl, overlap="two_batch"))
        half = batch_cost(spec, cl, replace(wl, batch_size=wl.batch_size // 2))
        assert float(tbo.total_s) <= 2 * float(half.total_s) - float(half.non_moe_s) + 1e-15
        assert float(tbo.total_s) >= float(half.total_s) - float(half.non_moe_s)
        assert float(tbo.balanced_total_s) <= float(tbo.total_s) + 1e-15
        assert np.all(tbo.components["dispatch"] == seq.components["dispatch"])


def test_roofline_knee_in_op_time() -> None:
    g = gpu(roofline_knee=2.0, launch_overhead_s=0.0)
    # 5e11 FLOPs at 5e14 = 1 ms; 1e9 B at 1e12 = 1 ms -> sqrt(2) ms
    assert float(op_time(5e11, 1e9, g)) == pytest.approx(np.sqrt(2) * 1e-3)
    assert float(op_time(5e11, 0.0, g)) == pytest.approx(1e-3)


def test_small_decode_batches_touch_few_experts() -> None:
    spec = gqa_model(num_experts=64, top_k=2)
    cl = cluster(1, 4)  # 16 experts per GPU
    slots = uniform_slot_tokens(spec, cl, Workload("decode", 4, 1, 64))[0]
    # busy per GPU = 16 * (1 - (1 - 2/64)**4) = 1.88 -> 2 slots, 4*2/4 = 2 copies per GPU
    np.testing.assert_array_equal((slots > 0).sum(axis=1), [2, 2, 2, 2])
    np.testing.assert_allclose(slots.sum(axis=1), 2.0)
    big = uniform_slot_tokens(spec, cl, Workload("prefill", 4, 512))[0]
    assert (big > 0).all()
    np.testing.assert_allclose(traffic_from_slot_tokens(slots, spec).sum(), 2 * 3 / 4 * 4 * 2048)


def test_deepseek_v3_dtypes_and_fp8_kv_option() -> None:
    spec = load_model_spec("deepseek_v3")
    assert spec.dtypes == TensorDtypes("fp8", "bf16", "bf16", "bf16", "fp8", "bf16")
    assert kv_cache_bytes_per_token(spec) == (512 + 64) * 2
    fp8_kv = replace(spec, dtypes=replace(spec.dtypes, kv_cache="fp8"))
    assert kv_cache_bytes_per_token(fp8_kv) == 512 + 64


def test_bad_dtypes_and_modes_name_the_field() -> None:
    base = {"name": "m", "source": "s", "num_layers": 2, "hidden_size": 8, "num_experts": 4,
            "top_k": 2, "expert_intermediate_size": 8, "vocab_size": 10}  # fmt: skip
    with pytest.raises(ModelSpecError, match=r"dtypes\.kv_cache"):
        spec_from_dict({**base, "dtypes": {"kv_cache": "int4"}})
    with pytest.raises(ModelSpecError, match=r"dtypes\.bogus"):
        spec_from_dict({**base, "dtypes": {"bogus": "fp8"}})
    with pytest.raises(ModelSpecError, match="num_groups"):
        spec_from_dict({**base, "num_groups": 3})
    with pytest.raises(WorkloadError, match=r"workload\.alltoall"):
        Workload(alltoall="nccl")
    with pytest.raises(WorkloadError, match=r"workload\.overlap"):
        Workload(overlap="three")
