"""MoETuner-style ILP placement (Go & Mahajan, arXiv 2502.06643): balance token load and cut
inter-GPU traffic implied by layer-to-layer routing dependency.

Every expert gets exactly one GPU per layer (no replicas), at most ``R`` experts per GPU.
Objective (tokens): ``sum_l max_g load_{l,g} + lambda * sum_l sum_{i,j} c[l,i,j] *
[gpu_l(i) != gpu_{l+1}(j)]`` with ``c`` the transition counts (a token with expert ``i`` at
layer ``l`` and ``j`` at ``l+1``).

MILP (HiGHS through ``highspy``, ``milp_rows.solve``), all layers jointly:

* ``x[l,e,g]`` binary: expert ``e`` of layer ``l`` on GPU ``g``; ``sum_g x = 1``,
  ``sum_e x <= R``.
* ``z[l] >= sum_e load[l,e] * x[l,e,g]`` for every ``g`` (the layer's straggler load).
* co-location ``w[p,g] in [0,1]`` for every kept transition pair ``p = (l,i,j)``:
  ``w <= x[l,i,g]``, ``w <= x[l+1,j,g]``, and the tightening ``sum_j w[(l,i,j),g] <= R *
  x[l,i,g]``, ``sum_i w[(l,i,j),g] <= R * x[l+1,j,g]`` (a GPU holds at most ``R`` experts),
  which makes the LP relaxation an assignment polytope for ``R = 1``.
* minimise ``sum_l z[l] - lambda * sum_p c_p sum_g w[p,g]`` (+ the constant ``lambda *
  sum c``). Symmetry break: layer 0's heaviest expert sits on GPU 0.

Solve order (never silent; ``ILPResult.method`` says which answer was returned): the heuristic
runs first. When it is within ``mip_gap`` of ``placement_bound`` (always for one slot per GPU,
where the bound is exact) it is ``bound-optimal`` and no MILP is built. Otherwise HiGHS solves
the MILP warm-started from the heuristic (``highspy``: the heuristic is its first incumbent)
and stops at ``mip_gap`` (``milp-optimal``) or ``time_limit_s``; the better of its incumbent
and the heuristic is returned (``milp-timelimit`` if the MILP's, ``heuristic-fallback``
otherwise, also when the model would exceed ``max_variables``). The heuristic: layer by layer,
experts heaviest first to the GPU with room minimising the increase of ``z_l + lambda *
traffic`` to the previous layer, then best-improvement pairwise swaps (empty slots included)
per layer on the exact objective, sweeping over layers until no swap improves or its time
budget is spent. ``gap`` is relative to the better of the MILP's dual bound and
``placement_bound`` (``gap_bound`` says which).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from gps.plans.duplication import pack_balanced
from gps.plans.milp_rows import (
    ConstraintRows,
    assignment,
    better_of,
    dual_bound,
    relative_gap,
    solve,
)
from gps.plans.plan import Plan, check_load, check_slots

METHODS = ("bound-optimal", "milp-optimal", "milp-timelimit", "heuristic-fallback")
_CHUNK = 1 << 22  # bincount index elements per chunk in transition_counts


@dataclass(frozen=True)
class ILPResult:
    """Outcome of ``ilp_placement``.

    Attributes:
        plan: ``Plan`` (one replica per expert, ``R`` slots per GPU).
        method: one of ``METHODS`` (module docstring).
        gap: relative gap ``(objective - bound) / objective`` (0 when optimal).
        gap_bound: ``"milp-dual"`` or ``"combinatorial"`` (``placement_bound``): which bound
            ``gap`` uses.
        objective: tokens, ``sum_l max_load + traffic_weight * traffic_tokens``.
        bound: the lower bound used for ``gap``.
        max_load: ``[L]`` max GPU tokens per layer.
        traffic_tokens: transition tokens whose two experts sit on different GPUs.
        traffic_weight: ``lambda`` used.
        solve_time_s: wall seconds (heuristic + bound + MILP).
        milp_gap: HiGHS's ``mip_gap`` on its internal (scaled, constant-free) objective (NaN if no
            MILP ran or no incumbent; with ``max_pairs`` the model is reduced, so it says
            nothing about the full objective).
        message: why this method; solver status.
    """

    plan: Plan
    method: str
    gap: float
    gap_bound: str
    objective: float
    bound: float
    max_load: np.ndarray
    traffic_tokens: float
    traffic_weight: float
    solve_time_s: float
    milp_gap: float
    message: str


def transition_counts(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """``[L-1, E, E]`` int64: tokens with expert ``i`` at layer ``l`` and ``j`` at ``l+1``
    (each of a token's ``k x k`` expert pairs counts once; ids ``< 0`` are skipped).

    Args:
        experts: ``[T, L, k]`` expert ids (a ``TokenTrace.experts``).
        num_experts: ``E``.
    """
    ids = np.asarray(experts)
    if ids.ndim != 3:
        raise ValueError(f"experts: expected [T, L, k], got shape {ids.shape}")
    t, lay, k = ids.shape
    e = int(num_experts)
    out = np.zeros((max(lay - 1, 0) * e * e + 1,), dtype=np.int64)
    if lay < 2 or t == 0:
        return out[:-1].reshape(max(lay - 1, 0), e, e)
    step = max(1, _CHUNK // ((lay - 1) * k * k))
    base = (np.arange(lay - 1) * e * e)[None, :, None, None]
    for t0 in range(0, t, step):
        chunk = np.asarray(ids[t0 : t0 + step], dtype=np.int64)
        a, b = chunk[:, :-1, :, None], chunk[:, 1:, None, :]
        idx = np.where((a >= 0) & (b >= 0), base + a * e + b, out.size - 1)
        out += np.bincount(idx.ravel(), minlength=out.size)
    return out[:-1].reshape(lay - 1, e, e)


def placement_cost(
    assign: np.ndarray, load: np.ndarray, transitions: np.ndarray, num_gpus: int, weight: float
) -> tuple[np.ndarray, float, float]:
    """``(max_load [L], traffic_tokens, objective)`` of ``assign [L, E]`` (GPU per expert)."""
    nl, e = assign.shape
    gl = np.zeros((nl, num_gpus))
    np.add.at(gl, (np.repeat(np.arange(nl), e), assign.ravel()), load.ravel())
    max_load = gl.max(axis=1)
    cross = assign[:-1, :, None] != assign[1:, None, :]
    traffic = float((transitions * cross).sum())
    return max_load, traffic, float(max_load.sum() + weight * traffic)


def _check(load, transitions, num_gpus, slots_per_gpu):
    load = check_load(load)
    nl, e = load.shape
    r = -(-e // num_gpus) if slots_per_gpu is None and num_gpus >= 1 else slots_per_gpu
    check_slots(e, num_gpus, r)
    c = np.asarray(transitions, dtype=float)
    if c.shape != (nl - 1, e, e):
        raise ValueError(f"transitions: shape {c.shape}, expected [L-1, E, E] = {[nl - 1, e, e]}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("transitions: counts must be finite and >= 0")
    return load, c, int(r)


def _kept_pairs(c: np.ndarray, max_pairs: int | None) -> tuple[np.ndarray, ...]:
    """``(layer, i, j, count)`` of the transition pairs the MILP models (largest first)."""
    li, ii, jj = np.nonzero(c > 0)
    cnt = c[li, ii, jj]
    if max_pairs is not None:
        keep = np.zeros(li.size, dtype=bool)
        order = np.lexsort((-cnt, li))
        first = np.searchsorted(li[order], li[order], side="left")
        keep[order[(np.arange(li.size) - first) < max_pairs]] = True
        li, ii, jj, cnt = li[keep], ii[keep], jj[keep], cnt[keep]
    return li, ii, jj, cnt


def placement_bound(
    load: np.ndarray,
    transitions: np.ndarray,
    num_gpus: int,
    slots_per_gpu: int | None,
    weight: float,
) -> float:
    """A lower bound on ``placement_cost``'s objective over every placement (tokens).

    ``sum_l max(sum_e load / G, max_e load) + weight * (sum c - sum_l M_l)``: the straggler
    term and the traffic term bounded apart. ``M_l`` bounds the transition tokens layers ``l``
    and ``l + 1`` can co-locate: a GPU holds at most ``R`` experts, so each expert shares a GPU
    with at most ``R`` experts of the next layer. For ``R = 1`` that is a matching, and ``M_l``
    is the maximum-weight one (``linear_sum_assignment``); the bound is then exact, because
    the straggler term is the hottest expert whatever the placement, and each layer's
    placement can realise any matching with the previous one. For ``R > 1``, ``M_l`` is the
    smaller of the sums over experts of their ``R`` largest counts, by row and by column.

    Args:
        load: ``[L, E]``; transitions: ``[L-1, E, E]``; ``G``, ``R`` (default ``ceil(E/G)``);
            ``weight``: ``lambda``.
    """
    load, c, slots_per_gpu = _check(load, transitions, num_gpus, slots_per_gpu)
    straggler = float(np.maximum(load.sum(axis=1) / num_gpus, load.max(axis=1)).sum())
    if weight == 0 or c.size == 0:
        return straggler
    if slots_per_gpu == 1:
        kept = sum(c[i][linear_sum_assignment(c[i], maximize=True)].sum() for i in range(len(c)))
    else:
        r = min(slots_per_gpu, c.shape[-1])
        by_row = -np.partition(-c, r - 1, axis=2)[..., :r].sum(axis=(1, 2))
        by_col = -np.partition(-c, r - 1, axis=1)[:, :r].sum(axis=(1, 2))
        kept = float(np.minimum(by_row, by_col).sum())
    return straggler + weight * float(c.sum() - kept)


def _warm_start(assign: np.ndarray, load: np.ndarray, pairs: tuple, g: int) -> np.ndarray:
    """The MILP's variables ``[x, z, w]`` at placement ``assign [L, E]``, its GPUs relabelled
    so that layer 0's heaviest expert sits on GPU 0 (the model's symmetry break)."""
    nl, e = assign.shape
    li, ii, jj, _ = pairs
    first = int(assign[0, int(np.argmax(load[0]))])
    perm = np.arange(g)
    perm[[0, first]] = perm[[first, 0]]  # GPUs are interchangeable
    x = np.zeros((nl, e, g))
    x[np.arange(nl)[:, None], np.arange(e), perm[assign]] = 1.0
    z = np.einsum("le,leg->lg", load, x).max(axis=1)
    w = x[li, ii] * x[li + 1, jj]  # [P, G]: both experts of pair p on g
    return np.concatenate([x.ravel(), z, w.ravel()])


def _milp_model(load, g, r, weight, pairs) -> tuple:
    """``(cost, rows, integrality, lb, ub, scale)``: the MILP of the module docstring over
    ``[x, z, w]``, its objective in units of ``scale`` tokens (the constant left out)."""
    nl, e = load.shape
    li, ii, jj, cnt = pairs
    p = li.size
    scale = max(load.sum() / nl / g, 1e-12)  # typical per-layer GPU load: objective ~ O(L)
    nx, nz, nw = nl * e * g, nl, p * g
    xi = np.arange(nx).reshape(nl, e, g)
    zi = nx + np.arange(nl)
    wi = nx + nz + np.arange(nw).reshape(p, g)
    cost = np.zeros(nx + nz + nw)
    cost[zi] = 1.0 / scale
    cost[wi] = -(weight * cnt / scale)[:, None]
    rows = ConstraintRows()

    # each expert on exactly one GPU: row (l, e)
    rows.add(np.broadcast_to(np.arange(nl * e).reshape(nl, e, 1), xi.shape), xi, 1.0, 1, 1, nl * e)
    # at most R experts per GPU: row (l, g)
    rlg = np.broadcast_to((np.arange(nl)[:, None, None] * g + np.arange(g)), xi.shape)
    rows.add(rlg, xi, 1.0, -np.inf, r, nl * g)
    # load: sum_e load x - z_l <= 0, row (l, g)
    z_of_row = np.repeat(zi, g).reshape(nl, 1, g)
    rows.add(
        np.concatenate([rlg, np.arange(nl * g).reshape(nl, 1, g)], axis=1),
        np.concatenate([xi, z_of_row], axis=1),
        np.concatenate([np.broadcast_to(load[:, :, None], xi.shape), -np.ones((nl, 1, g))], 1),
        -np.inf, 0.0, nl * g,
    )  # fmt: skip
    if p:
        gg = np.arange(g)[None, :]
        rpg = np.arange(p * g).reshape(p, g)
        for layer_of, exp in ((li, ii), (li + 1, jj)):  # w - x <= 0, row (p, g)
            x_of = xi[layer_of[:, None], exp[:, None], gg]
            rows.add(np.stack([rpg, rpg]), np.stack([wi, x_of]),
                     np.stack([1.0, -1.0])[:, None, None], -np.inf, 0.0, p * g)  # fmt: skip
        for layer_of, exp in ((li, ii), (li + 1, jj)):  # sum w - R x <= 0, row (layer, e, g)
            grp = (layer_of * e + exp)[:, None] * g + gg  # index of x[layer, e, g]
            used, inv = np.unique(grp, return_inverse=True)
            rows.add(
                np.concatenate([inv.ravel(), np.arange(used.size)]),
                np.concatenate([wi.ravel(), xi.ravel()[used]]),
                np.concatenate([np.ones(p * g), np.full(used.size, -float(r))]),
                -np.inf, 0.0, used.size,
            )  # fmt: skip
    lb = np.zeros(nx + nz + nw)
    ub = np.ones(nx + nz + nw)
    ub[zi] = np.inf
    lb[zi] = np.maximum(load.max(axis=1), load.sum(axis=1) / g)  # valid: experts are whole
    heavy = int(np.argmax(load[0]))
    lb[xi[0, heavy, 0]] = 1.0  # symmetry break: GPUs are interchangeable
    integrality = np.zeros(nx + nz + nw)
    integrality[:nx] = 1
    return cost, rows, integrality, lb, ub, scale


def _solve_milp(load, c, g, r, weight, pairs, time_limit_s, mip_gap, start):
    """Build and solve the MILP warm-started from placement ``start [L, E]``; ``(assign [L, E]
    or None, dual bound in objective tokens or None, status, message, HiGHS's relative gap)``."""
    nl, e = load.shape
    cost, rows, integrality, lb, ub, scale = _milp_model(load, g, r, weight, pairs)
    x0 = _warm_start(start, load, pairs, g)
    res = solve(cost, rows, integrality, lb, ub, time_limit_s, mip_gap, start=x0)
    bound = dual_bound(res, scale, weight * float(c.sum()))
    gap = float("nan") if res.x is None else res.mip_gap
    warm = "heuristic passed as start" if res.start_passed else "start not passed"
    msg = f"{res.message} (HiGHS gap {gap:.3g}; {warm})"
    return assignment(res, nl * e * g, (nl, e, g)), bound, res.status, msg, gap


def _greedy_assign(load, c, g, r, weight) -> np.ndarray:
    """Layer-by-layer traffic-aware greedy (module docstring); ``[L, E]`` GPU per expert."""
    nl, e = load.shape
    assign = np.zeros((nl, e), dtype=np.int64)
    first = pack_balanced(load[:1], np.ones((1, e), dtype=np.int64), g, r)[0]
    gpus, slots = np.nonzero(first >= 0)
    assign[0, first[gpus, slots]] = gpus
    for layer in range(1, nl):
        prev = np.zeros((e, g))
        prev[np.arange(e), assign[layer - 1]] = 1.0
        inflow = c[layer - 1].T @ prev  # [E, G] tokens arriving at j from experts on g
        total_in = inflow.sum(axis=1)
        gl = np.zeros(g)
        used = np.zeros(g, dtype=np.int64)
        zmax = 0.0
        for j in np.argsort(-load[layer], kind="stable"):
            score = np.maximum(gl + load[layer, j] - zmax, 0.0) + weight * (total_in[j] - inflow[j])
            score[used >= r] = np.inf
            gpu = int(np.argmin(score))
            assign[layer, j] = gpu
            gl[gpu] += load[layer, j]
            used[gpu] += 1
            zmax = max(zmax, gl[gpu])
    return assign


def _assignment_chain(load, c, g, r) -> np.ndarray:
    """Layer 0 by LPT, then each layer by one linear assignment (Hungarian over the ``G*R``
    slots) maximising the transition tokens co-located with the previous layer's placement;
    ``[L, E]`` GPU per expert. Optimal for the traffic term alone when ``R = 1``."""
    nl, e = load.shape
    assign = np.zeros((nl, e), dtype=np.int64)
    first = pack_balanced(load[:1], np.ones((1, e), dtype=np.int64), g, r)[0]
    gpus, slots = np.nonzero(first >= 0)
    assign[0, first[gpus, slots]] = gpus
    slot_gpu = np.repeat(np.arange(g), r)
    for layer in range(1, nl):
        inflow = c[layer - 1].T @ np.eye(g)[assign[layer - 1]]  # [E, G]
        rows, cols = linear_sum_assignment(inflow[:, slot_gpu], maximize=True)
        assign[layer, rows] = slot_gpu[cols]
    return assign


def _local_search(assign, load, c, g, r, weight, deadline) -> np.ndarray:
    """Best-improvement pairwise swaps per layer (empty slots as zero-load phantom experts),
    sweeping over layers until no swap improves ``z_l + weight * traffic``."""
    nl, e = assign.shape
    n_items = g * r
    if g < 2:
        return assign
    idx = np.arange(n_items)
    for _sweep in range(50):
        changed = False
        for layer in range(nl):
            used = np.bincount(assign[layer], minlength=g)
            gpu_item = np.concatenate([assign[layer], np.repeat(np.arange(g), r - used)])
            w = np.concatenate([load[layer], np.zeros(n_items - e)])
            m = np.zeros((n_items, g))  # m[a, g]: transition tokens co-located if a sits on g
            if layer > 0:
                m[:e] += c[layer - 1].T @ np.eye(g)[assign[layer - 1]]
            if layer < nl - 1:
                m[:e] += c[layer] @ np.eye(g)[assign[layer + 1]]
            for _ in range(4 * n_items):
                if time.perf_counter() > deadline:
                    assign[layer] = gpu_item[:e]
                    return assign
                gl = np.bincount(gpu_item, weights=w, minlength=g)
                z = gl.max()
                top = np.argsort(-gl)[:3]
                v = np.r_[gl[top], np.zeros(3 - top.size)]
                top = np.r_[top, -np.ones(3 - top.size, dtype=np.int64)]
                ga, gb = gpu_item[:, None], gpu_item[None, :]
                ex0 = (ga == top[0]) | (gb == top[0])
                ex1 = (ga == top[1]) | (gb == top[1])
                rest = np.where(~ex0, v[0], np.where(~ex1, v[1], v[2]))  # max over other GPUs
                d = w[None, :] - w[:, None]  # load gained by gpu(a) when a <-> b
                new_z = np.maximum(rest, np.maximum(gl[ga] + d, gl[gb] - d))
                x = m[:, gpu_item]  # x[a, b] = m[a, gpu(b)]
                own = m[idx, gpu_item]
                saved = x + x.T - own[:, None] - own[None, :]
                delta = new_z - z - weight * saved
                delta[ga == gb] = np.inf
                delta[e:, e:] = np.inf  # phantom <-> phantom does nothing
                best = int(np.argmin(delta))
                if not delta.flat[best] < -1e-9 * max(z, 1.0):
                    break
                a, b = divmod(best, n_items)
                gpu_item[a], gpu_item[b] = gpu_item[b], gpu_item[a]
                changed = True
            assign[layer] = gpu_item[:e]
        if not changed:
            break
    return assign


def heuristic_placement(
    load: np.ndarray,
    transitions: np.ndarray,
    num_gpus: int,
    slots_per_gpu: int | None = None,
    *,
    traffic_weight: float | None = None,
    time_limit_s: float = 10.0,
) -> np.ndarray:
    """The documented fallback: traffic-aware greedy + pairwise-swap local search.

    Args:
        load: ``[L, E]``; transitions: ``[L-1, E, E]``; ``G``, ``R`` (default ``ceil(E/G)``).
        traffic_weight: ``lambda`` (default ``1/G``).
        time_limit_s: budget of the local search.

    Returns:
        ``[L, E]`` int64 GPU of every expert.
    """
    load, c, r = _check(load, transitions, num_gpus, slots_per_gpu)
    weight = 1.0 / num_gpus if traffic_weight is None else float(traffic_weight)
    deadline = time.perf_counter() + time_limit_s / 2
    best, best_obj = None, np.inf
    for start in (
        _assignment_chain(load, c, num_gpus, r),
        _greedy_assign(load, c, num_gpus, r, weight),
    ):
        found = _local_search(start, load, c, num_gpus, r, weight, deadline)
        obj = placement_cost(found, load, c, num_gpus, weight)[2]
        if obj < best_obj:
            best, best_obj = found, obj
        deadline = time.perf_counter() + time_limit_s / 2
    return best


def _to_plan(assign: np.ndarray, g: int, r: int, meta: dict) -> Plan:
    """``[L, E]`` GPU per expert -> ``Plan`` (a GPU's experts fill its slots in id order)."""
    nl, e = assign.shape
    order = np.argsort(assign, axis=1, kind="stable")  # experts grouped by GPU, id order
    gpu_sorted = np.take_along_axis(assign, order, 1)
    pos = np.broadcast_to(np.arange(e), (nl, e))
    new = np.ones((nl, e), dtype=bool)
    new[:, 1:] = gpu_sorted[:, 1:] != gpu_sorted[:, :-1]
    first = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    out = np.full((nl, g, r), -1, dtype=np.int64)
    out[np.arange(nl)[:, None], gpu_sorted, pos - first] = order
    return Plan(out, e, meta=meta)


def ilp_placement(
    load: np.ndarray,
    transitions: np.ndarray,
    num_gpus: int,
    slots_per_gpu: int | None = None,
    *,
    traffic_weight: float | None = None,
    time_limit_s: float = 60.0,
    mip_gap: float = 1e-6,
    max_pairs: int | None = None,
    max_variables: int = 2_000_000,
    heuristic_time_s: float = 10.0,
) -> ILPResult:
    """Joint expert placement over all layers (module docstring), solved with HiGHS (the
    advisor caches its placement: ``gps.advisor.strategies.ilp``).

    Args:
        load: ``[L, E]`` (predicted) tokens per expert.
        transitions: ``[L-1, E, E]`` transition counts (``transition_counts``).
        num_gpus: ``G``.
        slots_per_gpu: ``R`` (default ``ceil(E/G)``); ``G*R >= E``.
        traffic_weight: ``lambda`` tokens of straggler load one cross-GPU transition token is
            worth (default ``1/G``: the traffic is spread over ``G`` senders).
        time_limit_s: HiGHS time limit.
        mip_gap: relative gap at which the heuristic needs no MILP (``bound-optimal``) and at
            which HiGHS stops (``milp-optimal``).
        max_pairs: model at most this many transition pairs per layer pair (largest counts);
            the others still count in the reported objective. ``None`` = all.
        max_variables: above this model size the MILP is not built (heuristic fallback).
        heuristic_time_s: local-search budget of the heuristic (it runs first, and starts the
            MILP).

    Returns:
        ``ILPResult`` (``method``, ``gap`` and ``message`` say what was proven).
    """
    t0 = time.perf_counter()
    load, c, r = _check(load, transitions, num_gpus, slots_per_gpu)
    g = int(num_gpus)
    nl, e = load.shape
    if time_limit_s <= 0 or not 0 <= mip_gap < 1:
        raise ValueError(f"time_limit_s={time_limit_s} must be > 0, mip_gap={mip_gap} in [0, 1)")
    weight = 1.0 / g if traffic_weight is None else float(traffic_weight)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"traffic_weight: must be finite and >= 0, got {traffic_weight}")
    heur = heuristic_placement(
        load, c, g, r, traffic_weight=weight, time_limit_s=max(heuristic_time_s, 0.0)
    )
    h_obj = placement_cost(heur, load, c, g, weight)[2]
    lb = placement_bound(load, c, g, r, weight)
    pairs = _kept_pairs(c, max_pairs) if weight > 0 else _kept_pairs(c[:0], None)
    reduced = pairs[0].size < int((c > 0).sum()) and weight > 0
    n_vars = nl * e * g + nl + pairs[0].size * g
    assign, gap_bound, milp_gap = heur, "combinatorial", float("nan")
    if h_obj - lb <= mip_gap * h_obj + 1e-9 * max(h_obj, 1.0):  # + float rounding of the two
        method = "bound-optimal"
        msg = (f"heuristic {h_obj:.6g} within mip_gap={mip_gap:g} of the combinatorial bound "
               f"{lb:.6g}: MILP not needed")  # fmt: skip
    elif n_vars > max_variables:
        method = "heuristic-fallback"
        msg = f"MILP not built: {n_vars:,} variables > max_variables={max_variables:,}"
    else:
        found, bound, status, msg, milp_gap = _solve_milp(
            load, c, g, r, weight, pairs, time_limit_s, mip_gap, heur
        )
        msg = f"HiGHS status {status}: {msg}"
        if reduced:
            msg += f"; reduced model: {pairs[0].size} of {int((c > 0).sum())} transition pairs"
        elif bound is not None and bound > lb:
            gap_bound, lb = "milp-dual", bound
        if found is not None and status == 0 and not reduced:
            method, assign = "milp-optimal", found
        else:
            m_obj = np.inf if found is None else placement_cost(found, load, c, g, weight)[2]
            method, note, take = better_of(m_obj, h_obj)
            msg += note
            assign = heur if take else found
    max_load, traffic, obj = placement_cost(assign, load, c, g, weight)
    gap = relative_gap(obj, lb)
    meta = {"planner": "ilp", "method": method, "gap": gap}
    return ILPResult(
        plan=_to_plan(assign, g, r, meta),
        method=method,
        gap=float(gap),
        gap_bound=gap_bound,
        objective=obj,
        bound=float(lb),
        max_load=max_load,
        traffic_tokens=traffic,
        traffic_weight=weight,
        solve_time_s=time.perf_counter() - t0,
        milp_gap=float(milp_gap),
        message=msg,
    )
