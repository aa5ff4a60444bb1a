"""Exact minimum of the maximum GPU load for small layers (``E <= 16``, ``G <= 8``).

Per layer, with the even split of ``gps.simulate`` (each of expert ``e``'s ``c_e`` copies
carries ``load_e / c_e``), ``exact_layer`` returns a plan of minimum max GPU load and says how
it knows (``status``), wasting no work:

1. **Candidates** (the caller's heuristic plans, e.g. ``plan_spare``'s) and a **lower bound**
   come first. Bound: ``sum load / G`` and the heaviest expert over its most copies; with home
   copies also ``gps.plans.spare_bound.spare_lower_bound``; with enumeration (3.) the
   enumeration's own bound. A candidate equal to the bound is optimal: returned at once
   (``"optimal-bound"``), no enumeration, no solver.
2. **Enumeration** of replica-count vectors where a rule places every count vector's copies
   optimally (milliseconds, no solver):

   * home copies with exactly one free slot per GPU (one replica per GPU): for a count
     vector (``c_e >=`` home copies, one replica per free slot at most) the heaviest replica
     on the GPU with the lightest home load, and so on (bottleneck assignment, optimal when a
     GPU may host any expert). Where that rule puts a replica on a GPU that holds the expert,
     the exact bottleneck assignment with those pairs forbidden is solved (threshold search
     over bipartite matchings, ``scipy.sparse.csgraph.maximum_bipartite_matching``). Count
     vectors are visited in order of their unconstrained value, which is a lower bound of
     their constrained value, until that bound reaches the best plan found: the result is the
     optimum (``"optimal-enumeration"``);
   * no home copies and ``R <= 2``: for a count vector (``c_e >= 1``, ``sum c <= G*R``,
     ``c_e <= G``) the best packing of its copies into ``G`` pairs is largest-with-smallest
     (sorted, zero-padded to ``G*R`` items; ``R = 1``: the largest item). The minimum over all
     count vectors is a lower bound; the best count vector whose pairing puts no expert twice
     on a GPU is a candidate; equal means optimal (``"optimal-enumeration"``).

3. **MILP** otherwise (``scipy.optimize.milp``, HiGHS), with the best candidate as an upper
   bound on ``z``:

   * ``y[e, c]`` binary: expert ``e`` has ``c`` copies (``sum_c y[e, c] = 1``);
   * ``w[e, c, g]`` binary: a copy of ``e`` on GPU ``g`` under count ``c``
     (``sum_g w[e, c, g] = c * y[e, c]``; at most one copy of ``e`` per GPU);
   * ``sum_{e, c} w[e, c, g] <= R`` (slots) and ``sum_{e, c} (load_e / c) w[e, c, g] <= z``;
   * home copies (``home``) are fixed: ``sum_c w[e, c, g] = 1`` for every home slot;
   * minimise ``z`` (no tie-break on the number of copies: it slowed HiGHS' proofs several-fold
     on Mixtral-size layers; the planners prefer the candidate with fewer copies on ties).

   Without home copies GPUs are interchangeable, so the heaviest expert is put on GPU 0
   (symmetry breaking). ``"optimal-milp"`` when HiGHS proves optimality within
   ``time_limit_s``; ``"time-limit"`` when it stops first: the better of its incumbent and the
   best candidate is returned, not proved optimal.

The returned plan is never worse than any candidate nor than the enumeration's best plan.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from gps.plans.spare_bound import spare_lower_bound_layer

MAX_EXPERTS, MAX_GPUS = 16, 8
PROVED = ("optimal-bound", "optimal-enumeration", "optimal-milp")
STATUSES = (*PROVED, "time-limit")
_REL = 1e-9  # values within this relative distance are equal


def check_small(num_experts: int, num_gpus: int) -> None:
    """``ValueError`` unless a layer is small enough for the exact solver (``E <= 16``,
    ``G <= 8``)."""
    if num_experts > MAX_EXPERTS or num_gpus > MAX_GPUS:
        raise ValueError(
            f"exact: only for E <= {MAX_EXPERTS} and G <= {MAX_GPUS} (got E={num_experts}, "
            f"G={num_gpus}); use the heuristic planner"
        )


@functools.lru_cache(maxsize=32)
def _extras(num_experts: int, budget: int) -> np.ndarray:
    """``[V, E]`` int64 every ``x >= 0`` with ``sum(x) <= budget`` (stars and bars), read-only."""
    e = num_experts
    bars = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(budget + e), e)),
                       dtype=np.int64).reshape(-1, e)  # fmt: skip
    gaps = np.diff(np.concatenate([np.full((bars.shape[0], 1), -1), bars], axis=1), axis=1) - 1
    gaps.setflags(write=False)
    return gaps


def _count_vectors(low: np.ndarray, budget: int, cap: int) -> np.ndarray:
    """``[V, E]`` int64 every ``c`` with ``low <= c <= cap`` and ``sum(c - low) <= budget``."""
    if budget < 0:
        return np.zeros((0, low.size), dtype=np.int64)
    c = low[None, :] + _extras(int(low.size), int(budget))
    return c[(c <= cap).all(axis=1)]


def _items(extra: np.ndarray, per_copy: np.ndarray, size: int):
    """``(weight [V, size], expert [V, size])``: ``extra[v, e]`` copies of weight
    ``per_copy[v, e]`` per count vector, heaviest first, zero-padded (expert ``-1``)."""
    v, e = extra.shape
    k = int(extra.max(initial=0))
    j = np.arange(max(k, 1))
    real = j[None, None, :] < extra[:, :, None]  # [V, E, K]
    w = np.where(real, per_copy[:, :, None], 0.0).reshape(v, -1)
    ids = np.where(real, np.arange(e)[None, :, None], -1).reshape(v, -1)
    key = np.where(ids >= 0, w, -1.0)  # padding after every real copy (loads are >= 0)
    order = np.argsort(-key, axis=1, kind="stable")[:, :size]
    w, ids = np.take_along_axis(w, order, 1), np.take_along_axis(ids, order, 1)
    if w.shape[1] < size:
        pad = size - w.shape[1]
        w = np.concatenate([w, np.zeros((v, pad))], axis=1)
        ids = np.concatenate([ids, np.full((v, pad), -1)], axis=1)
    return w, ids


def plan_max_load(slot_expert: np.ndarray, load: np.ndarray) -> float:
    """Max GPU load of one layer's ``slot_expert [G, R]`` under ``load [E]`` (even split)."""
    se = np.asarray(slot_expert)
    counts = np.bincount(se[se >= 0], minlength=load.size)
    per = load / np.maximum(counts, 1)
    return float(np.where(se >= 0, per[np.maximum(se, 0)], 0.0).sum(axis=1).max())


