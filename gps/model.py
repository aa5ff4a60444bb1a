"""MoE model architecture specs (``conf/model/*.yaml``) and derived parameter counts.

The dataclasses double as Hydra structured-config schemas, so they use only types
OmegaConf understands (str, int, float, bool, Optional, list).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0}


@dataclass(frozen=True)
class AttentionSpec:
    """Attention dimensions.

    ``kind="gqa"`` (MHA is GQA with ``num_kv_heads == num_heads``) uses ``num_heads``,
    ``num_kv_heads`` and ``head_dim``. ``kind="mla"`` (DeepSeek multi-head latent attention)
    uses ``num_heads``, ``q_lora_rank`` (``None`` = no query compression), ``kv_lora_rank``,
    ``qk_nope_head_dim``, ``qk_rope_head_dim`` and ``v_head_dim``.
    """

    kind: str = "gqa"
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0


@dataclass(frozen=True)
class MoEModelSpec:
    """A decoder-only MoE transformer.

    Attributes:
        name: Model name, e.g. ``"Mixtral-8x7B"``.
        source: Where the dimensions come from (the published ``config.json``).
        num_layers: Decoder layers.
        dense_layers: Indices of layers whose FFN is dense (no experts).
        hidden_size: Model width ``d``.
        attention: Attention dimensions.
        num_experts: Routed experts per MoE layer ``E``.
        top_k: Routed experts per token ``k``.
        num_shared_experts: Always-on shared experts per MoE layer.
        expert_intermediate_size: SwiGLU inner dim of one routed expert.
        shared_expert_intermediate_size: SwiGLU inner dim of one shared expert.
        dense_intermediate_size: SwiGLU inner dim of a dense layer's FFN.
        vocab_size: Vocabulary size.
        tie_word_embeddings: Whether the LM head shares the embedding matrix.
        dtype: Weight/activation dtype for compute (``bf16``, ``fp16``, ``fp8``).
        published_total_params: Published total parameter count (for validation).
        published_active_params: Published active parameters per token (for validation).
    """

    name: str = "???"
    source: str = "???"
    num_layers: int = 0
    dense_layers: list[int] = field(default_factory=list)
    hidden_size: int = 0
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    num_experts: int = 0
    top_k: int = 0
    num_shared_experts: int = 0
    expert_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    dense_intermediate_size: int = 0
    vocab_size: int = 0
    tie_word_embeddings: bool = False
    dtype: str = "bf16"
    published_total_params: float = 0.0
    published_active_params: float = 0.0
