"""What redundant experts cost in HBM, and what the KV cache loses to them.

Each redundant expert is one more expert-weight slot in every MoE layer. vLLM documents the
expert memory per EP rank as (``docs/serving/expert_parallel_deployment.md``, "Memory
Footprint Overhead")

    NUM_MOE_LAYERS * BYTES_PER_EXPERT * (NUM_TOTAL_EXPERTS + NUM_REDUNDANT_EXPERTS) / NUM_EP_RANKS

"approximately 2.4 GB for one redundant expert per EP rank" on DeepSeek-V3 (58 MoE layers,
``3 * 7168 * 2048`` FP8 bytes per expert: 58 * 44.04 MB = 2.55 GB = 2.38 GiB, the hand test in
``tests/test_eplb.py``). The redundant part, ``L_moe * B * R / EP`` bytes per rank, is taken
from the KV cache, whose pool is what remains of the HBM share the engine reserves after
weights and activations; at ``kv_bytes_per_token`` (all layers of one token) that is
``bytes / kv_bytes_per_token`` tokens, i.e. fewer concurrent requests of a given context.

**Validity of ``R``** (:func:`valid_redundant`), as the engines check it:

* both: ``R >= 0`` and ``(E + R) % EP == 0`` (SGLang ``expert_location.py`` asserts
  ``num_physical_experts % ep_size == 0``; vLLM's fused MoE layer asserts
  ``global_num_experts % ep_size == 0`` with EPLB: "EPLB currently only supports even
  distribution of experts across ranks");
* vLLM: ``R > 0`` needs ``--enable-eplb`` (``ParallelConfig``: "num_redundant_experts is set
  ... but EPLB is not enabled"), EPLB needs ``--enable-expert-parallel`` and TP x PCP x DP > 1
  (``vllm/config/parallel.py``); SGLang: ``--enable-eplb`` needs ``ep_size > 1``
  (``server_args.py``); a static placement (``--init-expert-location``) does not need EPLB.

Units: bytes, tokens. ``EP`` = expert-parallel ranks ``G``.
"""

from __future__ import annotations

import math

from gps.cost._common import num_moe_layers
from gps.cost.attention import kv_cache_bytes_per_token
from gps.cost.memory import memory_parts
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.plans.eplb_placement import physical_slots
from gps.plans.plan import expert_weight_bytes
from gps.workload import Workload


def expert_bytes_per_rank(spec: MoEModelSpec, ep: int, num_redundant: int) -> float:
    """vLLM's formula: ``L_moe * B * (E + R) / EP`` bytes of expert weights per rank."""
    slots = physical_slots(spec.num_experts, ep, num_redundant)  # (E + R) / EP, validated
    return num_moe_layers(spec) * expert_weight_bytes(spec) * slots


def redundant_bytes_per_rank(spec: MoEModelSpec, ep: int, num_redundant: int) -> float:
    """HBM the ``R`` redundant experts take on each rank: ``L_moe * B * R / EP`` bytes."""
    physical_slots(spec.num_experts, ep, num_redundant)  # validates R
    return num_moe_layers(spec) * expert_weight_bytes(spec) * num_redundant / ep


def kv_bytes_per_token(spec: MoEModelSpec) -> float:
    """KV-cache bytes one token holds on its GPU over all layers (data-parallel attention)."""
    return spec.num_layers * kv_cache_bytes_per_token(spec)


def kv_tokens_lost(spec: MoEModelSpec, ep: int, num_redundant: int) -> float:
    """KV-cache tokens per rank the redundant experts displace."""
    return redundant_bytes_per_rank(spec, ep, num_redundant) / kv_bytes_per_token(spec)


def kv_capacity_tokens(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    num_redundant: int = 0,
    *,
    memory_fraction: float = 0.9,
) -> float:
    """KV-cache tokens one rank can hold: ``(memory_fraction * HBM - weights - activations)
    / kv_bytes_per_token`` with ``(E + R) / EP`` expert slots (``gps.cost.memory``);
    ``memory_fraction`` is the engine's reserved share (vLLM ``--gpu-memory-utilization``,
    default 0.9; SGLang ``--mem-fraction-static``). Negative when the weights do not fit.

    Raises:
        ValueError: an invalid ``R`` (``gps.plans.physical_slots``) or fraction.
    """
    if not 0.0 < memory_fraction <= 1.0:
        raise ValueError(f"memory_fraction: {memory_fraction} not in (0, 1]")
    ep = cluster.num_gpus
    physical_slots(spec.num_experts, ep, num_redundant)  # validates R
    slots = (spec.num_experts + num_redundant) // ep if spec.num_experts >= ep else 1
    parts = memory_parts(spec, cluster, workload, slots_per_gpu=max(slots, 1))
    fixed = parts["attention_weights"] + parts["other_weights"] + parts["expert_weights"]
    free = memory_fraction * cluster.gpu.hbm_capacity - fixed - parts["activations"]
    return free / kv_bytes_per_token(spec)


def max_concurrency(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    num_redundant: int = 0,
    *,
    memory_fraction: float = 0.9,
) -> int:
    """Requests of ``workload.kv_len`` tokens the whole EP group's KV cache holds
    (``floor(kv_capacity_tokens / kv_len) * EP``; 0 when nothing fits)."""
    tokens = kv_capacity_tokens(
        spec, cluster, workload, num_redundant, memory_fraction=memory_fraction
    )
    return max(math.floor(tokens / workload.kv_len), 0) * cluster.num_gpus


def valid_redundant(num_experts: int, ep: int, max_per_rank: int = 4) -> list[int]:
    """Every ``R`` both engines accept with at most ``max_per_rank`` redundant slots per rank:
    ``R = (-E mod EP) + j * EP`` for ``j = 0, 1, ...``."""
    first = (-num_experts) % ep
    return [first + j * ep for j in range(max_per_rank + 1) if first + j * ep <= max_per_rank * ep]
