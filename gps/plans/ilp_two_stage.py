"""MoETuner's two-stage ILP placement (Go & Mahajan, arXiv 2502.06643: "ILP1" clusters each
layer's experts, "ILP2" places the clusters on GPUs), beside the one-stage joint ILP of
``gps.plans.ilp``.

Stage 1, **grouping** (per layer, independent): split the ``E`` experts of layer ``l`` into
``C = G`` groups of ``floor(E/C)`` or ``ceil(E/C)`` experts, minimising
``sum_c |load_{l,c} - mean_l|`` with ``load_{l,c}`` the tokens of group ``c`` and ``mean_l =
sum_e load_{l,e} / C``. MILP: ``y[l,e,c]`` binary, ``sum_c y = 1``, group sizes bounded,
``d[l,c] >= +-(sum_e load y - mean)``, minimise ``sum d``; symmetry break: each layer's heaviest
expert is in group 0 (groups are interchangeable in this stage).

Stage 2, **mapping** (all layers jointly): a bijection from groups to GPUs per layer,
``a[l,c,g]`` binary. With ``T[l,c,c']`` the layer-``l`` -> ``l+1`` transition tokens between
group ``c`` and group ``c'`` (sum of ``transitions[l,i,j]`` over their experts), the tokens on
link ``g -> h`` are ``M_l[g,h] = sum_{c,c'} T[l,c,c'] a[l,c,g] a[l+1,c',h]`` and stage 2
minimises the worst bandwidth-weighted link, summed over layer pairs:
``sum_l max_{g != h} M_l[g,h] * b_max / B[g,h]`` (units: token copies at the fastest link's
rate; ``B`` bytes/s per direction, ``b_max`` its largest off-diagonal entry). The product is
linearised exactly as in the Adams-Johnson QAP linearisation: continuous ``w[l,c,c',g,h] >= 0``
with ``sum_h w = a[l,c,g]`` and ``sum_g w = a[l+1,c',h]`` (so ``w = a a`` at integer ``a``),
``z_l >= sum_{c,c'} T[l,c,c'] w[l,c,c',g,h] * b_max / B[g,h]`` for every ``g != h``,
minimise ``sum_l z_l``. Symmetry break (only when every off-diagonal ``B`` is equal, so GPUs
are interchangeable): layer 0's group 0 sits on GPU 0.

Both stages run on HiGHS (``milp_rows.solve``, through ``highspy``) with a time limit and a
relative MIP gap (the paper used Gurobi with a 0.025 tolerance), except that stage 2 with at
most ``MAX_DP`` groups (MoETuner's EP4 settings: 4) is solved exactly by dynamic programming:
its objective is a sum of costs between consecutive layers' permutations, a shortest path
through ``C!`` states per layer (``dp-optimal``; HiGHS finds no incumbent for 32 layers of 4
groups in 10 s).
**Fallback rule** (never silent;
``TwoStageResult.stage1_method`` / ``stage2_method`` say which): above ``max_variables`` a
stage's MILP is not built; when HiGHS stops at its time limit the heuristic also runs and the
better answer is kept (per layer in stage 1, overall in stage 2; on a tie the heuristic's,
``milp_rows.better_of``). The heuristics:

* stage 1: LPT (heaviest expert to the lightest group with room), then best-improvement
  pairwise swaps of experts between groups on the exact ``sum |dev|`` objective.
* stage 2: layer 0 keeps group ``c`` on GPU ``c``; each next layer takes the permutation that
  minimises its worst link to the previous layer (every permutation when ``C <= 8``, else the
  linear assignment that keeps the most transition tokens on their GPU), then best-improvement
  swaps of two groups' GPUs in one layer on the exact objective, sweeping over layers until no
  swap improves or the time budget is spent.

The baseline the paper compares with is Megatron-LM's contiguous placement (experts ``0..R-1``
on GPU 0, ...): ``gps.plans.static_placement(..., layout="contiguous")``.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from gps.plans.ilp import _to_plan, placement_cost
from gps.plans.milp_rows import (
    ConstraintRows,
    assignment,
    better_of,
    dual_bound,
    relative_gap,
    solve,
)
from gps.plans.plan import Plan, check_load

MAX_ENUMERATE = 8  # stage-2 heuristic: enumerate every permutation up to this many groups
MAX_DP = 5  # stage 2 solved exactly by dynamic programming up to this many groups (C! states)


@dataclass(frozen=True)
class TwoStageResult:
    """Outcome of ``two_stage_placement``.

    Attributes:
        plan: ``Plan`` (one replica per expert, ``ceil(E/G)`` slots per GPU).
        groups: ``[L, E]`` int64 stage-1 group of every expert.
        group_gpu: ``[L, C]`` int64 stage-2 GPU of every group.
        stage1_method / stage2_method: ``"milp-optimal"``, ``"milp-timelimit"`` or
            ``"heuristic-fallback"`` (stage 2 also ``"dp-optimal"``).
        stage1_objective: tokens, ``sum_l sum_c |load_{l,c} - mean_l|``.
        stage1_gap: relative gap to the MILP's dual bound (``nan`` without one).
        stage2_objective: ``sum_l max_{g != h} M_l[g,h] * b_max / B[g,h]`` (token copies).
        stage2_gap: relative gap to the MILP's dual bound (``nan`` without one).
        max_load: ``[L]`` tokens of the busiest GPU per layer.
        traffic_tokens: transition tokens whose two experts sit on different GPUs.
        solve_time_s: wall seconds, both stages.
        message: solver status and fallback reasons.
    """

    plan: Plan
    groups: np.ndarray
    group_gpu: np.ndarray
    stage1_method: str
    stage1_objective: float
    stage1_gap: float
    stage2_method: str
    stage2_objective: float
    stage2_gap: float
    max_load: np.ndarray
    traffic_tokens: float
    solve_time_s: float
    message: str

    @property
    def method(self) -> str:
        """Both stages' methods, ``"stage1/stage2"``."""
        return f"{self.stage1_method}/{self.stage2_method}"


