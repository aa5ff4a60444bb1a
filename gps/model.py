"""MoE model architecture specs (``conf/model/*.yaml``) and derived parameter counts.

The dataclasses double as Hydra structured-config schemas, so they use only types
OmegaConf understands (str, int, float, bool, Optional, list), and are not frozen (a frozen
schema would make ``model.top_k=4`` overrides fail). Treat instances as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0}


@dataclass
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


TENSOR_DTYPES = (
    "weights", "activations", "attention", "kv_cache", "dispatch", "combine", "compute"
)  # fmt: skip


@dataclass
class TensorDtypes:
    """Per-tensor dtypes; ``None`` = the model's ``dtype`` (one dtype for everything).

    Attributes:
        weights: stored weights; GEMMs run at this dtype's peak FLOP/s (fp8 GEMMs for
            DeepSeek-V3's block-quantised checkpoint).
        activations: activation tensors read and written by GEMMs and norms.
        attention: the attention core (QK^T, softmax, PV): its peak FLOP/s and its Q/O bytes.
        kv_cache: stored KV-cache (or MLA latent) elements.
        dispatch: dispatch all-to-all payload per element (DeepEP: fp8 or bf16).
        combine: combine all-to-all payload per element (DeepEP: bf16).
        compute: the GEMMs' math dtype (its peak FLOP/s); ``None`` = the weights' dtype.
            Weight-only quantisation (int8 weights, fp16 math) sets ``weights: int8,
            compute: fp16``.
    """

    weights: str | None = None
    activations: str | None = None
    attention: str | None = None
    kv_cache: str | None = None
    dispatch: str | None = None
    combine: str | None = None
    compute: str | None = None


@dataclass
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
        dtype: Default dtype of every tensor (``bf16``, ``fp16``, ``fp8``).
        dtypes: Per-tensor overrides of ``dtype`` (``tensor_dtype``).
        num_groups: Expert groups for group-limited routing (DeepSeek-V3 ``n_group``; 1 = none).
        topk_groups: Groups a token may route into (``topk_group``; 1 when ``num_groups == 1``).
        published_total_params: Published total parameter count (for validation).
        published_active_params: Published active parameters per token (for validation).
        published_active_excludes_input_embedding: The publisher's "active" convention leaves
            the input embedding out (DeepSeek's papers do: a lookup does no compute).
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
    dtypes: TensorDtypes = field(default_factory=TensorDtypes)
    num_groups: int = 1
    topk_groups: int = 1
    published_total_params: float = 0.0
    published_active_params: float = 0.0
    published_active_excludes_input_embedding: bool = False


ATTENTION_KINDS = ("gqa", "mla")
MODEL_CONF_DIR = Path(__file__).resolve().parent.parent / "conf" / "model"


class ModelSpecError(ValueError):
    """A model spec is invalid; the message names the file (or origin) and the field."""


def _typed(value: Any, kind: type, origin: str, field_name: str) -> Any:
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        expected = kind.__name__
        raise ModelSpecError(f"{origin}: field '{field_name}': expected {expected}, got {value!r}")
    return value


def _build(cls: type, data: Any, origin: str, at: str) -> Any:
    if not isinstance(data, dict):
        raise ModelSpecError(f"{origin}: field '{at or '<root>'}': expected a mapping")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ModelSpecError(f"{origin}: field '{at}{unknown[0]}': unknown field")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{at}{name}"
        if name == "attention" and not at:
            kwargs[name] = _build(AttentionSpec, value, origin, "attention.")
        elif name == "dtypes" and not at:
            kwargs[name] = _build(TensorDtypes, value, origin, "dtypes.")
        elif at == "dtypes." and value is None:
            kwargs[name] = None
        elif name == "dense_layers":
            if not isinstance(value, list):
                raise ModelSpecError(f"{origin}: field '{path}': expected a list of layer indices")
            kwargs[name] = [_typed(v, int, origin, path) for v in value]
        elif name == "q_lora_rank" and value is None:
            kwargs[name] = None
        else:
            default = getattr(cls(), name)
            kind = float if isinstance(default, float) else type(default)
            if default is None:
                kind = str if at == "dtypes." else int
            kwargs[name] = _typed(value, kind, origin, path)
    return cls(**kwargs)


def spec_from_dict(data: dict[str, Any], origin: str = "<dict>") -> MoEModelSpec:
    """Build and validate a ``MoEModelSpec`` from a plain mapping (YAML / Hydra node)."""
    required = ("name", "source", "num_layers", "hidden_size", "num_experts", "top_k",
                "expert_intermediate_size", "vocab_size")  # fmt: skip
    for name in required:
        if name not in data:
            raise ModelSpecError(f"{origin}: field '{name}': missing field")
    spec = _build(MoEModelSpec, dict(data), origin, "")
    validate_spec(spec, origin)
    return spec


def validate_spec(spec: MoEModelSpec, origin: str = "<spec>") -> None:
    """Raise ``ModelSpecError`` naming the first inconsistent field."""

    def bad(field_name: str, problem: str) -> ModelSpecError:
        return ModelSpecError(f"{origin}: field '{field_name}': {problem}")

    for name in ("num_layers", "hidden_size", "num_experts", "top_k",
                 "expert_intermediate_size", "vocab_size"):  # fmt: skip
        if getattr(spec, name) < 1:
            raise bad(name, f"must be >= 1, got {getattr(spec, name)}")
    if spec.top_k > spec.num_experts:
        raise bad("top_k", f"top_k={spec.top_k} exceeds num_experts={spec.num_experts}")
    for i in spec.dense_layers:
        if not 0 <= i < spec.num_layers:
            raise bad("dense_layers", f"layer index {i} outside [0, {spec.num_layers})")
    if len(set(spec.dense_layers)) != len(spec.dense_layers):
        raise bad("dense_layers", "repeated layer index")
    if len(spec.dense_layers) == spec.num_layers:
        raise bad("dense_layers", "every layer is dense: not an MoE model")
    if spec.dense_layers and spec.dense_intermediate_size < 1:
        raise bad("dense_intermediate_size", "dense layers need dense_intermediate_size >= 1")
    if spec.num_shared_experts and spec.shared_expert_intermediate_size < 1:
        raise bad("shared_expert_intermediate_size", "shared experts need a size >= 1")
    if spec.dtype not in DTYPE_BYTES:
        raise bad("dtype", f"unknown dtype {spec.dtype!r}; known: {sorted(DTYPE_BYTES)}")
    for name in TENSOR_DTYPES:
        value = getattr(spec.dtypes, name)
        if value is not None and value not in DTYPE_BYTES:
            raise bad(f"dtypes.{name}", f"unknown dtype {value!r}; known: {sorted(DTYPE_BYTES)}")
    if spec.num_groups < 1 or spec.num_experts % spec.num_groups:
        raise bad("num_groups", f"{spec.num_groups} must be >= 1 and divide num_experts")
    if not 1 <= spec.topk_groups <= spec.num_groups:
        raise bad("topk_groups", f"{spec.topk_groups} must be in [1, num_groups]")
    if spec.top_k > spec.topk_groups * spec.num_experts // spec.num_groups:
        raise bad("topk_groups", "top_k experts do not fit in topk_groups groups")
    att = spec.attention
    if att.kind not in ATTENTION_KINDS:
        raise bad("attention.kind", f"unknown kind {att.kind!r}; known: {ATTENTION_KINDS}")
    if att.num_heads < 1:
        raise bad("attention.num_heads", "must be >= 1")
    if att.kind == "gqa":
        if att.head_dim < 1 or not 1 <= att.num_kv_heads <= att.num_heads:
            raise bad("attention.num_kv_heads", "GQA needs 1 <= num_kv_heads <= num_heads")
        if att.num_heads % att.num_kv_heads:
            raise bad("attention.num_kv_heads", "num_heads must be a multiple of num_kv_heads")
    else:
        for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            if getattr(att, name) < 1:
                raise bad(f"attention.{name}", "MLA needs it >= 1")


def load_model_spec(name_or_path: str | Path) -> MoEModelSpec:
    """Load ``conf/model/<name>.yaml`` (or a YAML path) and validate it."""
    path = Path(name_or_path)
    if not path.exists():
        path = MODEL_CONF_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in MODEL_CONF_DIR.glob("*.yaml"))
        raise ModelSpecError(f"{path}: unknown model {str(name_or_path)!r}; known: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ModelSpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ModelSpecError(f"{path}: expected a mapping at the top level")
    return spec_from_dict(data, origin=str(path))


# ---- parameter counts (weights only; ints) --------------------------------------------------


def moe_layer_indices(spec: MoEModelSpec) -> list[int]:
    """Indices of the layers whose FFN is a routed-expert MoE."""
    dense = set(spec.dense_layers)
    return [i for i in range(spec.num_layers) if i not in dense]


def attention_params(spec: MoEModelSpec) -> int:
    """Attention weights of one layer (projections + MLA's latent norms; no biases).

    GQA: ``d*H*D`` (q) + ``2*d*H_kv*D`` (k, v) + ``H*D*d`` (o).
    MLA (DeepSeek-V2 paper, Sec. 2.1): q path ``d*q_r + q_r + q_r*H*(n+p)`` (or ``d*H*(n+p)``
    without query compression) + ``d*(r+p)`` (kv_a, with the shared rope key) + ``r`` (norm)
    + ``r*H*(n+v)`` (kv_b) + ``H*v*d`` (o).
    """
    att, d, h = spec.attention, spec.hidden_size, spec.attention.num_heads
    if att.kind == "gqa":
        return d * h * att.head_dim + 2 * d * att.num_kv_heads * att.head_dim + h * att.head_dim * d
    r, n, p, v = att.kv_lora_rank, att.qk_nope_head_dim, att.qk_rope_head_dim, att.v_head_dim
    if att.q_lora_rank:
        q = d * att.q_lora_rank + att.q_lora_rank + att.q_lora_rank * h * (n + p)
    else:
        q = d * h * (n + p)
    return q + d * (r + p) + r + r * h * (n + v) + h * v * d


def expert_params(spec: MoEModelSpec) -> int:
    """One routed SwiGLU expert: gate, up and down projections, ``3*d*f``."""
    return 3 * spec.hidden_size * spec.expert_intermediate_size


def shared_expert_params(spec: MoEModelSpec) -> int:
    """All shared experts of one MoE layer: ``n_shared * 3*d*f_shared``."""
    return spec.num_shared_experts * 3 * spec.hidden_size * spec.shared_expert_intermediate_size


def dense_ffn_params(spec: MoEModelSpec) -> int:
    """The SwiGLU FFN of one dense layer: ``3*d*f_dense``."""
    return 3 * spec.hidden_size * spec.dense_intermediate_size


def router_params(spec: MoEModelSpec) -> int:
    """The gate of one MoE layer: ``d*E`` (no bias)."""
    return spec.hidden_size * spec.num_experts


def norm_params(spec: MoEModelSpec) -> int:
    """RMSNorm weights: two per layer plus the final norm, ``d*(2L + 1)``."""
    return spec.hidden_size * (2 * spec.num_layers + 1)


def embedding_params(spec: MoEModelSpec) -> int:
    """Input embedding plus LM head (``V*d`` each; once if tied)."""
    return spec.vocab_size * spec.hidden_size * (1 if spec.tie_word_embeddings else 2)


def total_params(spec: MoEModelSpec) -> int:
    """All weights of the model."""
    n_moe = len(moe_layer_indices(spec))
    n_dense = spec.num_layers - n_moe
    per_moe = spec.num_experts * expert_params(spec) + shared_expert_params(spec)
    return (
        spec.num_layers * attention_params(spec)
        + n_moe * (per_moe + router_params(spec))
        + n_dense * dense_ffn_params(spec)
        + norm_params(spec)
        + embedding_params(spec)
    )


def active_params(spec: MoEModelSpec, include_input_embedding: bool = True) -> int:
    """Weights one token touches: everything but the ``E - k`` unused routed experts per MoE
    layer. The LM head is always included; the input embedding (``V*d``, a lookup) only when
    ``include_input_embedding`` (Mistral, Qwen and OLMoE count it; DeepSeek does not)."""
    n_moe = len(moe_layer_indices(spec))
    unused = n_moe * (spec.num_experts - spec.top_k) * expert_params(spec)
    embed = 0 if include_input_embedding else spec.vocab_size * spec.hidden_size
    return total_params(spec) - unused - embed


def bytes_per_param(spec: MoEModelSpec) -> float:
    """Bytes of one weight (``tensor_dtype(spec, "weights")``)."""
    return DTYPE_BYTES[tensor_dtype(spec, "weights")]


def tensor_dtype(spec: MoEModelSpec, tensor: str) -> str:
    """The dtype of ``tensor`` (one of ``TENSOR_DTYPES``): its override, else ``spec.dtype``
    (``compute``: else the weights' dtype)."""
    if tensor not in TENSOR_DTYPES:
        raise KeyError(f"unknown tensor {tensor!r}; known: {TENSOR_DTYPES}")
    if tensor == "compute":
        return spec.dtypes.compute or tensor_dtype(spec, "weights")
    return getattr(spec.dtypes, tensor) or spec.dtype


def tensor_bytes(spec: MoEModelSpec, tensor: str) -> float:
    """Bytes of one element of ``tensor`` (``DTYPE_BYTES[tensor_dtype(spec, tensor)]``)."""
    return DTYPE_BYTES[tensor_dtype(spec, tensor)]
