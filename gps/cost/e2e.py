"""End-to-end time of one batch step (one prefill step or one decode step).

``total = sum over MoE layers of the per-layer components + non-MoE time``, where the
non-MoE time (embedding lookup, dense layers, LM head) does not depend on routing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gps.cost._common import element_bytes, num_moe_layers, tokens_per_gpu
from gps.cost.attention import attention_time
from gps.cost.experts import swiglu_op
from gps.cost.layer import check_slot_tokens, moe_layer_times
from gps.cost.roofline import Op, ops_time
from gps.cost.routing import traffic_from_slot_tokens, uniform_slot_tokens
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import Workload

LAYER_COMPONENTS = (
    "attention", "gate", "dispatch", "experts", "combine", "shared", "predictor", "migration",
    "expert_fetch",
)  # fmt: skip


@dataclass(frozen=True)
class CostBreakdown:
    """Seconds of one batch step; ``...`` are the sweep dimensions of the inputs.

    Attributes:
        components: name (``LAYER_COMPONENTS``) -> seconds ``[..., L_moe]``.
        per_layer_s: ``[..., L_moe]`` sum of ``components``.
        non_moe: name (``embedding``, ``dense_layers``, ``lm_head``) -> seconds (scalars).
        non_moe_s: ``[...]`` sum of ``non_moe``.
        total_s: ``[...]`` end-to-end seconds of the step.
        tokens_per_s: ``[...]`` new tokens of the step / ``total_s``.
        balanced_total_s: ``[...]`` the same step with perfectly balanced expert load and
            traffic and no predictor or migration cost (an oracle lower bound).
        dropped_tokens: ``[...]`` tokens the plan dropped (reported only; priced nowhere).
    """

    components: dict[str, np.ndarray]
    per_layer_s: np.ndarray
    non_moe: dict[str, float]
    non_moe_s: np.ndarray
    total_s: np.ndarray
    tokens_per_s: np.ndarray
    balanced_total_s: np.ndarray
    dropped_tokens: np.ndarray

    def imbalance_overhead(self) -> np.ndarray:
        """``total_s / balanced_total_s - 1`` (>= 0), shape ``[...]``."""
        return self.total_s / self.balanced_total_s - 1.0

    def to_dict(self) -> dict:
        """JSON-serialisable dict (nested lists of floats; seconds, tokens/s, tokens)."""
        return {
            "components_s": {k: v.tolist() for k, v in self.components.items()},
            "per_layer_s": self.per_layer_s.tolist(),
            "non_moe_s_parts": dict(self.non_moe),
            "non_moe_s": self.non_moe_s.tolist(),
            "total_s": self.total_s.tolist(),
            "tokens_per_s": self.tokens_per_s.tolist(),
            "balanced_total_s": self.balanced_total_s.tolist(),
            "imbalance_overhead": self.imbalance_overhead().tolist(),
            "dropped_tokens": self.dropped_tokens.tolist(),
        }


def non_moe_times(spec: MoEModelSpec, cluster: Cluster, workload: Workload) -> dict[str, float]:
    """Seconds of the parts run once per step, on one GPU's share (``n = T/G`` tokens).

    * ``embedding``: lookup, ``a*2*n*d`` bytes (gather rows, write activations), no FLOPs.
    * ``dense_layers``: ``(num_layers - L_moe) * (attention_time + dense SwiGLU FFN on n)``
      (DeepSeek's first-k dense layers).
    * ``lm_head``: logits for the last token of each sequence only (serving convention; the
      prompt's other positions need no logits), ``m = B/G`` per GPU: ``2*m*d*V`` FLOPs,
      ``a*(V*d + m*d + m*V)`` bytes. Final norm and sampling are ignored.
    """
    g, gpu, dt = cluster.num_gpus, cluster.gpu, spec.dtype
    a, d, v = element_bytes(spec), spec.hidden_size, spec.vocab_size
    n = tokens_per_gpu(workload, g)
    m = workload.batch_size / g
    n_dense = spec.num_layers - num_moe_layers(spec)
    dense_ffn = swiglu_op("dense_ffn", n, spec.dense_intermediate_size, spec)
    dense = 0.0
    if n_dense:
        dense = n_dense * (
            attention_time(spec, cluster, workload) + float(ops_time([dense_ffn], gpu, dt))
        )
    return {
        "embedding": float(ops_time([Op("embedding", 0.0, a * 2 * n * d)], gpu, dt)),
        "dense_layers": dense,
        "lm_head": float(
            ops_time([Op("lm_head", 2 * m * d * v, a * (v * d + m * d + m * v))], gpu, dt)
        ),
    }


def _nonneg(name: str, x: float | np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}: must be finite and >= 0")
    return arr


def batch_cost(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    slot_tokens: np.ndarray | None = None,
    traffic_bytes: np.ndarray | None = None,
    *,
    predictor_overhead_s: float | np.ndarray = 0.0,
    predictor_on_critical_path: bool = True,
    migration_bytes: float | np.ndarray = 0.0,
    migration_overlap: float = 1.0,
    migration_link: str = "intra",
    migration_s: float | np.ndarray | None = None,
    dropped_tokens: float | np.ndarray = 0,
    dispatch_s: np.ndarray | None = None,
    expert_fetch_s: float | np.ndarray = 0.0,
) -> CostBreakdown:
    """End-to-end seconds of one batch step, vectorised over sweep points.

    Args:
        spec, cluster, workload: model, hardware, step shape.
        slot_tokens: ``[..., L_moe, G, R]`` token copies per expert slot; ``None`` = uniform
            routing on a static contiguous placement (``routing.uniform_slot_tokens``).
        traffic_bytes: ``[..., L_moe, G, G]`` dispatch bytes; ``None`` = derived from
            ``slot_tokens`` with data-parallel token sources (``traffic_from_slot_tokens``).
        predictor_overhead_s: seconds per MoE layer, broadcastable to ``[..., L_moe]`` (a
            once-per-batch predictor: put its time on layer 0 and zeros elsewhere). On the
            critical path it adds fully; otherwise it runs beside attention and only
            ``max(0, p - attention)`` shows.
        predictor_on_critical_path: see above.
        migration_bytes: expert-weight bytes received by the busiest GPU in each MoE layer,
            broadcastable to ``[..., L_moe]``; moved in ``latency + bytes / gpu_bandwidth`` of
            ``migration_link`` and hidden behind attention up to ``migration_overlap *
            attention`` (exposed: ``max(0, t_mig - migration_overlap * attention)``).
        migration_overlap: fraction of the attention time usable to hide migration, in [0, 1].
        migration_link: ``"intra"`` (default: replicas copied from a GPU of the same node) or
            ``"inter"``.
        migration_s: seconds to copy each MoE layer's replicas, already priced per link
            (``gps.plans.migration.migration_seconds``), broadcastable to ``[..., L_moe]``;
            when given it replaces ``migration_bytes``/``migration_link`` (same overlap rule).
        dropped_tokens: tokens dropped by the plan, broadcastable to ``[...]`` (reported only).
        dispatch_s: exposed dispatch seconds ``[..., L_moe]`` replacing the all-to-all of
            ``traffic_bytes`` (direct dispatch, ``gps.cost.token_mechanisms``); the combine is
            still priced from ``traffic_bytes``. ``None``: dispatch = combine time.
        expert_fetch_s: exposed seconds ``[..., L_moe]`` fetching non-resident expert weights
            (``token_mechanisms.expert_fetch_s``), the ``expert_fetch`` component.

    Returns:
        ``CostBreakdown``.
    """
    workload.validate()
    if slot_tokens is None:
        slot_tokens = uniform_slot_tokens(spec, cluster, workload)
    if traffic_bytes is None:
        slot_tokens = np.asarray(slot_tokens, dtype=float)
        check_slot_tokens(slot_tokens, spec, cluster)
        traffic_bytes = traffic_from_slot_tokens(slot_tokens, spec)
    if not 0.0 <= migration_overlap <= 1.0:
        raise ValueError(f"migration_overlap={migration_overlap}: must be in [0, 1]")
    pred = _nonneg("predictor_overhead_s", predictor_overhead_s)
    mig_bytes = _nonneg("migration_bytes", migration_bytes)
    dropped = _nonneg("dropped_tokens", dropped_tokens)

    comp, balanced = moe_layer_times(spec, cluster, workload, slot_tokens, traffic_bytes)
    attn = comp["attention"]
    if not predictor_on_critical_path:
        pred = np.maximum(pred - attn, 0.0)
    if migration_link not in ("intra", "inter"):
        raise ValueError(f"migration_link={migration_link!r}: expected 'intra' or 'inter'")
    link = cluster.intra_link if migration_link == "intra" else cluster.inter_link
    if link is None:
        raise ValueError(f"migration_link='inter' but cluster {cluster.name!r} has no inter_link")
    mig_s = np.where(mig_bytes > 0, link.latency_s + mig_bytes / link.gpu_bandwidth, 0.0)
    if migration_s is not None:
        mig_s = _nonneg("migration_s", migration_s)
    comp["predictor"] = pred
    if dispatch_s is not None:  # the balanced bound may hide its dispatch as well
        comp["dispatch"] = _nonneg("dispatch_s", dispatch_s)
        balanced["dispatch"] = np.minimum(balanced["dispatch"], comp["dispatch"])
    comp["expert_fetch"] = _nonneg("expert_fetch_s", expert_fetch_s)
    comp["migration"] = np.maximum(mig_s - migration_overlap * attn, 0.0)
    try:
        shape = np.broadcast_shapes(*(v.shape for v in comp.values()))
    except ValueError:
        raise ValueError(
            f"predictor_overhead_s {pred.shape} / migration_bytes {mig_bytes.shape} do not "
            f"broadcast to the per-layer shape {attn.shape}"
        ) from None
    comp = {k: np.broadcast_to(comp[k], shape) for k in LAYER_COMPONENTS}

    non_moe = non_moe_times(spec, cluster, workload)
    non_moe_s = np.full(shape[:-1], sum(non_moe.values()))
    per_layer = sum(comp.values())
    total = per_layer.sum(axis=-1) + non_moe_s
    balanced_total = sum(balanced.values()).sum(axis=-1) + non_moe_s
    balanced_total = np.broadcast_to(balanced_total, total.shape)
    try:
        dropped = np.broadcast_to(dropped, total.shape)
    except ValueError:
        raise ValueError(
            f"dropped_tokens {dropped.shape} does not broadcast to the sweep shape {total.shape}"
        ) from None
    return CostBreakdown(
        components=comp,
        per_layer_s=per_layer,
        non_moe=non_moe,
        non_moe_s=non_moe_s,
        total_s=total,
        tokens_per_s=workload.tokens_per_step / total,
        balanced_total_s=balanced_total,
        dropped_tokens=dropped,
    )