# ------------------------------------------------------------------------------ bandwidth


def bandwidth_matrix(
    node_of: np.ndarray, intra_bandwidth: float, inter_bandwidth: float | None
) -> np.ndarray:
    """``[G, G]`` per-direction bytes/s between expert-parallel ranks: ``intra_bandwidth``
    between ranks on one node, ``inter_bandwidth`` across nodes; the diagonal is ``inf``
    (nothing crosses a link).

    Args:
        node_of: ``[G]`` node of every rank (e.g. ``np.arange(G) // gpus_per_node``).
        intra_bandwidth: bytes/s inside a node (``> 0``).
        inter_bandwidth: bytes/s across nodes (``> 0``; may be ``None`` on one node).
    """
    node = np.asarray(node_of)
    if node.ndim != 1 or node.size < 1:
        raise ValueError(f"node_of: expected a non-empty [G] array, got shape {node.shape}")
    same = node[:, None] == node[None, :]
    if not same.all() and (inter_bandwidth is None or inter_bandwidth <= 0):
        raise ValueError("inter_bandwidth: needed (> 0) when the ranks span several nodes")
    if intra_bandwidth <= 0:
        raise ValueError(f"intra_bandwidth: must be > 0, got {intra_bandwidth}")
    out = np.where(same, float(intra_bandwidth), float(inter_bandwidth or 0.0))
    np.fill_diagonal(out, np.inf)
    return out


def _link_weight(bandwidth: np.ndarray) -> np.ndarray:
    """``[G, G]`` ``b_max / B`` off the diagonal, 0 on it."""
    b = np.asarray(bandwidth, dtype=float)
    g = b.shape[0]
    if b.shape != (g, g):
        raise ValueError(f"bandwidth: expected a square [G, G] matrix, got {b.shape}")
    off = ~np.eye(g, dtype=bool)
    if g > 1 and (not np.all(np.isfinite(b[off])) or np.any(b[off] <= 0)):
        raise ValueError("bandwidth: off-diagonal entries must be finite and > 0")
    out = np.zeros((g, g))
    if g > 1:
        out[off] = b[off].max() / b[off]
    return out


# ------------------------------------------------------------------------------ stage 1


def group_deviation(groups: np.ndarray, load: np.ndarray, num_groups: int) -> np.ndarray:
    """``[L]`` stage-1 objective per layer: ``sum_c |load_{l,c} - mean_l|``."""
    nl = load.shape[0]
    gl = np.zeros((nl, num_groups))
    np.add.at(gl, (np.repeat(np.arange(nl), load.shape[1]), groups.ravel()), load.ravel())
    return np.abs(gl - load.sum(axis=1, keepdims=True) / num_groups).sum(axis=1)