def _repack_enumeration(load: np.ndarray, g: int, r: int, cap: int):
    """No home copies, ``R <= 2`` (module docstring): ``(bound, best plan [G, R] or None)``."""
    e = load.size
    counts = _count_vectors(np.ones(e, dtype=np.int64), g * r - e, cap)
    if counts.shape[0] == 0:
        return None
    w, ids = _items(counts, load[None, :] / counts, g * r)
    if r == 1:
        value, clash = w.max(axis=1), np.zeros(counts.shape[0], dtype=bool)
        pairs = ids[:, :, None]
    else:
        top, bottom = w[:, :g], w[:, ::-1][:, :g]  # item i with item 2G-1-i
        value = (top + bottom).max(axis=1)
        it, ib = ids[:, :g], ids[:, ::-1][:, :g]
        clash = ((it == ib) & (it >= 0)).any(axis=1)
        pairs = np.stack([it, ib], axis=2)
    ok = np.flatnonzero(~clash)
    plan = None
    if ok.size:
        best = ok[np.argmin(value[ok])]
        plan = np.full((g, r), -1, dtype=np.int64)
        plan[:, : pairs.shape[2]] = pairs[best]
    return float(value.min()), plan


def _bottleneck_assignment(hl: np.ndarray, w: np.ndarray, ids: np.ndarray, holds: np.ndarray):
    """Exact bottleneck assignment of replicas (``w [N]`` of experts ``ids [N]``) to distinct
    GPUs (home loads ``hl [G]``) that do not hold them (``holds [G, E]``): ``(max load, GPU of
    each replica [N])``, or ``(inf, None)`` when no assignment exists. Threshold search over the
    sorted candidate maxima, a bipartite matching each."""
    if w.size == 0:
        return float(hl.max()), np.zeros(0, dtype=np.int64)
    cost = hl[None, :] + w[:, None]  # [N, G]
    allowed = ~holds[:, ids].T
    levels = np.unique(np.concatenate([cost[allowed], [hl.max()]]))
    levels = levels[levels >= hl.max()]
    lo, hi, found = 0, levels.size - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        match = maximum_bipartite_matching(csr_matrix(allowed & (cost <= levels[mid])),
                                           perm_type="column")  # fmt: skip
        if (match >= 0).all():
            found, hi = (levels[mid], match), mid - 1
        else:
            lo = mid + 1
    if found is None:
        return np.inf, None
    return float(found[0]), found[1].astype(np.int64)


