"""MoE model architecture specs (``conf/model/*.yaml``) and derived parameter counts.

The dataclasses double as Hydra structured-config schemas, so they use only types
OmegaConf understands (str, int, float, bool, Optional, list), and are not frozen (a frozen
schema would make ``model.top_k=4`` overrides fail). Treat instances as read-only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
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
        config_json: A Hugging Face ``config.json`` (file or model folder) the spec is read
            from (:func:`spec_from_hf_config`; ``gps model=hf model.config_json=PATH``); every
            other field given beside it overrides the config's value. ``None``: the fields
            above are the spec.
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
    config_json: str | None = None


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
        elif name in ("q_lora_rank", "config_json") and value is None:
            kwargs[name] = None
        else:
            default = getattr(cls(), name)
            kind = float if isinstance(default, float) else type(default)
            if default is None:
                kind = str if at == "dtypes." else int
            kwargs[name] = _typed(value, kind, origin, path)
    return cls(**kwargs)


def spec_from_dict(data: dict[str, Any], origin: str = "<dict>") -> MoEModelSpec:
    """Build and validate a ``MoEModelSpec`` from a plain mapping (YAML / Hydra node).

    With ``config_json`` set (``conf/model/hf.yaml``), the spec is read from that Hugging Face
    ``config.json`` (:func:`spec_from_hf_config`) and every other field of ``data`` that differs
    from the schema's default overrides it (``gps model=hf model.config_json=c.json
    model.dtype=fp8``)."""
    path = data.get("config_json")
    if path is not None:
        if path in ("", "???"):
            raise ModelSpecError(
                f"{origin}: field 'config_json': missing; give the model's Hugging Face "
                "config.json: gps model=hf model.config_json=path/to/config.json"
            )
        return _hf_with_overrides(data, str(path), origin)
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


# ---- what a cluster holds ---------------------------------------------------------------------


def home_slot_expert(num_experts: int, num_gpus: int) -> np.ndarray:
    """``[G, R0]`` expert id in each home slot of one layer (``-1`` = empty): the one rule for
    which experts ``G`` GPUs hold, shared by ``gps`` (static placement, ``gps.plans``) and
    ``gps-trace inspect`` (per-GPU imbalance, ``gps.traces.stats``).

    ``E >= G``: ``R0 = ceil(E/G)`` slots per GPU, GPU ``g`` holds experts ``g*R0 ..
    g*R0+R0-1`` (contiguous); when ``G`` does not divide ``E`` the last GPUs hold fewer (60
    experts on 8 GPUs: seven GPUs hold 8, the last 4) and their spare slots stay empty.
    ``E < G``: ``R0 = 1``, GPU ``g`` holds a copy of expert ``floor(g*E/G)``.

    Raises:
        ValueError: ``E`` or ``G`` not an integer >= 1.
    """
    for name, value in (("num_experts", num_experts), ("num_gpus", num_gpus)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    e, g = int(num_experts), int(num_gpus)
    if e < g:
        return ((np.arange(g) * e) // g)[:, None].astype(np.int64)
    r0 = -(-e // g)
    out = np.full((g, r0), -1, dtype=np.int64)
    ids = np.arange(e)
    out[ids // r0, ids % r0] = ids
    return out


def home_gpu_share(num_experts: int, num_gpus: int) -> np.ndarray:
    """``[E, G]`` float64 share of expert ``e``'s tokens that GPU ``g`` serves under
    :func:`home_slot_expert` (1 on its home GPU; ``1/c`` on each of ``c`` copies when
    ``E < G``): ``loads [..., E] @ share`` is the per-GPU load ``[..., G]``."""
    slots = home_slot_expert(num_experts, num_gpus)
    share = np.zeros((num_experts, num_gpus))
    gpu, _ = np.nonzero(slots >= 0)
    np.add.at(share, (slots[slots >= 0], gpu), 1.0)
    return share / share.sum(axis=1, keepdims=True)


# ---- Hugging Face config.json -> spec ---------------------------------------------------------

#: ``model_type`` values :func:`spec_from_hf_config` reads, and the family each belongs to.
HF_FAMILIES: dict[str, str] = {
    "mixtral": "Mixtral", "phimoe": "Phi-MoE", "qwen2_moe": "Qwen2-MoE",
    "qwen3_moe": "Qwen3-MoE", "olmoe": "OLMoE", "deepseek_v2": "DeepSeek-V2",
    "deepseek_v3": "DeepSeek-V3", "llama4": "Llama-4", "llama4_text": "Llama-4",
    "gpt_oss": "gpt-oss", "dbrx": "DBRX",
}  # fmt: skip
# config.json ``torch_dtype`` (``dtype`` since transformers 5) -> spec dtype.
_HF_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def read_hf_config(path: str | os.PathLike) -> tuple[dict, str]:
    """``(config, origin)`` of a Hugging Face ``config.json`` (a file, or a model folder holding
    one); ``origin`` is the file's path, for error messages.

    Raises:
        ModelSpecError: naming the path: missing, unreadable, not JSON, not an object.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSpecError(f"{path}: field '<file>': not a readable config.json: {exc}") from None
    if not isinstance(config, dict):
        raise ModelSpecError(f"{path}: field '<file>': expected a JSON object")
    return config, str(path)