def _size_bounds(e: int, c: int) -> tuple[int, int]:
    return e // c, -(-e // c)


def _group_heuristic(load: np.ndarray, c: int, deadline: float) -> np.ndarray:
    """LPT with size caps, then best-improvement swaps per layer; ``[L, E]`` group ids."""
    nl, e = load.shape
    lo, hi = _size_bounds(e, c)
    out = np.zeros((nl, e), dtype=np.int64)
    for layer in range(nl):
        w = load[layer]
        gl, size = np.zeros(c), np.zeros(c, dtype=np.int64)
        # groups must end with >= lo experts: the last experts go where size < lo first
        for rank, j in enumerate(np.argsort(-w, kind="stable")):
            left = e - rank
            short = np.maximum(lo - size, 0).sum()
            room = size < hi
            if short >= left:
                room &= size < lo
            grp = int(np.argmin(np.where(room, gl, np.inf)))
            out[layer, j] = grp
            gl[grp] += w[j]
            size[grp] += 1
        mean = w.sum() / c
        for _ in range(4 * e * e):
            if time.perf_counter() > deadline:
                break
            ga = out[layer][:, None]
            gb = out[layer][None, :]
            d = w[None, :] - w[:, None]  # load group(a) gains when a <-> b
            dev = np.abs(gl - mean)
            new_a = np.abs(gl[ga] + d - mean)
            new_b = np.abs(gl[gb] - d - mean)
            delta = new_a + new_b - dev[ga] - dev[gb]
            delta[ga == gb] = np.inf
            best = int(np.argmin(delta))
            if not delta.flat[best] < -1e-9 * max(mean, 1.0):
                break
            a, b = divmod(best, e)
            gl[out[layer, a]] += w[b] - w[a]
            gl[out[layer, b]] += w[a] - w[b]
            out[layer, a], out[layer, b] = out[layer, b], out[layer, a]
    return out


def _group_milp(load: np.ndarray, c: int, time_limit_s: float, mip_gap: float):
    """All layers in one block-diagonal MILP; ``(groups [L, E] or None, dual bound, status,
    message)``."""
    nl, e = load.shape
    lo, hi = _size_bounds(e, c)
    scale = max(load.sum() / nl / c, 1e-12)
    ny = nl * e * c
    yi = np.arange(ny).reshape(nl, e, c)
    di = ny + np.arange(nl * c).reshape(nl, c)
    nv = ny + nl * c
    cost = np.zeros(nv)
    cost[di] = 1.0
    w = load / scale
    mean = w.sum(axis=1) / c  # [L]
    rows = ConstraintRows()

    rows.add(np.broadcast_to(np.arange(nl * e).reshape(nl, e, 1), yi.shape), yi, 1.0, 1, 1, nl * e)
    r_lc = np.broadcast_to(np.arange(nl * c).reshape(nl, 1, c), yi.shape)
    rows.add(r_lc, yi, 1.0, lo, hi, nl * c)  # group sizes
    wy = np.broadcast_to(w[:, :, None], yi.shape)
    rd = np.arange(nl * c).reshape(nl, 1, c)
    dd = di.reshape(nl, 1, c)
    for sign in (1.0, -1.0):  # sign * (sum_e w y - mean) - d <= 0
        rows.add(
            np.concatenate([r_lc, rd], axis=1),
            np.concatenate([yi, dd], axis=1),
            np.concatenate([sign * wy, -np.ones((nl, 1, c))], axis=1),
            -np.inf, np.repeat(sign * mean, c), nl * c,
        )  # fmt: skip
    lb, ub = np.zeros(nv), np.ones(nv)
    ub[di] = np.inf
    lb[yi[np.arange(nl), np.argmax(load, axis=1), 0]] = 1.0  # heaviest expert in group 0
    integrality = np.zeros(nv)
    integrality[:ny] = 1
    res = solve(cost, rows, integrality, lb, ub, time_limit_s, mip_gap)
    bound = dual_bound(res, scale)
    return assignment(res, ny, (nl, e, c)), bound, res.status, str(res.message)


