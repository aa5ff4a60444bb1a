"""How wide must a local search over replica counts be to reach issue 23's Dirichlet bar?

Setting: ``bench_spare.py``'s DeepSeek-size loads (``CASES``, same seeds), static contiguous
homes, one home copy per expert and one spare slot per GPU (the rows ``wide_count_search``
handles). From both of ``replica_counts``' start vectors (water-fill and counts-first), a
steepest descent over one-copy moves (``+1`` copy of expert ``a``, ``-1`` copy of a replicated
expert ``f`` or none while a slot is free) scores every candidate move *exactly* (bottleneck
matching by sorting, ``_one_slot_loads``) and applies the one of lowest ``max + _TIE * sum(four
highest loads)`` while it lowers that value, at most ``--iters`` moves; a layer keeps the lowest
maximum seen (never above ``replica_counts``' level). Only the candidate move set differs:

* ``+1`` sets: ``all`` (every expert with load and fewer than ``G`` copies), ``busyK`` (the home
  experts of the ``K`` busiest GPUs of the matching and the experts of the lumps they host);
* ``-1`` sets: ``all`` (every replicated expert), ``slackK`` (the ``K`` replicated experts whose
  home GPU keeps the most room below the maximum once it takes one copy's share back, as
  ``_cheap_drops``).

Columns: the mean over layers of max GPU load / mean GPU load, and ``moves/layer``: candidate
moves scored per layer over the whole descent (both starts), the work a vectorised exact scorer
must do, whatever its cost per move. ``all:all`` is ``wide_count_search``'s move set, scored
here without its skipping of moves that push ``f``'s home GPU to the maximum on their own and
at ``--iters`` moves at most (``WIDE_ITERS`` there). This is a study, not a planner: it scores
moves one layer at a time and takes minutes.

Run: ``.venv/bin/python benchmarks/bench_count_moves.py [--sets busy8:slack8,all:slack24]
[--cases dsv3_dirichlet2_64x5] [--layers 61] [--iters 32]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bench_spare import CASES, EXPERTS, LAYERS, routed_loads

from gps.plans import static_placement
from gps.plans.plan import expert_gpu_holds
from gps.plans.spare import _TIE, _one_slot_loads, matched_loads, replica_counts


def _loads(load, hg, c, g):
    """``[K, G]`` matched loads of count vectors ``c [K, E]``."""
    k, e = c.shape
    per = load[None] / c
    hl = np.zeros((k, g))
    np.add.at(hl, (np.repeat(np.arange(k), e), np.tile(hg, k)), per.ravel())
    width = int(c.max())
    lumps = np.where(np.arange(width)[None, None] < (c - 1)[..., None], per[..., None], 0.0)
    lumps = lumps.reshape(k, -1)
    if lumps.shape[1] > g + 1:
        lumps = -np.partition(-lumps, g, axis=1)[:, : g + 1]
    return _one_slot_loads(hl, lumps)


def _value(loads):
    top = -np.partition(-loads, 3, axis=1)[:, :4]
    return loads.max(axis=1), loads.max(axis=1) + _TIE * top.sum(axis=1)


def _moves(load, hg, c, g, inc_set, dec_set):
    """``(a [K], f [K])`` candidate moves (``f = -1``: none)."""
    e = load.size
    ex = np.arange(e)
    per = load / c
    hl = np.bincount(hg, per, minlength=g)
    lid = np.repeat(ex, c - 1)
    gl, _, host = (x[0] for x in matched_loads(hl[None], per[lid][None], np.ones((1, g), int),
                                               lid[None]))  # fmt: skip
    grow = (c < g) & (load > 0)
    if inc_set == "all":
        inc = ex[grow]
    else:
        busy = np.argsort(-gl, kind="stable")[: int(inc_set[4:])]
        hosted = np.zeros(e, bool)
        hosted[host[busy][host[busy] >= 0]] = True
        inc = ex[grow & (np.isin(hg, busy) | hosted)]
    has = c > 1
    dec = ex[has]
    if dec_set != "all":
        back = np.where(has, load / np.maximum(c - 1, 1) - per, 0.0)
        slack = np.where(has, gl.max() - hl[hg] - back, -np.inf)
        dec = np.argsort(-slack, kind="stable")[: int(dec_set[5:])]
        dec = dec[np.isfinite(slack[dec])]
    if (c - 1).sum() < g:
        dec = np.concatenate([dec, [-1]])
    a, f = (x.ravel() for x in np.meshgrid(inc, dec, indexing="ij"))
    return a[a != f], f[a != f]


def descend(load, hg, c, g, inc_set, dec_set, iters):
    """``(lowest max seen, moves scored)`` of the steepest descent from ``c [E]``."""
    c = c.copy()
    best, scored = np.inf, 0
    for step in range(iters + 1):
        mx, cur = _value(_loads(load, hg, c[None], g))
        best = min(best, float(mx[0]))
        if step == iters:
            break
        a, f = _moves(load, hg, c, g, inc_set, dec_set)
        if a.size == 0:
            break
        cand = np.repeat(c[None], a.size, axis=0)
        k = np.arange(a.size)
        cand[k, a] += 1
        cand[k[f >= 0], f[f >= 0]] -= 1
        scored += a.size
        _, val = _value(_loads(load, hg, cand, g))
        j = int(np.argmin(val))
        if not val[j] < cur[0] * (1 - 1e-12):
            break
        c = cand[j]
    return best, scored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="busy8:slack8,busy8:slack24,busy4:all,all:slack24")
    ap.add_argument("--cases", default="dsv3_dirichlet2_64x5,dsv3_dirichlet2_32x9")
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--iters", type=int, default=32)
    args = ap.parse_args()
    print("| case | +1 set | -1 set | replica_counts | search | moves/layer | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.cases.split(","):
        pop, g, r, seed = CASES[name]
        load = routed_loads(pop, seed)[: args.layers]
        nl = load.shape[0]
        home = static_placement(nl, EXPERTS, g, r)
        hmat = expert_gpu_holds(np.where(home.home, home.slot_expert, -1), EXPERTS)
        hg = np.argmax(hmat[0], axis=0)
        counts, level = replica_counts(load, hmat, (~home.home).sum(axis=2))
        mean = load.sum(axis=1) / g
        for pair in args.sets.split(","):
            inc_set, dec_set = pair.split(":")
            t0 = time.perf_counter()
            res, moves = [], 0
            for i in range(nl):
                best = level[:, i].min()
                for start in counts[:, i]:
                    b, n = descend(load[i], hg, start, g, inc_set, dec_set, args.iters)
                    best, moves = min(best, b), moves + n
                res.append(best / mean[i])
            print(f"| {name} | {inc_set} | {dec_set} | {(level.min(axis=0) / mean).mean():.4f} "
                  f"| {np.mean(res):.4f} | {moves / nl:.0f} | {time.perf_counter() - t0:.0f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