class _HFConfig:
    """Typed reads of one config's fields; every error names the file and the field."""

    def __init__(self, config: Mapping, origin: str, family: str) -> None:
        self.config, self.origin, self.family = config, origin, family

    def error(self, key: str, problem: str) -> ModelSpecError:
        return ModelSpecError(f"{self.origin}: field '{key}': {problem}")

    def raw(self, key: str, default: Any = ...) -> Any:
        node: Any = self.config
        for part in key.split("."):  # "ffn_config.moe_top_k": DBRX nests its MoE fields
            if not isinstance(node, Mapping) or node.get(part) is None:
                if default is ...:
                    raise self.error(key, f"missing (a {self.family} config.json has it)")
                return default
            node = node[part]
        return node

    def int(self, key: str, default: Any = ..., low: int = 1) -> Any:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error(key, f"expected an integer >= {low}, got {value!r}")
        return value

    def first(self, keys: tuple[str, ...], low: int = 1) -> int:
        """The first of ``keys`` present (configs spell some fields two ways)."""
        for key in keys:
            if self.raw(key, None) is not None:
                return self.int(key, low=low)
        raise self.error(keys[0], f"missing (a {self.family} config.json has it)")

    def layers(self, key: str) -> list[int]:
        value = self.raw(key, [])
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise self.error(key, f"expected a list of layer indices, got {value!r}")
        return value


def _hf_moe_layers(c: _HFConfig, model_type: str, num_layers: int) -> list[int]:
    """Indices of the decoder layers whose FFN is the routed MoE, each family's own rule
    (transformers' ``modeling_<family>.py`` / DeepSeek's reference code)."""
    every = list(range(num_layers))
    if model_type in ("qwen2_moe", "qwen3_moe"):
        # MoE unless listed in mlp_only_layers, and only every decoder_sparse_step-th layer
        step = c.int("decoder_sparse_step", 1)
        dense = set(c.layers("mlp_only_layers"))
        return [i for i in every if i not in dense and (i + 1) % step == 0]
    if model_type in ("deepseek_v2", "deepseek_v3"):
        first = c.int("first_k_dense_replace", 0, low=0)
        freq = c.int("moe_layer_freq", 1)
        return [i for i in every if i >= first and i % freq == 0]
    if model_type in ("llama4", "llama4_text"):
        if c.raw("moe_layers", None) is not None:
            return sorted(set(c.layers("moe_layers")))
        step = c.int("interleave_moe_layer_step", 1)
        return list(range(step - 1, num_layers, step))
    return every


def hf_moe_layer_indices(config: Mapping, origin: str = "<config>") -> list[int]:
    """Decoder-layer indices of the MoE layers a Hugging Face config describes (its
    ``num_hidden_layers`` and the family's dense-layer rule), in order: MoE layer ``l`` of a
    trace is decoder layer ``hf_moe_layer_indices(config)[l]``.

    Raises:
        ModelSpecError: unsupported ``model_type`` or a missing field, naming it.
    """
    model_type, c = _hf_family(config, origin)
    key = "n_layers" if model_type == "dbrx" else "num_hidden_layers"
    return _hf_moe_layers(c, model_type, c.int(key))


