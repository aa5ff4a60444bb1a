"""Exact minimum of the maximum GPU load for small layers (``E <= 16``, ``G <= 8``), by MILP.

Per layer, with the even split of ``gps.simulate`` (each of expert ``e``'s ``c_e`` copies
carries ``load_e / c_e``), the MILP (``scipy.optimize.milp``, HiGHS) chooses replica counts and
places the copies jointly:

* ``y[e, c]`` binary: expert ``e`` has ``c`` copies (``sum_c y[e, c] = 1``);
* ``w[e, c, g]`` binary: a copy of ``e`` on GPU ``g`` under count ``c``
  (``sum_g w[e, c, g] = c * y[e, c]``; at most one copy of ``e`` per GPU);
* ``sum_{e, c} w[e, c, g] <= R`` (slots) and ``sum_{e, c} (load_e / c) w[e, c, g] <= z``;
* home copies (``home``) are fixed: ``sum_c w[e, c, g] = 1`` for every home slot;
* minimise ``z`` plus ``1e-7 * mean load`` per copy (fewest copies among optimal plans).

Without home copies GPUs are interchangeable, so the heaviest expert is put on GPU 0
(symmetry breaking). ``status`` says whether HiGHS proved optimality within ``time_limit_s``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

MAX_EXPERTS, MAX_GPUS = 16, 8


def check_small(num_experts: int, num_gpus: int) -> None:
    """``ValueError`` unless a layer is small enough for the exact solver (``E <= 16``,
    ``G <= 8``)."""
    if num_experts > MAX_EXPERTS or num_gpus > MAX_GPUS:
        raise ValueError(
            f"exact: only for E <= {MAX_EXPERTS} and G <= {MAX_GPUS} (got E={num_experts}, "
            f"G={num_gpus}); use the heuristic planner"
        )


def exact_layer(
    load: np.ndarray,
    num_gpus: int,
    slots_per_gpu: int,
    *,
    home: np.ndarray | None = None,
    max_replicas: int | None = None,
    upper: float | None = None,
    time_limit_s: float = 5.0,
) -> tuple[np.ndarray | None, float, str]:
    """Exact plan of one layer (module docstring).

    Args:
        load: ``[E]`` predicted tokens per expert (>= 0).
        num_gpus, slots_per_gpu: ``G``, ``R`` (``E <= G*R``).
        home: ``[G, R]`` expert ids of fixed home copies (``-1`` = free slot), or ``None``.
        max_replicas: copies per expert at most (default ``G``).
        upper: a known achievable max load (prunes the search), or ``None``.
        time_limit_s: HiGHS wall-clock limit.

    Returns:
        ``(slot_expert [G, R] or None, max load, status)``; ``status`` is ``"optimal"``,
        ``"time_limit"`` (incumbent returned) or ``"failed"`` (``None`` returned).
    """
    load = np.asarray(load, dtype=float)
    e, g, r = load.size, int(num_gpus), int(slots_per_gpu)
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
    bound = max(load.sum() / g, 0.0)
    lb[-1], ub[-1] = bound, np.inf if upper is None else float(upper) * (1 + 1e-9) + 1e-12
    cost = np.zeros(nvar)
    cost[-1] = 1.0
    cost[ny : ny + nw] = 1e-7 * max(load.mean(), 1e-300)
    a = coo_matrix((vals, (rows, cols)), shape=(k, nvar)).tocsr()
    integrality = np.ones(nvar)
    integrality[-1] = 0
    res = milp(cost, constraints=LinearConstraint(a, lo, hi), integrality=integrality,
               bounds=Bounds(lb, ub), options={"time_limit": time_limit_s})  # fmt: skip
    if res.x is None:
        return None, np.inf, "failed"
    w = res.x[ny : ny + nw].reshape(e, nc, g) > 0.5
    out = np.full((g, r), -1, dtype=np.int64)
    placed = w.any(axis=1)  # [E, G]
    counts = placed.sum(axis=1)
    if home is not None:
        out = np.where(np.asarray(home) >= 0, np.asarray(home), -1).astype(np.int64)
    for gi in range(g):
        rest = [x for x in np.flatnonzero(placed[:, gi]) if not hc[x, gi]]
        free = np.flatnonzero(out[gi] < 0)
        out[gi, free[: len(rest)]] = rest
    gpu = np.array([sum(load[x] / counts[x] for x in out[gi] if x >= 0) for gi in range(g)])
    status = "optimal" if res.status == 0 else "time_limit"
    return out, float(gpu.max()), status


def exact_candidates(
    load: np.ndarray,
    num_gpus: int,
    slots_per_gpu: int,
    fallback: np.ndarray,
    *,
    home: np.ndarray | None = None,
    max_replicas: int | None = None,
    time_limit_s: float = 5.0,
) -> tuple[np.ndarray, list[str]]:
    """``exact_layer`` for every layer: ``([L, G, R] plans, [L] status)``. A layer HiGHS leaves
    without an incumbent keeps ``fallback``'s plan (status ``"failed"``)."""
    load = np.asarray(load, dtype=float)
    out = np.array(fallback, dtype=np.int64, copy=True)
    status = []
    for layer in range(load.shape[0]):
        cur = out[layer]
        counts = np.bincount(cur[cur >= 0], minlength=load.shape[1])
        per_copy = load[layer] / np.maximum(counts, 1)
        upper = float(np.where(cur >= 0, per_copy[np.maximum(cur, 0)], 0.0).sum(axis=1).max())
        se, _, st = exact_layer(load[layer], num_gpus, slots_per_gpu,
                                home=None if home is None else home[layer],
                                max_replicas=max_replicas, upper=upper,
                                time_limit_s=time_limit_s)  # fmt: skip
        if se is not None:
            out[layer] = se
        status.append(st)
    return out, status
