"""Small helpers shared by the cost modules: element sizes and per-GPU shares."""

from __future__ import annotations

from gps.model import DTYPE_BYTES, MoEModelSpec
from gps.workload import Workload


def element_bytes(spec: MoEModelSpec) -> float:
    """Bytes of one weight, activation or KV-cache element (all priced in ``spec.dtype``)."""
    try:
        return DTYPE_BYTES[spec.dtype]
    except KeyError:
        raise ValueError(
            f"model {spec.name!r}: dtype={spec.dtype!r} unknown; known: {sorted(DTYPE_BYTES)}"
        ) from None


def sequences_per_gpu(workload: Workload, num_gpus: int) -> float:
    """Sequences whose attention one GPU runs: ``B/G`` (fractional, DP) or ``B`` (TP)."""
    if workload.attention_parallel == "dp":
        return workload.batch_size / num_gpus
    return float(workload.batch_size)


def tokens_per_gpu(workload: Workload, num_gpus: int) -> float:
    """New tokens whose token-parallel work (gate, FFN, embedding) one GPU runs: ``T/G``.

    Both attention modes hand each GPU ``1/G`` of the step's tokens after attention (TP:
    sequence-parallel slicing after the all-reduce). Fractional so that it vectorises.
    """
    return workload.tokens_per_step / num_gpus


def num_moe_layers(spec: MoEModelSpec) -> int:
    """MoE layers ``L_moe``: all ``num_layers`` minus the distinct ``dense_layers``."""
    dense = set(spec.dense_layers)
    if any(not 0 <= i < spec.num_layers for i in dense):
        raise ValueError(
            f"model {spec.name!r}: dense_layers={spec.dense_layers} outside [0, {spec.num_layers})"
        )
    return spec.num_layers - len(dense)


def attention_params_per_layer(spec: MoEModelSpec) -> float:
    """Attention weights of one layer (projections only, norms ignored).

    GQA: ``d*(H + 2*H_kv)*D + H*D*d``. MLA: q path (``d*q_r + q_r*H*(n+p)`` or ``d*H*(n+p)``)
    + ``d*(r+p)`` + ``r*H*(n+v)`` + ``H*v*d`` (DeepSeek-V2 paper, Sec. 2.1).
    """
    att, d = spec.attention, spec.hidden_size
    h = att.num_heads
    if att.kind == "gqa":
        return float(d * (h + 2 * att.num_kv_heads) * att.head_dim + h * att.head_dim * d)
    r, n, p, v = att.kv_lora_rank, att.qk_nope_head_dim, att.qk_rope_head_dim, att.v_head_dim
    q = d * att.q_lora_rank + att.q_lora_rank * h * (n + p) if att.q_lora_rank else d * h * (n + p)
    return float(q + d * (r + p) + r * h * (n + v) + h * v * d)