def group_experts(
    load: np.ndarray,
    num_groups: int,
    *,
    time_limit_s: float = 10.0,
    mip_gap: float = 1e-4,
    max_variables: int = 500_000,
) -> tuple[np.ndarray, str, float, str]:
    """Stage 1: ``(groups [L, E], method, gap, message)`` (module docstring).

    Args:
        load: ``[L, E]`` tokens per expert.
        num_groups: ``C`` (``1 <= C <= E``).
        time_limit_s: HiGHS time limit; the heuristic gets the same budget when it runs.
        mip_gap: relative MIP gap at which HiGHS stops.
        max_variables: above this model size the MILP is not built.
    """
    load = check_load(load)
    nl, e = load.shape
    c = int(num_groups)
    if not 1 <= c <= e:
        raise ValueError(f"num_groups: expected 1 <= C <= E = {e}, got {num_groups}")
    n_vars = nl * e * c + nl * c
    groups, bound, status, msg = None, None, None, ""
    if n_vars > max_variables:
        msg = f"stage 1: MILP not built: {n_vars:,} variables > max_variables={max_variables:,}"
    else:
        groups, bound, status, msg = _group_milp(load, c, time_limit_s, mip_gap)
        msg = f"stage 1: HiGHS status {status}: {msg}"
    if groups is not None and status == 0:
        method = "milp-optimal"
    else:
        heur = _group_heuristic(load, c, time.perf_counter() + time_limit_s)
        if groups is None:
            groups, method = heur, "heuristic-fallback"
        else:  # keep the better grouping per layer
            take = group_deviation(heur, load, c) < group_deviation(groups, load, c)
            groups = np.where(take[:, None], heur, groups)
            method = "heuristic-fallback" if take.all() else "milp-timelimit"
            msg += f"; heuristic better in {int(take.sum())} of {nl} layers"
    obj = float(group_deviation(groups, load, c).sum())
    return groups.astype(np.int64), method, relative_gap(obj, bound), msg


# ------------------------------------------------------------------------------ stage 2


