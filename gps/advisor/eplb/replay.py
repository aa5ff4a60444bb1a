"""Replaying loads on placements: what each step's busiest GPU carries.

A placement (:class:`~gps.plans.plan.Plan`, ``slot_expert [L, G, R]``) and a step's loads
``[L, E]`` give each GPU's copies; the cost model sees a placement through each MoE layer's
busiest-GPU / mean load ratio (``gps.advisor.eplb.pricing``). Two dispatch rules:

* :func:`load_ratio`: a replicated expert's copies split evenly over its replicas (the
  engines' static dispatch, on average);
* :func:`dispatch_balanced_ratio`: each batch sends a replicated expert's copies to its
  least-loaded replicas (water-filling), an LPLB-style per-batch assignment.

Shapes: ``S`` steps, ``L`` MoE layers, ``E`` experts, ``G`` GPUs, ``R`` slots per GPU.
Units: token copies; ratios are dimensionless.
"""

from __future__ import annotations

import numpy as np

from gps.plans.plan import Plan


def slot_gather(
    plan: Plan, values: np.ndarray, weight: np.ndarray | None = None, chunk_elements: int = 1 << 23
):
    """Yield ``(rows, gpu [n, L, G])``: the sum over each GPU's slots of ``values [S, L, E]``
    (per replica) at the slot's expert, times ``weight [L, G, R]`` (default: occupied slots),
    in chunks of steps (one flat ``np.take`` per slot index ``r``)."""
    se = plan.slot_expert
    nl, g, r = se.shape
    e = plan.num_experts
    idx = np.arange(nl)[:, None, None] * e + np.maximum(se, 0)  # [L, G, R]
    w = (se >= 0).astype(float) if weight is None else weight * (se >= 0)
    plain = bool((w == 1.0).all())
    s = values.shape[0]
    step = max(1, chunk_elements // (nl * g))
    for a in range(0, s, step):
        flat = values[a : a + step].reshape(-1, nl * e)
        acc = np.zeros((flat.shape[0], nl * g))
        for k in range(r):
            part = np.take(flat, idx[:, :, k].ravel(), axis=1)
            acc += part if plain else part * w[:, :, k].ravel()
        yield slice(a, a + step), acc.reshape(-1, nl, g)


def load_ratio(plan: Plan, loads: np.ndarray) -> np.ndarray:
    """``[S, L]`` busiest-GPU / mean load of ``loads [S, L, E]`` on ``plan`` (copies split
    evenly over an expert's replicas, as the engines' static dispatch does on average)."""
    loads = np.asarray(loads, dtype=float)
    g = plan.num_gpus
    per_replica = loads / np.maximum(plan.replica_counts(), 1)[None]
    mean = np.maximum(loads.sum(axis=-1) / g, 1e-300)
    out = np.empty(loads.shape[:2])
    for rows, gpu in slot_gather(plan, per_replica):
        out[rows] = gpu.max(axis=-1) / mean[rows]
    return out


def dispatch_balanced_ratio(plan: Plan, loads: np.ndarray) -> np.ndarray:
    """``[S, L]`` busiest-GPU / mean load when each batch sends a replicated expert's copies
    to its least-loaded replicas (water-filling, replicated experts with the most replicas
    first; single-replica experts stay where they are): a greedy stand-in for LPLB's
    per-batch linear program (never above :func:`load_ratio`'s even split for one expert, not
    always the LP optimum)."""
    loads = np.asarray(loads, dtype=float)
    se = plan.slot_expert
    nl, g, _ = se.shape
    counts = plan.replica_counts()  # [L, E]
    single = counts == 1
    single_slot = np.take_along_axis(single, np.maximum(se, 0).reshape(nl, -1), 1)
    s = loads.shape[0]
    gpu = np.empty((s, nl, g))
    for rows, part in slot_gather(plan, loads, single_slot.reshape(se.shape).astype(float)):
        gpu[rows] = part
    mean = np.maximum(loads.sum(axis=-1) / g, 1e-300)
    holders = plan.expert_gpu_counts() > 0  # [L, G, E]
    multi = [np.flatnonzero(~single[layer]) for layer in range(nl)]
    m = max((len(x) for x in multi), default=0)
    if m == 0:
        return gpu.max(axis=-1) / mean
    cmax = int(counts.max())
    ex = np.full((nl, m), -1, dtype=np.int64)
    hold = np.full((nl, m, cmax), -1, dtype=np.int64)
    for layer, experts in enumerate(multi):
        order = experts[np.argsort(-counts[layer, experts], kind="stable")]
        ex[layer, : order.size] = order
        gpus = [np.flatnonzero(holders[layer, :, x]) for x in order]
        for j, hs in enumerate(gpus):
            hold[layer, j, : hs.size] = hs
    flat = gpu.reshape(s, nl * g)
    base_idx = (np.arange(nl) * g)[:, None]
    c = np.arange(1, cmax + 1)
    load_flat = loads.reshape(s, -1)
    for j in range(m):
        e_j = ex[:, j]  # [L]
        ok = e_j >= 0
        w = np.take(load_flat, np.arange(nl) * loads.shape[2] + np.maximum(e_j, 0), axis=1)
        w = w * ok  # [S, L]
        h = hold[:, j, :]  # [L, C]
        present = (h >= 0) & ok[:, None]
        cols = (base_idx + np.maximum(h, 0)).ravel()
        lev = np.where(present, np.take(flat, cols, axis=1).reshape(s, nl, cmax), np.inf)
        a = np.sort(lev, axis=-1)  # [S, L, C]
        finite = np.isfinite(a)
        prefix = np.cumsum(np.where(finite, a, 0.0), axis=-1)
        lam = (w[..., None] + prefix) / c
        valid = finite & (lam >= a)
        pick = cmax - 1 - np.argmax(valid[..., ::-1], axis=-1)
        level = np.take_along_axis(lam, pick[..., None], axis=-1)
        add = np.where(present, np.maximum(level - lev, 0.0), 0.0)  # [S, L, C]
        for col in range(cmax):
            rows = present[:, col]
            flat[:, (base_idx[:, 0] + h[:, col])[rows]] += add[:, rows, col]
    return gpu.max(axis=-1) / mean
