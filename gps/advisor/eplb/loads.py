"""The pool's per-step expert loads, from an engine's recorded statistics.

The recorded steps (:class:`~gps.traces.engine_stats.EngineLoadStats`) are split into history
(what a static placement and the first EPLB window are planned from) and evaluation steps; each
evaluation step becomes one of the pool's steps: the recorded counts rescaled when a recorded
step holds about as many token copies as the pool's step (``recorded_tolerance``), else a draw
of the per-batch fluctuation model (``gps.traces.fluctuation``) around the recorded
proportions (a moving mean over as many recorded steps as one pool step holds).

Shapes: ``S`` steps, ``H`` history steps, ``L`` MoE layers, ``E`` experts. Units: token copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gps.cost._common import num_moe_layers
from gps.model import MoEModelSpec
from gps.traces.engine_stats import EngineLoadStats
from gps.traces.fluctuation import FluctuationModel, fitted_model
from gps.workload import Workload


@dataclass(frozen=True)
class PoolLoads:
    """The pool's per-step expert loads (token copies).

    Attributes:
        history: ``[H, L, E]`` recorded history steps, rescaled to the pool's copies per step.
        loads: ``[S, L, E]`` the evaluation steps as the pool serves them.
        copies_per_step: token copies of one pool step (tokens x ``k``).
        source: ``"recorded"`` or ``"fluctuation model"``.
        recorded_copies: median copies of a recorded step.
        smoothing_steps: recorded steps averaged into each step's mean (fluctuation model).
    """

    history: np.ndarray
    loads: np.ndarray
    copies_per_step: float
    source: str
    recorded_copies: float
    smoothing_steps: int = 1


def moving_mean(p: np.ndarray, width: int) -> np.ndarray:
    """Trailing mean over ``width`` rows (fewer at the start) of ``[S, ...]``."""
    if width <= 1:
        return p
    c = np.cumsum(p, axis=0)
    out = c.copy()
    out[width:] = c[width:] - c[:-width]
    n = np.minimum(np.arange(1, p.shape[0] + 1), width).reshape(-1, *([1] * (p.ndim - 1)))
    return out / n


def pool_loads(
    stats: EngineLoadStats,
    spec: MoEModelSpec,
    workload: Workload,
    fluctuation: FluctuationModel,
    *,
    history_fraction: float = 0.5,
    recorded_tolerance: float = 0.25,
    seed: int = 0,
) -> PoolLoads:
    """Split the recorded steps into history and evaluation and shape them as the pool's
    steps (module docstring, step 1).

    Raises:
        ValueError: statistics of another ``L``/``E`` than the model, or fewer than 2 steps
            on either side of the split.
    """
    lm = num_moe_layers(spec)
    if stats.num_layers != lm or stats.num_experts != spec.num_experts:
        raise ValueError(
            f"statistics: {stats.num_layers} layers x {stats.num_experts} experts, model "
            f"{spec.name!r} has {lm} MoE layers x {spec.num_experts} experts (layer mismatch)"
        )
    if not 0.0 < history_fraction < 1.0:
        raise ValueError(f"eplb.history_fraction: {history_fraction} not in (0, 1)")
    s = stats.num_steps
    h = round(history_fraction * s)
    if h < 1 or s - h < 2:
        raise ValueError(
            f"statistics: {s} recorded steps leave no history or fewer than 2 "
            f"evaluation steps (eplb.history_fraction={history_fraction})"
        )
    copies = float(workload.tokens_per_step * spec.top_k)
    rec = stats.counts.sum(axis=-1).astype(float)  # [S, L]
    recorded = float(np.median(rec))
    props = stats.proportions()
    history = props[:h] * copies
    if abs(recorded / copies - 1.0) <= recorded_tolerance:
        scale = copies / np.maximum(rec[h:], 1.0)
        return PoolLoads(
            history=history,
            loads=stats.counts[h:] * scale[..., None],
            copies_per_step=copies,
            source="recorded",
            recorded_copies=recorded,
        )
    width = max(1, round(copies / max(recorded, 1.0)))
    mu = moving_mean(props, width)[h:]
    mu = mu / np.maximum(mu.sum(axis=-1, keepdims=True), 1e-300)
    empty = ~(mu.sum(axis=-1) > 0)
    mu[empty] = 1.0 / spec.num_experts
    per_request = workload.tokens_per_sequence
    loads = fluctuation.sample(mu, copies, spec.top_k, per_request, np.random.default_rng(seed))
    return PoolLoads(
        history=history,
        loads=loads,
        copies_per_step=copies,
        source="fluctuation model",
        recorded_copies=recorded,
        smoothing_steps=width,
    )


def fluctuation_for(spec: MoEModelSpec, name: str) -> FluctuationModel:
    """``eplb.fluctuation``: ``auto`` -> the Mixtral fit for Mixtral-like routing (8 experts,
    top-2), else the ESFT (DeepSeek-V2-Lite) fit; see ``gps.traces.fluctuation.FITTED_RHO``."""
    if name == "auto":
        name = "mixtral" if "mixtral" in spec.name.lower() else "esft"
    return fitted_model(name)
