"""The two trace kinds every later stage consumes.

Shapes: ``T`` tokens, ``L`` MoE layers, ``k`` experts per token, ``E`` experts per layer,
``S`` steps of a load series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TokenTrace:
    """Per-token routing of an inference workload.

    Attributes:
        experts: ``[T, L, k]`` int16 expert ids in gate order (best first).
        token_id: ``[T]`` int32 vocabulary id, ``-1`` where unknown.
        sequence_id: ``[T]`` int32 sequence (request) the token belongs to.
        position: ``[T]`` int32 position inside its sequence.
        num_experts: ``E``.
        scores: ``[T, L, k]`` float16 renormalised gate weights, or ``None``.
        domain: ``[T]`` int16 index into ``meta["domains"]``, or ``None``.
        meta: model name, source, licence, domain names, ... (JSON-serialisable).
        hidden: ``[T, H, d]`` float16 or float32 router-input activations at ``H`` of the
            ``L`` MoE layers, or ``None``: ``hidden[:, j]`` is what the token's hidden state was
            when it entered MoE layer ``hidden_layers[j]``'s decoder block (its attention
            input, i.e. the previous layer's output; ``meta["hidden_kind"]`` may name another
            point: ``gps-trace record --save-hidden`` stores ``"pre_attention_normed"``, the
            block's input-norm output, or ``"router_input"``). Read by hidden-state routers.
        hidden_layers: ``[H]`` int16 strictly increasing MoE-layer indices in ``[0, L)`` the
            ``hidden`` slices belong to; given exactly when ``hidden`` is.
    """

    experts: np.ndarray
    token_id: np.ndarray
    sequence_id: np.ndarray
    position: np.ndarray
    num_experts: int
    scores: np.ndarray | None = None
    domain: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    hidden: np.ndarray | None = None
    hidden_layers: np.ndarray | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.experts.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.experts.shape[1])

    @property
    def top_k(self) -> int:
        return int(self.experts.shape[2])


@dataclass(frozen=True)
class LoadSeries:
    """Expert token counts over time (training steps or serving batches).

    Attributes:
        counts: ``[S, L, E]`` tokens routed to each expert at each step.
        step: ``[S]`` int64 strictly increasing step index.
        meta: model name, source, ... (JSON-serialisable).
    """

    counts: np.ndarray
    step: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def num_experts(self) -> int:
        return int(self.counts.shape[2])