def _hf_family(config: Mapping, origin: str) -> tuple[str, _HFConfig]:
    """``(model_type, reader)``; Llama-4's multimodal config keeps the text model in
    ``text_config``."""
    model_type = config.get("model_type")
    if model_type not in HF_FAMILIES:
        families = ", ".join(sorted(HF_FAMILIES))
        raise ModelSpecError(
            f"{origin}: field 'model_type': {model_type!r} is not a supported MoE family "
            f"({families}); write a conf/model YAML instead (docs/models.md)"
        )
    if model_type == "llama4":
        text = config.get("text_config")
        if not isinstance(text, Mapping):
            raise ModelSpecError(f"{origin}: field 'text_config': missing (a Llama-4 "
                                 "config.json keeps the language model there)")  # fmt: skip
        config = {**{k: v for k, v in config.items() if k != "text_config"}, **text}
    return model_type, _HFConfig(config, origin, HF_FAMILIES[model_type])


def _hf_dtypes(c: _HFConfig) -> tuple[str, dict]:
    """``(dtype, dtypes)``: the checkpoint's ``torch_dtype`` (``dtype`` in transformers 5;
    bf16 when absent), and fp8 weights when ``quantization_config.quant_method`` is fp8."""
    name = c.raw("torch_dtype", None) or c.raw("dtype", None) or "bfloat16"
    if name not in _HF_DTYPES:
        raise c.error("torch_dtype", f"{name!r} not one of {sorted(_HF_DTYPES)}")
    method = c.raw("quantization_config.quant_method", None)
    return _HF_DTYPES[name], ({"weights": "fp8"} if method == "fp8" else {})