def group_transitions(transitions: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """``[L-1, C, C]`` transition tokens from group ``c`` (layer ``l``) to ``c'`` (``l+1``)."""
    nl, e = groups.shape
    onehot = np.zeros((nl, e, num_groups))
    onehot[np.arange(nl)[:, None], np.arange(e)[None, :], groups] = 1.0
    return np.einsum("lic,lij,ljd->lcd", onehot[:-1], transitions, onehot[1:])


def link_cost(group_gpu: np.ndarray, gtrans: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``[L-1]`` stage-2 objective per layer pair: ``max_{g != h} M_l[g,h] * b_max / B[g,h]``
    for ``group_gpu [L, C]`` (GPU of each group, a permutation per layer)."""
    nl, c = group_gpu.shape
    if nl < 2:
        return np.zeros(0)
    g = weight.shape[0]
    p = np.zeros((nl, c, g))
    p[np.arange(nl)[:, None], np.arange(c)[None, :], group_gpu] = 1.0
    m = np.einsum("lcg,lcd,ldh->lgh", p[:-1], gtrans, p[1:])
    return (m * weight).max(axis=(1, 2))


def _map_heuristic(gtrans: np.ndarray, weight: np.ndarray, deadline: float) -> np.ndarray:
    """Sequential best permutation per layer, then pairwise-swap local search; ``[L, C]``."""
    nl1, c, _ = gtrans.shape
    nl = nl1 + 1
    g = weight.shape[0]
    out = np.tile(np.arange(c), (nl, 1))
    perms = np.array(list(itertools.permutations(range(g)))) if g <= MAX_ENUMERATE else None
    for layer in range(1, nl):
        x = np.zeros((g, c))  # x[g, c'] = tokens from the group on GPU g to group c'
        x[out[layer - 1]] = gtrans[layer - 1]
        if perms is not None:  # cost of every permutation: max_{g, c'} x[g,c'] w[g, perm[c']]
            cost = (x[:, None, :] * weight[:, perms]).max(axis=(0, 2))
            out[layer] = perms[int(np.argmin(cost))]
        else:
            rows, cols = linear_sum_assignment(x.T, maximize=True)  # keep tokens on their GPU
            out[layer, rows] = cols
    if nl < 2 or g < 2:
        return out
    for _sweep in range(50):
        changed = False
        for layer in range(nl):
            lo_pair, hi_pair = max(layer - 1, 0), min(layer + 1, nl - 1)
            for _ in range(c * c):
                if time.perf_counter() > deadline:
                    return out
                base = link_cost(out[lo_pair : hi_pair + 1], gtrans[lo_pair:hi_pair], weight).sum()
                best, best_pair = base, None
                for a, b in itertools.combinations(range(c), 2):
                    out[layer, [a, b]] = out[layer, [b, a]]
                    val = link_cost(out[lo_pair : hi_pair + 1], gtrans[lo_pair:hi_pair], weight)
                    out[layer, [a, b]] = out[layer, [b, a]]
                    if val.sum() < best - 1e-9 * max(base, 1.0):
                        best, best_pair = val.sum(), (a, b)
                if best_pair is None:
                    break
                a, b = best_pair
                out[layer, [a, b]] = out[layer, [b, a]]
                changed = True
        if not changed:
            break
    return out


def _map_dp(gtrans: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Exact stage 2 by dynamic programming over the chain of layers: the objective is a sum
    of costs between consecutive layers' permutations, so ``V_{l+1}(b) = min_a V_l(a) +
    cost_l(a, b)`` over all ``C!`` permutations ``a``, ``b`` (``C <= MAX_DP``); ``[L, C]``."""
    nl1, c, _ = gtrans.shape
    perms = np.array(list(itertools.permutations(range(c))))  # [P, C]: GPU of each group
    wp = weight[perms[:, None, :, None], perms[None, :, None, :]]  # [P, P, C, C]
    value = np.zeros(perms.shape[0])
    back = np.zeros((nl1, perms.shape[0]), dtype=np.int64)
    for layer in range(nl1):
        total = value[:, None] + (gtrans[layer][None, None] * wp).max(axis=(2, 3))
        back[layer] = np.argmin(total, axis=0)
        value = total[back[layer], np.arange(perms.shape[0])]
    idx = np.zeros(nl1 + 1, dtype=np.int64)
    idx[-1] = int(np.argmin(value))
    for layer in range(nl1 - 1, -1, -1):
        idx[layer] = back[layer, idx[layer + 1]]
    return perms[idx]


def _map_milp(gtrans: np.ndarray, weight: np.ndarray, time_limit_s: float, mip_gap: float):
    """Stage-2 MILP (module docstring); ``(group_gpu [L, C] or None, dual bound, status,
    message)``."""
    nl1, c, _ = gtrans.shape
    nl, g = nl1 + 1, weight.shape[0]
    scale = max(gtrans.sum() / max(nl1, 1) / max(g * (g - 1), 1), 1e-12)
    t = gtrans / scale
    na = nl * c * g
    ai = np.arange(na).reshape(nl, c, g)
    nw = nl1 * c * c * g * g
    wi = na + np.arange(nw).reshape(nl1, c, c, g, g)
    zi = na + nw + np.arange(nl1)
    nv = na + nw + nl1
    cost = np.zeros(nv)
    cost[zi] = 1.0
    rows = ConstraintRows()

    # each group on one GPU, each GPU one group: rows (l, c) and (l, g)
    rows.add(np.broadcast_to(np.arange(nl * c).reshape(nl, c, 1), ai.shape), ai, 1.0, 1, 1, nl * c)
    rows.add(np.broadcast_to(np.arange(nl * g).reshape(nl, 1, g), ai.shape), ai, 1.0, 1, 1, nl * g)
    # sum_h w[l,c,c',g,h] - a[l,c,g] = 0: row (l, c, c', g)
    shape4 = (nl1, c, c, g)
    r4 = np.arange(math.prod(shape4)).reshape(shape4)
    a_l = np.broadcast_to(ai[:-1, :, None, :], shape4)
    rows.add(
        np.concatenate([np.broadcast_to(r4[..., None], wi.shape).reshape(*shape4, g),
                        r4[..., None]], axis=-1),
        np.concatenate([wi, a_l[..., None]], axis=-1),
        np.concatenate([np.ones(wi.shape), -np.ones((*shape4, 1))], axis=-1),
        0.0, 0.0, r4.size,
    )  # fmt: skip
    # sum_g w[l,c,c',g,h] - a[l+1,c',h] = 0: row (l, c, c', h)
    a_n = np.broadcast_to(ai[1:, None, :, :], shape4)
    w_t = np.moveaxis(wi, 3, 4)  # [l, c, c', h, g]
    rows.add(
        np.concatenate([np.broadcast_to(r4[..., None], w_t.shape), r4[..., None]], axis=-1),
        np.concatenate([w_t, a_n[..., None]], axis=-1),
        np.concatenate([np.ones(w_t.shape), -np.ones((*shape4, 1))], axis=-1),
        0.0, 0.0, r4.size,
    )  # fmt: skip
    # z_l >= sum_{c,c'} t w weight[g,h] for g != h: row (l, link)
    gs, hs = np.nonzero(~np.eye(g, dtype=bool))
    nlinks = gs.size
    if nlinks:
        w_links = wi[:, :, :, gs, hs]  # [l, c, c', link]
        coef = t[..., None] * weight[gs, hs][None, None, None, :]
        w_links = np.moveaxis(w_links, 3, 1).reshape(nl1, nlinks, c * c)
        coef = np.moveaxis(coef, 3, 1).reshape(nl1, nlinks, c * c)
        z_col = np.broadcast_to(zi[:, None, None], (nl1, nlinks, 1))
        rl = np.arange(nl1 * nlinks).reshape(nl1, nlinks, 1)
        rows.add(
            np.broadcast_to(rl, (nl1, nlinks, c * c + 1)),
            np.concatenate([w_links, z_col], axis=-1),
            np.concatenate([coef, -np.ones((nl1, nlinks, 1))], axis=-1),
            -np.inf, 0.0, nl1 * nlinks,
        )  # fmt: skip
    lb, ub = np.zeros(nv), np.ones(nv)
    ub[zi] = np.inf
    off = weight[~np.eye(g, dtype=bool)]
    if g > 1 and np.allclose(off, off[0]):
        lb[ai[0, 0, 0]] = 1.0  # symmetry break: every GPU is alike
    integrality = np.zeros(nv)
    integrality[:na] = 1
    res = solve(cost, rows, integrality, lb, ub, time_limit_s, mip_gap)
    bound = dual_bound(res, scale)
    return assignment(res, na, (nl, c, g)), bound, res.status, str(res.message)


def map_groups(
    gtrans: np.ndarray,
    bandwidth: np.ndarray,
    *,
    time_limit_s: float = 10.0,
    mip_gap: float = 1e-4,
    max_variables: int = 500_000,
    exact: str = "auto",
) -> tuple[np.ndarray, str, float, str]:
    """Stage 2: ``(group_gpu [L, C], method, gap, message)`` (module docstring).

    Args:
        gtrans: ``[L-1, C, C]`` group transition tokens (``group_transitions``).
        bandwidth: ``[G, G]`` bytes/s per direction (``bandwidth_matrix``); ``G = C``.
        time_limit_s, mip_gap, max_variables: as ``group_experts``.
        exact: ``"auto"``: dynamic programming (``dp-optimal``) when ``C <= MAX_DP``, else the
            MILP; ``"dp"`` or ``"milp"`` to force one.
    """
    gtrans = np.asarray(gtrans, dtype=float)
    if gtrans.ndim != 3 or gtrans.shape[1] != gtrans.shape[2]:
        raise ValueError(f"gtrans: expected [L-1, C, C], got shape {gtrans.shape}")
    if not np.all(np.isfinite(gtrans)) or np.any(gtrans < 0):
        raise ValueError("gtrans: counts must be finite and >= 0")
    weight = _link_weight(bandwidth)
    nl1, c, _ = gtrans.shape
    if weight.shape[0] != c:
        raise ValueError(f"bandwidth: {weight.shape[0]} GPUs for {c} groups (need one per GPU)")
    if nl1 == 0 or c == 1:
        return np.tile(np.arange(c), (nl1 + 1, 1)), "milp-optimal", 0.0, "stage 2: trivial"
    if exact not in ("auto", "dp", "milp"):
        raise ValueError(f"exact: {exact!r}, expected auto, dp or milp")
    if exact == "dp" or (exact == "auto" and c <= MAX_DP):
        if c > MAX_DP:
            raise ValueError(f"exact='dp': {c} groups, at most MAX_DP = {MAX_DP}")
        out = _map_dp(gtrans, weight)
        return out, "dp-optimal", 0.0, f"stage 2: dynamic programming over {c}! permutations"
    n_vars = (nl1 + 1) * c * c + nl1 * c**4 + nl1
    out, bound, status, msg = None, None, None, ""
    if n_vars > max_variables:
        msg = f"stage 2: MILP not built: {n_vars:,} variables > max_variables={max_variables:,}"
    else:
        out, bound, status, msg = _map_milp(gtrans, weight, time_limit_s, mip_gap)
        msg = f"stage 2: HiGHS status {status}: {msg}"
    if out is not None and status == 0:
        method = "milp-optimal"
    else:
        heur = _map_heuristic(gtrans, weight, time.perf_counter() + time_limit_s)
        h_obj = link_cost(heur, gtrans, weight).sum()
        m_obj = np.inf if out is None else link_cost(out, gtrans, weight).sum()
        method, note, take = better_of(m_obj, h_obj)
        msg += note
        out = heur if take else out
    obj = float(link_cost(out, gtrans, weight).sum())
    return out.astype(np.int64), method, relative_gap(obj, bound), msg


# ------------------------------------------------------------------------------ both


def two_stage_placement(
    load: np.ndarray,
    transitions: np.ndarray,
    bandwidth: np.ndarray,
    *,
    time_limit_s: float = 20.0,
    mip_gap: float = 1e-4,
    max_variables: int = 500_000,
    exact: str = "auto",
) -> TwoStageResult:
    """MoETuner's two-stage placement: group each layer's experts (stage 1), then map the groups
    to GPUs (stage 2); each stage gets half of ``time_limit_s``.

    Args:
        load: ``[L, E]`` (predicted) tokens per expert.
        transitions: ``[L-1, E, E]`` transition counts (``gps.plans.transition_counts``).
        bandwidth: ``[G, G]`` bytes/s between the ``G`` expert-parallel ranks
            (``bandwidth_matrix``); ``G <= E``.
        time_limit_s: HiGHS time limit of both stages together.
        mip_gap: relative MIP gap at which HiGHS stops (the paper: Gurobi at 0.025).
        max_variables: per stage, above this the MILP is not built (heuristic fallback).
        exact: stage 2's exact method (``map_groups``).

    Returns:
        ``TwoStageResult`` (``stage*_method`` and ``message`` say what was proven).
    """
    t0 = time.perf_counter()
    load = check_load(load)
    nl, e = load.shape
    c = np.asarray(transitions, dtype=float)
    if c.shape != (nl - 1, e, e):
        raise ValueError(f"transitions: shape {c.shape}, expected [L-1, E, E] = {[nl - 1, e, e]}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("transitions: counts must be finite and >= 0")
    g = np.asarray(bandwidth).shape[0]
    if not 1 <= g <= e:
        raise ValueError(f"bandwidth: {g} GPUs for {e} experts: need 1 <= G <= E")
    if time_limit_s <= 0 or not 0 <= mip_gap < 1:
        raise ValueError(f"time_limit_s={time_limit_s} must be > 0, mip_gap={mip_gap} in [0, 1)")
    half = time_limit_s / 2
    groups, m1, gap1, msg1 = group_experts(
        load, g, time_limit_s=half, mip_gap=mip_gap, max_variables=max_variables
    )
    gtrans = group_transitions(c, groups, g)
    group_gpu, m2, gap2, msg2 = map_groups(
        gtrans, bandwidth, time_limit_s=half, mip_gap=mip_gap, max_variables=max_variables,
        exact=exact,
    )  # fmt: skip
    assign = np.take_along_axis(group_gpu, groups, axis=1)  # [L, E] GPU of every expert
    r = -(-e // g)
    max_load, traffic, _ = placement_cost(assign, load, c, g, 0.0)
    meta = {"planner": "ilp-two-stage", "method": f"{m1}/{m2}"}
    return TwoStageResult(
        plan=_to_plan(assign, g, r, meta),
        groups=groups,
        group_gpu=group_gpu,
        stage1_method=m1,
        stage1_objective=float(group_deviation(groups, load, g).sum()),
        stage1_gap=gap1,
        stage2_method=m2,
        stage2_objective=float(link_cost(group_gpu, gtrans, _link_weight(bandwidth)).sum()),
        stage2_gap=gap2,
        max_load=max_load,
        traffic_tokens=traffic,
        solve_time_s=time.perf_counter() - t0,
        message=f"{msg1}; {msg2}",
    )
