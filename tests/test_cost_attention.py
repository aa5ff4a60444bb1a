"""Attention FLOPs/bytes per GPU, hand-computed for GQA prefill/decode and MLA decode/prefill."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_cost_helpers import INTRA_LAT, LAUNCH, cluster, gpu, gqa_model, mla_model

from gps.cost.attention import attention_ops, attention_time, kv_cache_bytes_per_token
from gps.cost.roofline import op_time, ops_time
from gps.workload import Workload


def work(ops):
    return {op.name: (op.flops, op.bytes) for op in ops}


def test_gqa_prefill_dp_hand_computed():
    # 2 GPUs, 4 sequences of 100 tokens -> 2 sequences / GPU, T = 200 tokens,
    # causal pairs = 2 * 100^2 / 2 = 10,000; d=1024, 8 q heads, 2 kv heads, head_dim 128.
    ops = attention_ops(gqa_model(), Workload("prefill", 4, 100), 2)
    w = work(ops)
    # qkv: 2*200*1024*(8+4)*128; bytes 2*(1024*1536 + 200*1024 + 200*1536)
    assert w["qkv_proj"] == (629_145_600, 4_169_728)
    # core: 4*10000*8*128; bytes 2*(2*200*8*128 + 200*2*2*128)
    assert w["attn_core"] == (40_960_000, 1_024_000)
    # o: 2*200*1024*1024; bytes 2*(1024*1024 + 200*1024 + 200*1024)
    assert w["o_proj"] == (419_430_400, 2_916_352)
    # All three are memory bound at 1e12 B/s: (4169728 + 1024000 + 2916352) / 1e12 + 3 launches.
    t = attention_time(gqa_model(), cluster(1, 2), Workload("prefill", 4, 100))
    assert t == pytest.approx(8.11008e-6 + 3 * LAUNCH, rel=1e-12)


def test_gqa_decode_kv_read_dominates():
    # 4 sequences over 2 GPUs, context 1000 -> 2 new tokens / GPU, 2000 query-key pairs.
    w = work(attention_ops(gqa_model(), Workload("decode", 4, 1, 1000), 2))
    assert w["qkv_proj"] == (6_291_456, 3_155_968)  # 2*2*1024*1536; 2*(1024*1536+2*1024+2*1536)
    assert w["o_proj"] == (4_194_304, 2_105_344)  # 2*2*1024*1024; 2*(1024^2 + 2*1024 + 2*1024)
    # core: 4*2000*8*128 FLOPs; bytes 2*(2*2*8*128 [Q, O] + 2000*2*2*128 [K, V cache])
    assert w["attn_core"] == (8_192_000, 2_056_192)
    kv_read = 2000 * kv_cache_bytes_per_token(gqa_model())
    assert kv_read == 2_048_000
    assert kv_read / w["attn_core"][1] > 0.99


def test_mla_decode_absorbed_hand_computed():
    # 1 sequence / GPU, context 1000; 4 heads, r=256, nope 64, rope 32, v 64, d=1024, no q rank.
    ops = attention_ops(mla_model(), Workload("decode", 2, 1, 1000), 2)
    assert [op.name for op in ops] == [
        "q_proj", "kv_down", "q_absorb_uk", "attn_core", "uv", "o_proj"
    ]  # fmt: skip
    w = work(ops)
    assert w["q_proj"] == (786_432, 789_248)  # 1024 -> 4*96: 2*1024*384; 2*(1024*384+1024+384)
    assert w["kv_down"] == (589_824, 592_448)  # 1024 -> 288
    # per-head absorption 64 -> 256 for 4 heads: 2*4*64*256; 2*4*(64*256 + 64 + 256)
    assert w["q_absorb_uk"] == (131_072, 133_632)
    # core on the latent: 2*1000*4*(256+32) + 2*1000*4*256 FLOPs;
    # bytes 2*(4*288 [q] + 1000*288 [latent cache, read once for all heads] + 4*256 [out])
    assert w["attn_core"] == (4_352_000, 580_352)
    assert w["uv"] == (131_072, 133_632)  # per head 256 -> 64
    assert w["o_proj"] == (524_288, 526_848)  # 256 -> 1024
    assert kv_cache_bytes_per_token(mla_model()) == 576  # (256 + 32) * 2 bytes


def test_mla_prefill_plain_form_and_q_compression():
    spec = mla_model(attention=replace(mla_model().attention, q_lora_rank=128))
    ops = attention_ops(spec, Workload("prefill", 2, 10), 2)  # 1 sequence of 10 tokens / GPU
    w = work(ops)
    assert "kv_up" in w and "q_absorb_uk" not in w
    # causal pairs 10^2/2 = 50: 2*50*4*(64+32) + 2*50*4*64
    assert w["attn_core"][0] == 64_000
    # q: 2*10*1024*128 (down, K = d = 1024) + 2*10*128*384 (up, K = q_lora_rank = 128)
    assert (w["q_down"][0], w["q_up"][0]) == (2_621_440, 983_040)
    k = {op.name: op.gemm_k for op in ops}
    assert k["q_down"] == ((1024.0, 1.0),) and k["q_up"] == ((128.0, 1.0),)
    assert k["kv_up"] == ((256.0, 1.0),) and k["attn_core"] == ()  # kv_lora_rank 256


def test_attention_core_runs_at_the_attention_efficiency():
    # test GPU: compute efficiency 0.5; flash-attention core at 0.25 -> 1e12 FLOPs in 4 ms
    g = gpu(attention_efficiency=0.25)
    assert float(op_time(1e12, 1.0, g, attention=True)) == pytest.approx(4e-3 + LAUNCH)
    assert float(op_time(1e12, 1.0, gpu(), attention=True)) == pytest.approx(2e-3 + LAUNCH)
    ops = attention_ops(gqa_model(), Workload("prefill", 2, 10), 2)
    assert [op.name for op in ops if op.attention] == ["attn_core"]


def test_small_k_gemm_runs_below_the_large_gemm_efficiency():
    # test GPU: c = 0.5, k0 = 256 -> kv_up (K = 256) at 0.25; a K = 1e6 GEMM at ~0.5
    g = gpu(gemm_k_knee=256.0)
    flops = 1e12  # 1e12 / (1e15 * 0.25) = 4 ms; bytes small
    assert float(op_time(flops, 1.0, g, gemm_k=((256.0, 1.0),))) == pytest.approx(4e-3 + LAUNCH)
    assert float(op_time(flops, 1.0, g)) == pytest.approx(2e-3 + LAUNCH)  # not a GEMM
    # a SwiGLU split 2/3 at K = 256, 1/3 at K = 768 (e = 0.375): 1e12*(2/3/0.25 + 1/3/0.375)/1e15
    both = ((256.0, 2 / 3), (768.0, 1 / 3))
    assert float(op_time(flops, 1.0, g, gemm_k=both)) == pytest.approx(
        (2 / 3 / 0.25 + 1 / 3 / 0.375) * 1e-3 + LAUNCH
    )


def test_tp_splits_heads_and_adds_allreduce():
    spec, wl = gqa_model(), Workload("prefill", 4, 100, attention_parallel="tp")
    ops = attention_ops(spec, wl, 2)
    # every GPU: all 400 tokens, 4 q heads, max(2/2, 1) = 1 kv head -> 2*400*1024*(4+2)*128
    assert work(ops)["qkv_proj"][0] == 629_145_600
    cl = cluster(1, 2)
    extra = attention_time(spec, cl, wl) - float(ops_time(ops, cl.gpu))
    # ring all-reduce of 400*1024*2 bytes over 2 GPUs: 2*1*1us + 2*(1/2)*819200/1e11
    assert extra == pytest.approx(2 * INTRA_LAT + 8.192e-6, rel=1e-9)


def test_unknown_attention_kind():
    spec = gqa_model(attention=replace(gqa_model().attention, kind="linear"))
    with pytest.raises(ValueError, match=r"attention\.kind='linear'"):
        attention_ops(spec, Workload(), 2)
