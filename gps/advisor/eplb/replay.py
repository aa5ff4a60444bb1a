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


def dispatch_balanced_ratio(
    plan: Plan, loads: np.ndarray, *, passes: int = 1, chunk_steps: int = 128
) -> np.ndarray:
    """``[S, L]`` busiest-GPU / mean load when each batch assigns a replicated expert's copies
    over its replicas' GPUs to even out the GPUs (an LPLB-style per-batch assignment).

    LPLB solves a min-max linear program per layer and batch; this is coordinate descent on
    the same problem: start from the even split (:func:`load_ratio`, a feasible point), then
    ``passes`` sweeps over the replicated experts (most replicas first), each re-pouring one
    expert's copies onto its holders' GPUs given every other copy (water-filling: the lowest
    GPUs fill first). A re-pour never raises the busiest GPU, so the result is never above the
    even split, and it approaches the LP optimum from above (not always reaching it).
    Single-replica experts stay where they are. Steps are processed ``chunk_steps`` at a time.
    """
    loads = np.asarray(loads, dtype=float)
    if passes < 0:
        raise ValueError(f"passes: {passes} < 0")
    se = plan.slot_expert
    nl, g, _ = se.shape
    counts = plan.replica_counts()  # [L, E]
    per_gpu = plan.expert_gpu_counts()  # [L, G, E] replicas of each expert on each GPU
    multi = [np.flatnonzero(counts[layer] > 1) for layer in range(nl)]
    m = max((len(x) for x in multi), default=0)
    even = load_ratio(plan, loads)
    if m == 0 or passes == 0:
        return even
    cmax = int((per_gpu > 0).sum(axis=1).max())
    ex = np.full((nl, m), -1, dtype=np.int64)
    hold = np.full((nl, m, cmax), -1, dtype=np.int64)
    share = np.zeros((nl, m, cmax))  # the even split's share of each holder
    for layer, experts in enumerate(multi):
        order = experts[np.argsort(-counts[layer, experts], kind="stable")]
        ex[layer, : order.size] = order
        for j, x in enumerate(order):
            hs = np.flatnonzero(per_gpu[layer, :, x])
            hold[layer, j, : hs.size] = hs
            share[layer, j, : hs.size] = per_gpu[layer, hs, x] / counts[layer, x]
    per_replica = loads / np.maximum(counts, 1)[None]
    out = np.empty(loads.shape[:2])
    for a in range(0, loads.shape[0], max(chunk_steps, 1)):
        rows = slice(a, a + chunk_steps)
        gpu = np.concatenate([part for _, part in slot_gather(plan, per_replica[rows])])
        _pour(gpu, loads[rows], ex, hold, share, passes)
        mean = np.maximum(loads[rows].sum(axis=-1) / g, 1e-300)
        out[rows] = gpu.max(axis=-1) / mean
    return out


def _pour(
    gpu: np.ndarray,
    loads: np.ndarray,
    ex: np.ndarray,
    hold: np.ndarray,
    share: np.ndarray,
    passes: int,
) -> None:
    """Coordinate descent of ``dispatch_balanced_ratio`` on ``gpu [S, L, G]`` copies (updated in
    place), starting from the even split; ``ex [L, m]`` replicated experts (``-1``: none),
    ``hold [L, m, C]`` their holder GPUs (``-1``: none), ``share [L, m, C]`` the even split."""
    s, nl, g = gpu.shape
    m, cmax = hold.shape[1:]
    flat = gpu.reshape(s, nl * g)
    base = (np.arange(nl) * g)[:, None]
    ranks = np.arange(1, cmax + 1)
    load_flat = loads.reshape(s, -1)
    alloc = []  # per expert j: [S, L, C] copies on each holder
    weights = []
    for j in range(m):
        ok = ex[:, j] >= 0
        idx = np.arange(nl) * loads.shape[2] + np.maximum(ex[:, j], 0)
        w = np.take(load_flat, idx, axis=1) * ok  # [S, L]
        weights.append(w)
        alloc.append(w[..., None] * share[None, :, j, :])
    for _ in range(passes):
        for j in range(m):
            h = hold[:, j, :]  # [L, C]
            present = (h >= 0) & (ex[:, j] >= 0)[:, None]
            if not present.any():
                continue
            cols = base + np.maximum(h, 0)  # [L, C]
            lev = np.take(flat, cols.ravel(), axis=1).reshape(s, nl, cmax) - alloc[j]
            lev = np.where(present, lev, np.inf)
            srt = np.sort(lev, axis=-1)
            finite = np.isfinite(srt)
            prefix = np.cumsum(np.where(finite, srt, 0.0), axis=-1)
            lam = (weights[j][..., None] + prefix) / ranks
            valid = finite & (lam >= srt)
            pick = cmax - 1 - np.argmax(valid[..., ::-1], axis=-1)
            level = np.take_along_axis(lam, pick[..., None], axis=-1)
            new = np.where(present, np.maximum(level - lev, 0.0), 0.0)  # [S, L, C]
            flat[:, cols[present]] += (new - alloc[j])[:, present]
            alloc[j] = new