def spec_from_hf_config(
    config: str | os.PathLike | Mapping, origin: str | None = None
) -> MoEModelSpec:
    """The :class:`MoEModelSpec` a Hugging Face ``config.json`` describes, read from the config's
    own fields for the families in :data:`HF_FAMILIES` (Mixtral, Phi-MoE, Qwen2-MoE, Qwen3-MoE,
    OLMoE, DeepSeek-V2/V3, Llama-4, gpt-oss, DBRX): layers, width, GQA or MLA attention, routed
    and shared experts and their SwiGLU widths, the dense layers (DeepSeek's
    ``first_k_dense_replace``, Qwen's ``mlp_only_layers``/``decoder_sparse_step``, Llama-4's
    ``interleave_moe_layer_step``), group-limited routing (``n_group``/``topk_group``), vocab,
    tied embeddings, ``torch_dtype`` and fp8 weight quantisation. Published parameter counts
    are not in a config (0). ``name``: ``_name_or_path``, else the model folder's name.

    Args:
        config: a path (file or model folder) or the parsed dict.
        origin: name for error messages (default: the path, or ``"<config>"``).

    Raises:
        ModelSpecError: naming the file and the field: an unsupported ``model_type``, a field
            the family needs that is missing or not a positive integer, an inconsistent spec.
    """
    path: Path | None = None
    if not isinstance(config, Mapping):
        config, found = read_hf_config(config)
        path, origin = Path(found), origin or found
    origin = origin or "<config>"
    model_type, c = _hf_family(config, origin)
    if model_type == "dbrx":  # DBRX spells the common fields its own way and nests the MoE ones
        num_layers, hidden, heads = c.int("n_layers"), c.int("d_model"), c.int("n_heads")
        kv_heads, head_dim = c.int("attn_config.kv_n_heads"), hidden // heads
        experts, top_k = c.int("ffn_config.moe_num_experts"), c.int("ffn_config.moe_top_k")
        expert_f = c.int("ffn_config.ffn_hidden_size")
    else:
        num_layers, hidden = c.int("num_hidden_layers"), c.int("hidden_size")
        heads = c.int("num_attention_heads")
        kv_heads = c.int("num_key_value_heads")
        head_dim = c.int("head_dim", hidden // heads)
        experts = c.first(("num_local_experts",) if model_type in (
            "mixtral", "phimoe", "llama4", "llama4_text", "gpt_oss")
            else ("n_routed_experts",) if model_type.startswith("deepseek")
            else ("num_experts", "num_local_experts"))  # fmt: skip
        top_k = c.first(("num_experts_per_tok", "experts_per_token"))
        expert_f = c.int(
            "moe_intermediate_size"
            if model_type in ("qwen2_moe", "qwen3_moe") or model_type.startswith("deepseek")
            else "intermediate_size"
        )
    moe = _hf_moe_layers(c, model_type, num_layers)
    dense = [i for i in range(num_layers) if i not in set(moe)]
    shared, shared_f, dense_f = 0, 0, 0
    if dense:
        dense_f = c.int("intermediate_size_mlp" if model_type in ("llama4", "llama4_text")
                        else "intermediate_size")  # fmt: skip
    attention: dict[str, Any] = {"kind": "gqa", "num_heads": heads, "num_kv_heads": kv_heads,
                                 "head_dim": head_dim}  # fmt: skip
    groups = (1, 1)
    if model_type == "qwen2_moe":
        shared_f = c.int("shared_expert_intermediate_size", 0, low=0)
        shared = 1 if shared_f else 0
    elif model_type in ("llama4", "llama4_text"):  # Llama4TextMoe: one shared expert
        shared, shared_f = 1, expert_f
    elif model_type.startswith("deepseek"):
        shared = c.int("n_shared_experts", 0, low=0)
        shared_f = expert_f if shared else 0
        nope, rope = c.int("qk_nope_head_dim"), c.int("qk_rope_head_dim")
        attention = {"kind": "mla", "num_heads": heads, "num_kv_heads": kv_heads,
                     "head_dim": nope + rope, "q_lora_rank": c.int("q_lora_rank", None),
                     "kv_lora_rank": c.int("kv_lora_rank"), "qk_nope_head_dim": nope,
                     "qk_rope_head_dim": rope, "v_head_dim": c.int("v_head_dim")}  # fmt: skip
        default_method = "noaux_tc" if model_type == "deepseek_v3" else "greedy"
        if c.raw("topk_method", default_method) in ("group_limited_greedy", "noaux_tc"):
            groups = (c.int("n_group"), c.int("topk_group"))
    dtype, dtypes = _hf_dtypes(c)
    name = str(config.get("_name_or_path") or (path.parent.name if path else "") or model_type)
    data = {
        "name": name, "source": f"{origin} ({HF_FAMILIES[model_type]} config.json, "
        "read by gps.model.spec_from_hf_config)", "num_layers": num_layers,
        "dense_layers": dense, "hidden_size": hidden, "attention": attention,
        "num_experts": experts, "top_k": top_k, "num_shared_experts": shared,
        "expert_intermediate_size": expert_f, "shared_expert_intermediate_size": shared_f,
        "dense_intermediate_size": dense_f, "vocab_size": c.int("vocab_size"),
        "tie_word_embeddings": bool(c.raw("tie_word_embeddings", False)), "dtype": dtype,
        "dtypes": dtypes, "num_groups": groups[0], "topk_groups": groups[1],
    }  # fmt: skip
    return spec_from_dict(data, origin)


def _hf_with_overrides(data: Mapping[str, Any], path: str, origin: str) -> MoEModelSpec:
    """:func:`spec_from_hf_config` of ``path`` with the fields of ``data`` that differ from the
    schema's defaults laid over it (nested ``attention``/``dtypes`` field by field)."""
    spec = spec_from_hf_config(path)
    merged = asdict(spec)
    default = asdict(MoEModelSpec())
    for key, value in data.items():
        if key not in default:
            raise ModelSpecError(f"{origin}: field '{key}': unknown field")
        if key == "config_json":
            continue
        if isinstance(value, Mapping) and isinstance(default[key], dict):
            for sub, v in value.items():
                if default[key].get(sub, ...) != v:
                    merged[key][sub] = v
        elif value != default[key]:
            merged[key] = value
    merged["config_json"] = None
    return spec_from_dict(merged, origin)


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


def spec_for_layers(spec: MoEModelSpec, moe_layers: list[int] | tuple[int, ...]) -> MoEModelSpec:
    """The model cut down to some of its MoE layers (indices among its MoE layers, 0-based),
    each a whole decoder layer (attention and MoE), no dense layer: what a trace covering a
    subset of the MoE layers is priced on (``gps.advisor.data.EvalData.moe_layers``). Every
    dimension but ``num_layers``/``dense_layers`` is the model's.

    Raises:
        ModelSpecError: ``moe_layers`` empty, repeated or outside ``[0, L_moe)``.
    """
    total = len(moe_layer_indices(spec))
    layers = list(moe_layers)
    if not layers or sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= total:
        raise ModelSpecError(f"{spec.name}: field 'moe_layers': {layers} must be increasing "
                             f"MoE-layer indices in [0, {total})")  # fmt: skip
    return dataclasses.replace(spec, num_layers=len(layers), dense_layers=[])


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
