"""Price a :class:`Routed` strategy with the cost model and summarise it for ``results.json``.

Every held-out batch is one sweep point of ``gps.cost.batch_cost`` (vectorised over ``N``);
a strategy's figures are means over those batches.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gps.advisor.ledger import Ledger
from gps.advisor.strategies import Routed
from gps.cost.e2e import CostBreakdown, batch_cost
from gps.cost.step import StepExtras, StepRouting
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import Workload
from predictors.base import layer_overhead_s
from predictors.evaluate import overhead_summary


def routed_extras(
    r: Routed,
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    ledger: Ledger,
    *,
    predictor_critical: bool = False,
    hide_migration: bool = False,
) -> StepExtras:
    """``r``'s ``StepExtras`` under ``ledger`` (``gps.advisor.ledger``): its predictor's time
    and placement, its replica copies on each GPU port, and its belief for the pre-gate
    mechanisms. ``predictor_critical``: every predictor on the critical path;
    ``hide_migration``: replica copies cost no time (both: the MoE-GPS paper's assumptions)."""
    moe_layers = r.sim.slot_tokens.shape[-3]
    overhead, critical = np.zeros(moe_layers), True
    if r.cost is not None:
        overhead = layer_overhead_s(r.cost, cluster.gpu, workload.tokens_per_step, moe_layers)
        critical = r.cost.on_critical_path or predictor_critical
    migration = {} if hide_migration else r.migration_s
    return ledger.extras(spec, r.sim.slot_tokens, r.assigned, r.belief, migration, overhead,
                         critical)  # fmt: skip


def price_routed(
    r: Routed,
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    ledger: Ledger,
    *,
    routing: StepRouting | None = None,
    extras: StepExtras | None = None,
) -> CostBreakdown:
    """``batch_cost`` over the ``N`` held-out batches of ``r``; sweep shape ``[N]``.

    ``routing`` / ``extras``: already built (and altered, ``gps.advisor.assumptions``);
    default ``r``'s simulated routing and ``routed_extras``."""
    routing = StepRouting.of(r.sim) if routing is None else routing
    if extras is None:
        extras = routed_extras(r, spec, cluster, workload, ledger)
    cost = batch_cost(spec, cluster, workload, routing, extras, engine=ledger.engine,
                      parallel=ledger.parallel)  # fmt: skip
    return with_rebalance(cost, r.rebalance_s)


def with_rebalance(cost: CostBreakdown, rebalance_s: float) -> CostBreakdown:
    """``cost`` with ``rebalance_s`` seconds added to every step (a periodic rebalance's stall
    amortised over its interval, ``Routed.rebalance_s``), booked as ``migration`` spread
    evenly over the MoE layers; the balanced bound is unchanged (no migration in it)."""
    if rebalance_s == 0.0:
        return cost
    if not np.isfinite(rebalance_s) or rebalance_s < 0:
        raise ValueError(f"rebalance_s={rebalance_s}: must be finite and >= 0")
    per_layer = rebalance_s / cost.per_layer_s.shape[-1]
    total = cost.total_s + rebalance_s
    return dataclasses.replace(
        cost,
        components={**cost.components, "migration": cost.components["migration"] + per_layer},
        per_layer_s=cost.per_layer_s + per_layer,
        total_s=total,
        tokens_per_s=cost.tokens_per_s * cost.total_s / total,
    )


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
    breakdown["engine"] = float(cost.engine_s.mean())
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