def _spare_enumeration(load: np.ndarray, home: np.ndarray, cap: int, upper: float):
    """Home copies, one free slot per GPU (module docstring): ``(optimum, plan [G, R])``, the
    plan ``None`` when no count vector beats ``upper``; ``None`` for other shapes."""
    e = load.size
    g = home.shape[0]
    if not np.all((home < 0).sum(axis=1) == 1):
        return None
    hc = np.zeros((g, e), dtype=bool)
    hg, hr = np.nonzero(home >= 0)
    hc[hg, home[hg, hr]] = True
    h = hc.sum(axis=0)
    counts = _count_vectors(h, g, cap)
    per_copy = load[None, :] / counts
    base = per_copy @ hc.T  # [V, G] home load of each GPU
    w, ids = _items(counts - h[None, :], per_copy, g)
    order = np.argsort(base, axis=1, kind="stable")  # lightest GPU gets the heaviest replica
    value = np.maximum((np.take_along_axis(base, order, 1) + w).max(axis=1), base.max(axis=1))
    clash = ((ids >= 0) & hc[order, np.maximum(ids, 0)]).any(axis=1)
    best_v, best_plan = float(upper), None
    for v in np.argsort(value, kind="stable"):
        if value[v] >= best_v * (1 - _REL):
            break  # every remaining count vector is at least this
        real = ids[v] >= 0
        if not clash[v]:
            gpu, val = order[v][real], float(value[v])
        else:
            val, gpu = _bottleneck_assignment(base[v], w[v][real], ids[v][real], hc)
            if gpu is None or val >= best_v * (1 - _REL):
                continue
        best_v = val
        best_plan = np.array(home, dtype=np.int64, copy=True)
        free = np.argmax(best_plan < 0, axis=1)
        best_plan[gpu, free[gpu]] = ids[v][real]
    return float(min(best_v, upper)), best_plan


def _simple_bound(load: np.ndarray, g: int, r: int, cap: int) -> float:
    """``max(sum load / G, max_e load_e / min(cap, G*R - E + 1))``: no plan does better."""
    most = max(1, min(cap, g * r - load.size + 1))
    return float(max(load.sum() / g, load.max(initial=0.0) / most))


def exact_layer(
    load: np.ndarray,
    num_gpus: int,
    slots_per_gpu: int,
    *,
    home: np.ndarray | None = None,
    max_replicas: int | None = None,
    candidates: Sequence[np.ndarray] = (),
    time_limit_s: float = 5.0,
) -> tuple[np.ndarray | None, float, str]:
    """Exact plan of one layer (module docstring).

    Args:
        load: ``[E]`` predicted tokens per expert (>= 0).
        num_gpus, slots_per_gpu: ``G``, ``R`` (``E <= G*R``).
        home: ``[G, R]`` expert ids of fixed home copies (``-1`` = free slot), or ``None``.
        max_replicas: copies per expert at most (default ``G``).
        candidates: valid ``[G, R]`` plans (with ``home``'s home copies), e.g. the heuristic's.
        time_limit_s: HiGHS wall-clock limit.

    Returns:
        ``(slot_expert [G, R], max load, status)`` with ``status`` in ``STATUSES``:
        ``"optimal-bound"`` (a candidate meets the lower bound), ``"optimal-enumeration"``,
        ``"optimal-milp"``, or ``"time-limit"`` (best known plan, not proved optimal). The
        plan is ``None`` only when there are no candidates and HiGHS finds none in time.
    """
    load = np.asarray(load, dtype=float)
    g, r = int(num_gpus), int(slots_per_gpu)
    cap_e = g if max_replicas is None else int(max_replicas)
    best, best_v = None, np.inf
    for cand in candidates:
        v = plan_max_load(cand, load)
        if v < best_v:
            best, best_v = np.asarray(cand, dtype=np.int64), v
    bound = _simple_bound(load, g, r, cap_e)
    if home is not None:
        bound = max(bound, spare_lower_bound_layer(load, np.asarray(home), cap_e))
    if best is not None and best_v <= bound * (1 + _REL):
        return best, best_v, "optimal-bound"
    if home is not None:
        found = _spare_enumeration(load, np.asarray(home), cap_e, best_v)
        if found is not None:
            _, plan = found
            if plan is not None:
                best, best_v = plan, plan_max_load(plan, load)
            return best, best_v, "optimal-enumeration"
    elif r <= 2:
        found = _repack_enumeration(load, g, r, cap_e)
        if found is not None:
            low, plan = found
            bound = max(bound, low)
            if plan is not None and plan_max_load(plan, load) < best_v:
                best, best_v = plan, plan_max_load(plan, load)
            if best is not None and best_v <= bound * (1 + _REL):
                return best, best_v, "optimal-enumeration"
    solved, proved = _milp(load, g, r, home, max_replicas, bound,
                           None if best is None else best_v, time_limit_s)  # fmt: skip
    if solved is not None and plan_max_load(solved, load) < best_v * (1 - _REL):
        best, best_v = solved, plan_max_load(solved, load)
    return best, best_v, "optimal-milp" if proved else "time-limit"


