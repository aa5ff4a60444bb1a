"""Per-GPU HBM footprint of serving one batch step, and the fit check.

Counted: weights, KV cache and a working-set estimate of activations, all in bytes of
``spec.dtype``. Not counted: CUDA context, allocator fragmentation, communication buffers
beyond the dispatch/combine estimate, CUDA graphs; leave headroom for them.
"""

from __future__ import annotations

import math

from gps.cost._common import act_bytes, element_bytes, num_moe_layers
from gps.cost.attention import kv_cache_bytes_per_token
from gps.hardware import Cluster
from gps.model import (
    MoEModelSpec,
    attention_params,
    dense_ffn_params,
    embedding_params,
    expert_params,
    router_params,
    shared_expert_params,
)
from gps.workload import Workload

GB = 1e9


class MemoryFitError(ValueError):
    """The per-GPU footprint exceeds ``gpu.hbm_capacity``; says by how much and what dominates."""


def memory_parts(
    spec: MoEModelSpec, cluster: Cluster, workload: Workload, slots_per_gpu: int | None = None
) -> dict[str, float]:
    """Bytes one GPU holds during the step, by part (no fit check; see ``memory_breakdown``).

    Parts (``a`` element bytes, ``G`` GPUs, ``L`` layers, ``L_moe`` MoE layers):

    ``a`` is the weights' element size, ``a_act`` the activations' (``spec.dtypes``).

    * ``attention_weights``: ``L * attention_params * a``, divided by ``G`` under TP attention.
    * ``other_weights``: replicated on every GPU: embedding ``V*d`` (+ LM head ``V*d`` unless
      tied), dense-layer FFNs ``3*d*f_dense``, shared experts ``n_s*3*d*f_s`` and router ``d*E``
      per MoE layer.
    * ``expert_weights``: ``slots_per_gpu * L_moe * 3*d*f * a``; ``slots_per_gpu`` defaults to
      ``max(ceil(E/G), 1)`` (static placement, no replicas) and counts local experts + replicas.
    * ``kv_cache``: per-GPU sequences (DP: ``ceil(B/G)``; TP: ``B`` with GQA KV heads split
      ``max(H_kv/G, 1)/H_kv``, MLA latent not split) ``* kv_len * L * kv_bytes_per_token``.
    * ``activations`` (estimate, one layer live at a time): ``a_act * (n_att*(2d + q/k/v width) +
      n*k*(2d + 2f) + n*2*max(f_dense, n_s*f_s)) + 4*m*V`` with ``n_att`` attention tokens
      (DP ``ceil(B/G)*s``, TP ``B*s``), ``n = ceil(T/G)`` token-parallel tokens (dispatch and
      combine buffers of ``k`` copies, expert intermediates), ``m = ceil(B/G)`` fp32 logits rows.

    Raises:
        ValueError: ``slots_per_gpu < 1``.
    """
    a, d, v = element_bytes(spec), spec.hidden_size, spec.vocab_size
    g, lm, layers = cluster.num_gpus, num_moe_layers(spec), spec.num_layers
    tp = workload.attention_parallel == "tp"
    att = spec.attention
    if slots_per_gpu is None:
        slots_per_gpu = max(math.ceil(spec.num_experts / g), 1)
    if slots_per_gpu < 1:
        raise ValueError(f"slots_per_gpu={slots_per_gpu}: must be >= 1")

    attn_w = layers * attention_params(spec) * a / (g if tp else 1)
    other_w = a * (
        embedding_params(spec)
        + (layers - lm) * dense_ffn_params(spec)
        + lm * (shared_expert_params(spec) + router_params(spec))
    )
    expert_w = slots_per_gpu * lm * expert_params(spec) * a

    seqs = workload.batch_size if tp else math.ceil(workload.batch_size / g)
    kv_fraction = 1.0
    if tp and att.kind == "gqa":
        kv_fraction = max(att.num_kv_heads / g, 1.0) / att.num_kv_heads
    kv = seqs * workload.kv_len * layers * kv_cache_bytes_per_token(spec) * kv_fraction

    s = workload.tokens_per_sequence
    n_att = seqs * s
    n = math.ceil(workload.tokens_per_step / g)
    m = math.ceil(workload.batch_size / g)
    if att.kind == "gqa":
        qkv = (att.num_heads + 2 * att.num_kv_heads) * att.head_dim
    else:
        qkv = att.num_heads * (att.qk_nope_head_dim + att.qk_rope_head_dim + att.v_head_dim)
        qkv += att.kv_lora_rank + att.qk_rope_head_dim
    f_tok = max(
        spec.dense_intermediate_size,
        spec.num_shared_experts * spec.shared_expert_intermediate_size,
    )
    acts = (
        act_bytes(spec)
        * (
            n_att * (2 * d + qkv / (g if tp else 1))
            + n * spec.top_k * (2 * d + 2 * spec.expert_intermediate_size)
            + n * 2 * f_tok
        )
        + 4 * m * v
    )
    return {
        "attention_weights": float(attn_w),
        "other_weights": float(other_w),
        "expert_weights": float(expert_w),
        "kv_cache": float(kv),
        "activations": float(acts),
    }


def memory_breakdown(
    spec: MoEModelSpec, cluster: Cluster, workload: Workload, slots_per_gpu: int | None = None
) -> dict[str, float]:
    """Per-GPU bytes by part (``memory_parts``), checked against ``gpu.hbm_capacity``.

    Raises:
        MemoryFitError: the parts sum to more than the HBM; the message gives the overflow in
            GB and the largest part with its size.
    """
    parts = memory_parts(spec, cluster, workload, slots_per_gpu)
    total, capacity = sum(parts.values()), cluster.gpu.hbm_capacity
    if total > capacity:
        name, size = max(parts.items(), key=lambda kv: kv[1])
        raise MemoryFitError(
            f"model {spec.name!r} on {cluster.name!r} "
            f"({workload.phase}, batch {workload.batch_size}): "
            f"needs {total / GB:.3g} GB per GPU but {cluster.gpu.name} has "
            f"{capacity / GB:.3g} GB; overflows by {(total - capacity) / GB:.3g} GB; "
            f"largest part: {name} {size / GB:.3g} GB ({size / total:.0%})"
        )
    return parts
