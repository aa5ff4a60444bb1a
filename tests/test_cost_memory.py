"""Per-GPU memory footprint, hand-computed, and the overflow error."""

from __future__ import annotations

import pytest
from test_cost_helpers import cluster, gqa_model, mla_model

from gps.cost.memory import MemoryFitError, memory_breakdown, memory_parts
from gps.workload import Workload

DECODE = Workload("decode", batch_size=4, context_len=1000)


def test_gqa_decode_parts_hand_computed():
    parts = memory_parts(gqa_model(), cluster(1, 2), DECODE)
    assert parts == {
        # 2 layers * (1024*1536 + 1024*1024) params * 2 bytes
        "attention_weights": 10_485_760,
        # (embedding + untied LM head 2*1000*1024 + router 2 layers*1024*4) * 2 bytes
        "other_weights": 4_112_384,
        # ceil(4/2) = 2 slots * 2 layers * 3*1024*2048 * 2 bytes
        "expert_weights": 50_331_648,
        # 2 sequences * 1000 tokens * 2 layers * (2 kv heads * 2 * 128 * 2 bytes)
        "kv_cache": 4_096_000,
        # 2*(2*(2*1024 + 1536) + 2*2*(2*1024 + 2*2048)) + 4*2*1000 fp32 logits
        "activations": 71_488,
    }


def test_tp_splits_attention_weights_and_gqa_kv_not_mla_latent():
    dp = memory_parts(gqa_model(), cluster(1, 2), DECODE)
    tp = memory_parts(gqa_model(), cluster(1, 2), Workload("decode", 4, 1, 1000, "tp"))
    assert tp["attention_weights"] == dp["attention_weights"] / 2
    assert tp["kv_cache"] == dp["kv_cache"]  # all 4 sequences, half the kv heads
    mla_dp = memory_parts(mla_model(), cluster(1, 2), DECODE)
    mla_tp = memory_parts(mla_model(), cluster(1, 2), Workload("decode", 4, 1, 1000, "tp"))
    assert mla_tp["kv_cache"] == 2 * mla_dp["kv_cache"]  # latent shared by heads: not split
    # 2 sequences * 1000 tokens * 3 layers * (256 + 32) * 2 bytes
    assert mla_dp["kv_cache"] == 3_456_000


def test_replica_slots_add_expert_weights():
    one = memory_parts(gqa_model(), cluster(1, 2), DECODE, slots_per_gpu=3)
    assert one["expert_weights"] == 3 * 2 * 12_582_912
    with pytest.raises(ValueError, match="slots_per_gpu=0"):
        memory_parts(gqa_model(), cluster(1, 2), DECODE, slots_per_gpu=0)


def test_fits_returns_parts():
    parts = memory_breakdown(gqa_model(), cluster(1, 2), DECODE)
    assert sum(parts.values()) == 69_097_280


def test_overflow_error_says_by_how_much_and_what_dominates():
    small = cluster(1, 2, hbm_capacity=60e6)  # 69,097,280 bytes needed
    with pytest.raises(MemoryFitError) as err:
        memory_breakdown(gqa_model(), small, DECODE)
    msg = str(err.value)
    assert "overflows by 0.0091 GB" in msg
    assert "largest part: expert_weights 0.0503 GB" in msg
    assert "TestGQA" in msg