def _milp(load, g, r, home, max_replicas, bound, upper, time_limit_s):
    """The MILP of the module docstring: ``(plan [G, R] or None, proved optimal)``."""
    e = load.size
    hc = np.zeros((e, g), dtype=bool)
    if home is not None:
        hg, hr = np.nonzero(np.asarray(home) >= 0)
        hc[np.asarray(home)[hg, hr], hg] = True
    h = hc.sum(axis=1)
    cmax = min(g if max_replicas is None else int(max_replicas), g * r - e + 1)
    cs = np.arange(1, cmax + 1)
    nc = cs.size
    ny, nw = e * nc, e * nc * g
    nvar = ny + nw + 1

    def yi(ei, ci):
        return ei * nc + ci

    def wi(ei, ci, gi):
        return ny + (ei * nc + ci) * g + gi

    rows, cols, vals, lo, hi = [], [], [], [], []
    k = 0

    def add(entries, lb, ub):
        nonlocal k
        for c_, v_ in entries:
            rows.append(k)
            cols.append(c_)
            vals.append(v_)
        lo.append(lb)
        hi.append(ub)
        k += 1

    for ei in range(e):
        add([(yi(ei, ci), 1.0) for ci in range(nc)], 1, 1)
        for ci in range(nc):
            add([(wi(ei, ci, gi), 1.0) for gi in range(g)] + [(yi(ei, ci), -float(cs[ci]))], 0, 0)
        for gi in range(g):
            fixed = 1 if hc[ei, gi] else 0
            add([(wi(ei, ci, gi), 1.0) for ci in range(nc)], fixed, 1)
    for gi in range(g):
        add([(wi(ei, ci, gi), 1.0) for ei in range(e) for ci in range(nc)], 0, r)
        add([(wi(ei, ci, gi), load[ei] / cs[ci]) for ei in range(e) for ci in range(nc)]
            + [(nvar - 1, -1.0)], -np.inf, 0)  # fmt: skip
    ub = np.ones(nvar)
    lb = np.zeros(nvar)
    for ei in range(e):  # counts below the home copies are impossible
        ub[[yi(ei, ci) for ci in range(nc) if cs[ci] < h[ei]]] = 0
    if home is None and e:  # interchangeable GPUs: the heaviest expert has a copy on GPU 0
        add([(wi(int(np.argmax(load)), ci, 0), 1.0) for ci in range(nc)], 1, 1)
    lb[-1], ub[-1] = bound, np.inf if upper is None else float(upper) * (1 + _REL) + 1e-12
    cost = np.zeros(nvar)
    cost[-1] = 1.0
    a = coo_matrix((vals, (rows, cols)), shape=(k, nvar)).tocsr()
    integrality = np.ones(nvar)
    integrality[-1] = 0
    res = milp(cost, constraints=LinearConstraint(a, lo, hi), integrality=integrality,
               bounds=Bounds(lb, ub), options={"time_limit": time_limit_s})  # fmt: skip
    proved = res.status == 0 or (res.status == 2 and upper is not None)  # 2: nothing below upper
    if res.x is None:
        return None, proved
    w = res.x[ny : ny + nw].reshape(e, nc, g) > 0.5
    placed = w.any(axis=1)  # [E, G]
    out = np.full((g, r), -1, dtype=np.int64)
    if home is not None:
        out = np.where(np.asarray(home) >= 0, np.asarray(home), -1).astype(np.int64)
    for gi in range(g):
        rest = [x for x in np.flatnonzero(placed[:, gi]) if not hc[x, gi]]
        free = np.flatnonzero(out[gi] < 0)
        out[gi, free[: len(rest)]] = rest
    return out, proved


def exact_candidates(
    load: np.ndarray,
    num_gpus: int,
    slots_per_gpu: int,
    fallback: np.ndarray,
    *,
    home: np.ndarray | None = None,
    max_replicas: int | None = None,
    time_limit_s: float = 5.0,
    candidates: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, list[str]]:
    """``exact_layer`` for every layer: ``([L, G, R] plans, [L] status)``.

    Args:
        load: ``[L, E]``; fallback: ``[L, G, R]`` a valid plan (a candidate of every layer);
        home: ``[L, G, R]`` home copies (``-1`` elsewhere) or ``None``;
        candidates: further ``[L, G, R]`` plans, each a candidate of its layer.
    """
    load = np.asarray(load, dtype=float)
    out = np.array(fallback, dtype=np.int64, copy=True)
    status = []
    for layer in range(load.shape[0]):
        cands = [out[layer], *(np.asarray(c)[layer] for c in candidates)]
        se, _, st = exact_layer(load[layer], num_gpus, slots_per_gpu,
                                home=None if home is None else home[layer],
                                max_replicas=max_replicas, candidates=cands,
                                time_limit_s=time_limit_s)  # fmt: skip
        out[layer] = se
        status.append(st)
    return out, status
