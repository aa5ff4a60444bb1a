"""Round-number hardware and models for the cost-model tests (no tests here; no YAML used).

GPU: 1e15 FLOP/s bf16 at 50 % efficiency (5e14 effective), 2e12 B/s HBM at 50 % (1e12
effective), 1 us launch overhead, 80 GB. Intra link 1e11 B/s, 1 us; inter link 1e10 B/s, 10 us.
"""

from __future__ import annotations

from dataclasses import replace

from gps.hardware import Cluster, GPUProfile, LinkProfile
from gps.model import AttentionSpec, MoEModelSpec

PEAK = 5e14  # effective FLOP/s
HBM = 1e12  # effective bytes/s
LAUNCH = 1e-6
INTRA_BW, INTRA_LAT = 1e11, 1e-6
INTER_BW, INTER_LAT = 1e10, 1e-5


def gpu(**kw) -> GPUProfile:
    base = GPUProfile(
        name="TestGPU",
        peak_flops={"bf16": 1e15},
        hbm_bandwidth=2e12,
        hbm_capacity=80e9,
        sm_count=100,
        launch_overhead_s=LAUNCH,
        compute_efficiency=0.5,
        memory_efficiency=0.5,
        source="test: round numbers",
    )
    return replace(base, **kw)


def intra_link(**kw) -> LinkProfile:
    return replace(LinkProfile("TestNVLink", INTRA_BW, INTRA_LAT, source="test"), **kw)


def inter_link(**kw) -> LinkProfile:
    return replace(LinkProfile("TestIB", INTER_BW, INTER_LAT, source="test"), **kw)


def cluster(num_nodes: int = 2, gpus_per_node: int = 2, **gpu_kw) -> Cluster:
    return Cluster(
        name=f"test-{num_nodes}x{gpus_per_node}",
        gpu=gpu(**gpu_kw),
        intra_link=intra_link(),
        inter_link=inter_link() if num_nodes > 1 else None,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
    )


def gqa_model(**kw) -> MoEModelSpec:
    """Small Mixtral-like model: d=1024, 8 heads (2 KV) of 128, 4 experts of f=2048, top-2."""
    base = MoEModelSpec(
        name="TestGQA",
        source="test",
        num_layers=2,
        hidden_size=1024,
        attention=AttentionSpec(kind="gqa", num_heads=8, num_kv_heads=2, head_dim=128),
        num_experts=4,
        top_k=2,
        expert_intermediate_size=2048,
        vocab_size=1000,
        dtype="bf16",
    )
    return replace(base, **kw)


def mla_model(**kw) -> MoEModelSpec:
    """Small DeepSeek-like model: MLA (4 heads, r=256, nope 64, rope 32, v 64), first layer
    dense, 1 shared expert."""
    att = AttentionSpec(
        kind="mla",
        num_heads=4,
        num_kv_heads=4,
        head_dim=0,
        q_lora_rank=None,
        kv_lora_rank=256,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
    )
    base = MoEModelSpec(
        name="TestMLA",
        source="test",
        num_layers=3,
        dense_layers=[0],
        hidden_size=1024,
        attention=att,
        num_experts=8,
        top_k=2,
        num_shared_experts=1,
        expert_intermediate_size=512,
        shared_expert_intermediate_size=512,
        dense_intermediate_size=2048,
        vocab_size=1000,
        dtype="bf16",
    )
    return replace(base, **kw)
