"""Price a :class:`Routed` strategy with the cost model and summarise it for ``results.json``.

Every held-out batch is one sweep point of ``gps.cost.batch_cost`` (vectorised over ``N``);
a strategy's figures are means over those batches.
"""

from __future__ import annotations

import numpy as np

from gps.advisor.strategies import Routed
from gps.cost.attention import attention_time
from gps.cost.e2e import CostBreakdown, batch_cost
from gps.cost.token_mechanisms import (
    NONE,
    Mechanisms,
    direct_dispatch_s,
    expert_fetch_s,
    fetch_bytes,
    resident_slots,
)
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.plans import expert_weight_bytes
from gps.workload import Workload
from predictors.base import layer_overhead_s
from predictors.evaluate import overhead_summary


def routed_inputs(
    r: Routed,
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    *,
    mechanisms: Mechanisms = NONE,
    fetch_overlap: float = 1.0,
) -> dict[str, np.ndarray]:
    """``batch_cost`` keyword arguments for ``r``'s routing under ``mechanisms``:
    ``slot_tokens``, ``traffic_bytes``, ``dispatch_s`` (direct dispatch, else ``None``) and
    ``expert_fetch_s`` (``gps.cost.token_mechanisms``; the token-level ones apply only to a
    strategy with ``token_routing``)."""
    m, tr = mechanisms, r.token_routing
    slot_tokens, traffic, dispatch = r.sim.slot_tokens, r.sim.traffic_bytes, None
    attn = attention_time(spec, cluster, workload)
    if tr is not None and (m.replica_choice or m.direct_dispatch):
        hit, wrong = (
            (tr.hit_local, tr.wrong_local) if m.replica_choice else (tr.hit_split, tr.wrong_split)
        )
        slot_tokens = hit.slot_tokens + tr.miss.slot_tokens
        traffic = hit.traffic_bytes + tr.miss.traffic_bytes
        if m.direct_dispatch:
            early = hit.traffic_bytes + wrong.traffic_bytes
            dispatch = direct_dispatch_s(early, tr.miss.traffic_bytes, attn, cluster,
                                         m.direct_dispatch_overlap)  # fmt: skip
    fetch = np.zeros(slot_tokens.shape[:-2])
    if m.resident_experts < 1.0:
        busy = slot_tokens > 0
        if tr is not None and m.prefetch:
            prefetched = tr.predicted_busy
        elif r.plans is not None:
            prefetched = np.stack([p.slot_expert >= 0 for p in r.plans])
        else:
            prefetched = busy
        early_b, late_b = fetch_bytes(busy, prefetched,
                                      resident_slots(slot_tokens.shape[-1], m.resident_experts),
                                      expert_weight_bytes(spec))  # fmt: skip
        fetch = expert_fetch_s(early_b, late_b, attn, m.fetch_link, fetch_overlap)
    return {"slot_tokens": slot_tokens, "traffic_bytes": traffic, "dispatch_s": dispatch,
            "expert_fetch_s": fetch}  # fmt: skip


def price_routed(
    r: Routed,
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    *,
    migration_overlap: float,
    mechanisms: Mechanisms = NONE,
) -> CostBreakdown:
    """``batch_cost`` over the ``N`` held-out batches of ``r``; sweep shape ``[N]``.
    ``mechanisms``: the token-level mechanisms (``routed_inputs``); prefetch hides behind
    attention up to ``migration_overlap``, as replica copies do."""
    moe_layers = r.sim.slot_tokens.shape[-3]
    overhead, critical = np.zeros(moe_layers), True
    if r.cost is not None:
        overhead = layer_overhead_s(r.cost, cluster.gpu, workload.tokens_per_step, moe_layers)
        critical = r.cost.on_critical_path
    inputs = routed_inputs(r, spec, cluster, workload, mechanisms=mechanisms,
                           fetch_overlap=migration_overlap)  # fmt: skip
    return batch_cost(
        spec, cluster, workload, **inputs,
        predictor_overhead_s=overhead, predictor_on_critical_path=critical,
        migration_bytes=r.migration_bytes, migration_overlap=migration_overlap,
        migration_s=r.migration_s, dropped_tokens=r.sim.dropped.sum(axis=-1),
    )  # fmt: skip


def busiest_layer(baseline: Routed) -> int:
    """The MoE layer whose per-GPU load is most uneven under ``baseline`` (mean over batches of
    max/mean GPU tokens); the report plots per-GPU load at this layer."""
    gpu = baseline.sim.slot_tokens.sum(axis=-1)  # [N, L, G]
    ratio = gpu.max(axis=-1) / np.maximum(gpu.mean(axis=-1), 1e-12)
    return int(ratio.mean(axis=0).argmax())


def summarise(
    r: Routed, cost: CostBreakdown, baseline_s: float, cluster: Cluster, tokens: int, layer: int
) -> dict:
    """One entry of ``results.json``'s ``strategies`` list (schema: ``docs/results.md``)."""
    e2e = float(cost.total_s.mean())
    breakdown = {k: float(v.sum(axis=-1).mean()) for k, v in cost.components.items()}
    breakdown["non_moe"] = float(cost.non_moe_s.mean())
    routed = r.sim.routed.sum(axis=-1)
    overhead = None
    if r.cost is not None:
        overhead = {
            **overhead_summary(r.cost, cluster.gpu, tokens), "per": r.cost.per,
            "note": r.cost.note, "measured_fit_s": r.wall_s.get("fit_s"),
            "measured_predict_s": r.wall_s.get("predict_s"),
        }  # fmt: skip
    return {
        "name": r.name,
        "family": r.family,
        "predictor": r.predictor,
        "synthetic": r.synthetic,
        "e2e_time_s": e2e,
        "tokens_per_s": tokens / e2e,
        "speedup_vs_baseline": baseline_s / e2e,
        "balanced_time_s": float(cost.balanced_total_s.mean()),
        "straggler_s": float((cost.total_s - cost.balanced_total_s).mean()),
        "breakdown_s": breakdown,
        "accuracy": r.accuracy or None,
        "overhead": overhead,
        "dropped_token_fraction": float((r.sim.dropped.sum(-1) / np.maximum(routed, 1)).mean()),
        "rerouted_token_fraction": float((r.sim.rerouted.sum(-1) / np.maximum(routed, 1)).mean()),
        "migration_bytes_per_step": float(r.migration_bytes.sum(axis=-1).mean()),
        "migration_bytes_per_gpu": (
            r.migration_bytes_per_gpu.mean(axis=0).tolist()
            if r.migration_bytes_per_gpu is not None
            else np.zeros((r.sim.slot_tokens.shape[-3], cluster.num_gpus)).tolist()
        ),
        "gpu_load": r.sim.slot_tokens[:, layer].sum(axis=-1).mean(axis=0).tolist(),
        "notes": r.notes,
    }
