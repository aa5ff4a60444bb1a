"""Router logits -> top-k routing, per model family; the torch-free half of ``gps-trace record``.

The architecture registry maps a Hugging Face ``config.json`` ``model_type`` to where its
routers sit and how they choose experts. Routing rules, each taken from the model's own
modelling code in Hugging Face ``transformers`` (and the DeepSeek-V2/V3 reference code):

* ``softmax_topk`` (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE): ``p = softmax(logits)``, the
  ``k`` largest ``p``. Gate weights ``p`` of the chosen experts (renormalised to sum 1 when
  the config's ``norm_topk_prob`` says so; Mixtral always renormalises).
* ``group_limited_greedy`` (DeepSeek-V2 with ``topk_method: group_limited_greedy``):
  ``p = softmax(logits)``; experts split into ``n_group`` equal groups, a group scores the
  max ``p`` inside it, the ``topk_group`` best groups stay, the ``k`` largest ``p`` among
  their experts win. ``topk_method: greedy`` (DeepSeek-V2-Lite) is plain softmax top-k.
* ``noaux_tc`` (DeepSeek-V3): ``s = sigmoid(logits)``; choice scores ``s + bias`` (the
  router's ``e_score_correction_bias``); a group scores the sum of its two best choice
  scores, ``topk_group`` groups stay, the ``k`` largest choice scores win; gate weights
  are ``s`` (not ``s + bias``) of the winners, renormalised if ``norm_topk_prob``.

Everything here is numpy: :func:`route` turns ``[T, E]`` logits of one layer into
``[T, k]`` expert ids (best first) and weights, and :func:`logits_to_trace` turns every
layer's logits into a :class:`~gps.traces.trace.TokenTrace`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from gps.model import read_hf_config as _read_hf_config
from gps.traces.trace import TokenTrace
from gps.traces.validate import TraceError, validate_token_trace

Scoring = Literal["softmax", "sigmoid"]
GroupScore = Literal["none", "max", "top2_sum"]


@dataclass(frozen=True)
class Architecture:
    """Where one model family keeps its routers and which config keys describe them.

    Attributes:
        model_type: Hugging Face ``config.model_type``.
        router_suffixes: module-name suffixes of the router (the gate ``nn.Linear`` or
            router module with a ``weight [E, H]``), tried in order; ``".mlp.gate"`` must not
            match ``shared_expert_gate``, so suffixes start with a dot and are compared whole.
        num_experts_keys: config keys that may hold ``E`` (routed experts), first present
            wins (``transformers`` 5 renamed some, e.g. Qwen3-MoE's ``num_experts`` to
            ``num_local_experts``; published ``config.json`` files keep the old names).
        top_k_key: config key holding ``k``.
        default_norm_topk: renormalisation when the config has no ``norm_topk_prob``.
        dense_layers_key: config key of the number of leading dense layers (DeepSeek's
            ``first_k_dense_replace``), or ``None``.
    """

    model_type: str
    router_suffixes: tuple[str, ...]
    num_experts_keys: tuple[str, ...]
    top_k_key: str = "num_experts_per_tok"
    default_norm_topk: bool = False
    dense_layers_key: str | None = None


# Router module names and config keys from the modelling_*.py / configuration_*.py files of
# transformers (models/mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3).
ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        # MixtralSparseMoeBlock.gate (renamed from block_sparse_moe to mlp in transformers 5)
        Architecture("mixtral", (".block_sparse_moe.gate", ".mlp.gate"),
                     ("num_local_experts",), default_norm_topk=True),
        Architecture("qwen2_moe", (".mlp.gate",), ("num_experts",)),  # norm_topk_prob: False
        Architecture("qwen3_moe", (".mlp.gate",), ("num_experts", "num_local_experts"),
                     default_norm_topk=True),
        Architecture("olmoe", (".mlp.gate",), ("num_experts",)),  # norm_topk_prob: False
        Architecture("deepseek_v2", (".mlp.gate",), ("n_routed_experts", "num_experts"),
                     dense_layers_key="first_k_dense_replace"),
        Architecture("deepseek_v3", (".mlp.gate",), ("n_routed_experts", "num_local_experts"),
                     default_norm_topk=True, dense_layers_key="first_k_dense_replace"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class RoutingRule:
    """How one model turns router logits ``[T, E]`` into ``k`` experts per token.

    Attributes:
        num_experts: ``E`` routed experts (the logits' last dimension must equal it).
        top_k: ``k``.
        scoring: ``"softmax"`` or ``"sigmoid"`` applied to the logits.
        n_group, topk_group: group-limited routing: ``E`` split into ``n_group`` groups, only
            ``topk_group`` of them eligible per token (``n_group = 1``: no grouping).
        group_score: how a group is scored: its best expert (``"max"``, DeepSeek-V2), the sum
            of its best two (``"top2_sum"``, DeepSeek-V3), or ``"none"``.
        norm_topk_prob: whether the model renormalises the chosen weights (recorded in the
            trace's ``meta``; the stored trace weights are always renormalised).
        model_type: the architecture it came from (provenance).
    """

    num_experts: int
    top_k: int
    scoring: Scoring = "softmax"
    n_group: int = 1
    topk_group: int = 1
    group_score: GroupScore = "none"
    norm_topk_prob: bool = False
    model_type: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k {self.top_k} must be in [1, num_experts={self.num_experts}]")
        if self.scoring not in ("softmax", "sigmoid"):
            raise ValueError(f"scoring {self.scoring!r} must be 'softmax' or 'sigmoid'")
        if self.group_score not in ("none", "max", "top2_sum"):
            raise ValueError(f"group_score {self.group_score!r} must be none, max or top2_sum")
        if self.n_group < 1 or self.num_experts % self.n_group:
            raise ValueError(f"n_group {self.n_group} must divide num_experts {self.num_experts}")
        if not 1 <= self.topk_group <= self.n_group:
            raise ValueError(f"topk_group {self.topk_group} must be in [1, n_group={self.n_group}]")
        if self.group_score != "none" and self.topk_group * self.num_experts // self.n_group < (
            self.top_k
        ):
            raise ValueError("topk_group groups hold fewer than top_k experts")

    @property
    def grouped(self) -> bool:
        return self.group_score != "none" and self.topk_group < self.n_group

    def to_dict(self) -> dict:
        return {
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "scoring": self.scoring,
            "n_group": self.n_group,
            "topk_group": self.topk_group,
            "group_score": self.group_score,
            "norm_topk_prob": self.norm_topk_prob,
            "model_type": self.model_type,
        }


def architecture_of(config: Mapping, origin: str = "<config>") -> Architecture:
    """The registry entry for a Hugging Face config (dict from ``config.json``).

    Raises:
        TraceError: ``model_type`` missing or not in :data:`ARCHITECTURES`, naming ``origin``.
    """
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise TraceError(
            origin, "model_type", f"{model_type!r} is not a supported MoE architecture "
            f"({', '.join(sorted(ARCHITECTURES))})",
        )  # fmt: skip
    return ARCHITECTURES[model_type]


def rule_from_config(config: Mapping, origin: str = "<config>") -> RoutingRule:
    """The :class:`RoutingRule` a Hugging Face MoE config describes.

    Reads ``E``/``k`` from the architecture's keys; for DeepSeek, ``topk_method``
    (``greedy`` | ``group_limited_greedy`` | ``noaux_tc``), ``n_group``, ``topk_group``,
    ``scoring_func``; ``norm_topk_prob`` where present.

    Raises:
        TraceError: (a ``ValueError``) naming ``origin`` and the config field that is missing
            or unsupported, once.
    """
    arch = architecture_of(config, origin)

    def need(key: str) -> int:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TraceError(origin, key, f"expected a positive int, got {value!r}")
        return value

    e_key = next((key for key in arch.num_experts_keys if config.get(key) is not None), None)
    num_experts, top_k = need(e_key or arch.num_experts_keys[0]), need(arch.top_k_key)
    norm = bool(config.get("norm_topk_prob", arch.default_norm_topk))
    if arch.model_type == "mixtral":
        norm = True  # MixtralSparseMoeBlock always renormalises the top-k weights
    scoring: Scoring = "softmax"
    n_group, topk_group, group_score = 1, 1, "none"
    if arch.model_type.startswith("deepseek"):
        v3 = arch.model_type == "deepseek_v3"  # DeepSeek-V3 always routes noaux_tc / sigmoid
        method = config.get("topk_method") or ("noaux_tc" if v3 else "greedy")
        scoring = config.get("scoring_func") or ("sigmoid" if v3 else "softmax")
        if scoring not in ("softmax", "sigmoid"):
            raise TraceError(origin, "scoring_func", f"{scoring!r} is not supported")
        if method == "group_limited_greedy":
            n_group, topk_group, group_score = need("n_group"), need("topk_group"), "max"
        elif method == "noaux_tc":
            n_group, topk_group, group_score = need("n_group"), need("topk_group"), "top2_sum"
        elif method != "greedy":
            raise TraceError(origin, "topk_method", f"{method!r} is not supported")
    try:
        return RoutingRule(
            num_experts=num_experts, top_k=top_k, scoring=scoring, n_group=n_group,
            topk_group=topk_group, group_score=group_score, norm_topk_prob=norm,
            model_type=arch.model_type,
        )  # fmt: skip
    except ValueError as exc:  # the rule's message starts with its field's name
        first = str(exc).split(" ", 1)[0]
        fields = {"top_k": arch.top_k_key, "n_group": "n_group", "topk_group": "topk_group",
                  "scoring": "scoring_func"}  # fmt: skip
        field = fields.get(first, e_key or arch.num_experts_keys[0])
        raise TraceError(origin, field, str(exc)) from None


def read_hf_config(path: str | os.PathLike) -> dict:
    """``config.json`` (a file, or a model folder holding one) as a dict
    (:func:`gps.model.read_hf_config`; errors name the file once)."""
    return _read_hf_config(path)[0]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def route(
    logits: np.ndarray, rule: RoutingRule, bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k routing of one layer, exactly as the model does it.

    Args:
        logits: ``[T, E]`` router logits (any float dtype; computed in float32).
        rule: the model's :class:`RoutingRule`.
        bias: ``[E]`` DeepSeek-V3 ``e_score_correction_bias`` added to the choice scores
            (not to the weights); ``None`` = zeros.

    Returns:
        ``(experts [T, k] int16, weights [T, k] float32)``: expert ids best first (by choice
        score) and their gate weights renormalised to sum to 1 per token.

    Raises:
        ValueError: logits not ``[T, E]`` or not finite, bias not ``[E]``.
    """
    logits = np.asarray(logits, dtype=np.float32)
    e, k = rule.num_experts, rule.top_k
    if logits.ndim != 2 or logits.shape[1] != e:
        raise ValueError(f"logits shape {logits.shape} != [T, num_experts={e}]")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf")
    if rule.scoring == "softmax":
        probs = _softmax(logits.copy())
    else:
        probs = 1.0 / (1.0 + np.exp(-logits))
    choice = probs
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float32)
        if bias.shape != (e,):
            raise ValueError(f"bias shape {bias.shape} != [num_experts={e}]")
        choice = probs + bias
    if rule.grouped:
        t, g = logits.shape[0], rule.n_group
        grouped = choice.reshape(t, g, e // g)
        if rule.group_score == "max":
            group = grouped.max(axis=-1)
        else:  # top2_sum
            group = -np.sort(-grouped, axis=-1)[..., :2].sum(axis=-1)
        keep = np.argpartition(-group, rule.topk_group - 1, axis=-1)[:, : rule.topk_group]
        mask = np.zeros((t, g), dtype=bool)
        np.put_along_axis(mask, keep, True, axis=-1)
        choice = np.where(np.repeat(mask, e // g, axis=1), choice, -np.inf)
    top = np.argpartition(-choice, k - 1, axis=-1)[:, :k]
    order = np.argsort(-np.take_along_axis(choice, top, axis=-1), axis=-1, kind="stable")
    experts = np.take_along_axis(top, order, axis=-1)
    weights = np.take_along_axis(probs, experts, axis=-1)
    weights = weights / np.maximum(weights.sum(axis=-1, keepdims=True), 1e-30)
    return experts.astype(np.int16), weights.astype(np.float32)


def logits_to_trace(
    logits: Sequence[np.ndarray],
    rule: RoutingRule,
    *,
    sequence_id: np.ndarray | None = None,
    position: np.ndarray | None = None,
    token_id: np.ndarray | None = None,
    biases: Sequence[np.ndarray | None] | None = None,
    origin: str = "<memory>",
    meta: Mapping | None = None,
) -> TokenTrace:
    """A :class:`TokenTrace` from every MoE layer's router logits.

    Args:
        logits: one ``[T, E]`` array per MoE layer, in layer order (same ``T``).
        rule: the model's routing rule (``E``, ``k``, scoring, groups).
        sequence_id, position, token_id: ``[T]`` per-token fields (default: one sequence,
            positions ``0..T-1``, token ids unknown ``-1``).
        biases: per layer ``[E]`` DeepSeek-V3 correction bias or ``None``.
        origin: file name for error messages.
        meta: extra provenance copied into ``meta`` (``routing`` is added).

    Raises:
        TraceError: naming ``origin`` and the field (``layer_<l>`` for a layer whose expert
            count or token count is wrong, ``sequence_id``/``position``/``token_id``).
    """
    if not len(logits):
        raise TraceError(origin, "router_logits", "no layer given")
    t = int(np.shape(logits[0])[0]) if np.ndim(logits[0]) == 2 else -1
    experts = np.empty((max(t, 0), len(logits), rule.top_k), dtype=np.int16)
    scores = np.empty(experts.shape, dtype=np.float16)
    for layer, layer_logits in enumerate(logits):
        shape = np.shape(layer_logits)
        if len(shape) != 2 or shape[0] != t or shape[1] != rule.num_experts:
            raise TraceError(
                origin, f"layer_{layer}",
                f"router logits shape {tuple(shape)} != [T={t}, num_experts={rule.num_experts}] "
                f"({rule.model_type or 'the routing rule'} has {rule.num_experts} experts)",
            )  # fmt: skip
        bias = None if biases is None else biases[layer]
        try:
            ids, weights = route(layer_logits, rule, bias)
        except ValueError as exc:
            raise TraceError(origin, f"layer_{layer}", str(exc)) from None
        experts[:, layer] = ids
        scores[:, layer] = weights.astype(np.float16)

    def field(value: np.ndarray | None, name: str, default: np.ndarray) -> np.ndarray:
        if value is None:
            return default
        value = np.asarray(value)
        if value.shape != (t,) or value.dtype.kind not in "iu":
            raise TraceError(
                origin, name, f"expected [T={t}] integers, got {value.dtype}{value.shape}"
            )
        return value.astype(np.int32)

    trace = TokenTrace(
        experts=experts,
        token_id=field(token_id, "token_id", np.full(t, -1, dtype=np.int32)),
        sequence_id=field(sequence_id, "sequence_id", np.zeros(t, dtype=np.int32)),
        position=field(position, "position", np.arange(t, dtype=np.int32)),
        num_experts=rule.num_experts,
        scores=scores,
        meta={**dict(meta or {}), "routing": rule.to_dict()},
    )
    return validate_token_trace(trace, origin)
