"""Dynamic duplication through spare slots: home copies stay, only replicas move.

A plan's **home slots** hold one resident copy of every expert (the static placement, never
migrated); the other ``R - ceil(E/G)`` slots per GPU are **spare slots**. ``plan_spare``
rewrites spare slots only, so serving from home copies alone (no balancing) is reachable from
any such plan at zero migration (``Plan.home_only``).

Every copy of expert ``e`` carries ``load_e / c_e`` (``c_e`` copies: the even split of
``gps.simulate``). A GPU's load is its **home load** (its home copies) plus the **lumps** it
hosts in its spare slots (one replica each). The planner, per layer and vectorised over
layers, in the style of DeepSeek's EPLB (how many replicas, then where):

1. **Replica counts** (``replica_counts``), water-filling from the top: start from the home
   copies; while a spare slot is free, find the GPU that bounds the maximum load once every
   replica is hosted (``matched_loads``: heaviest replica onto the lightest GPU with a free
   spare slot) and add one copy of the expert that lowers that maximum most: the home expert
   of that GPU with the largest gain ``load_e / c_e - load_e / (c_e + 1)``, or the expert of
   the replica it hosts (a lighter lump). The counts with the lowest maximum seen are kept,
   or EPLB's counts from the home copies (each spare slot to the largest load per copy,
   ``replicate_greedy``) where those match better. Then a local-improvement pass moves one
   copy from one expert to another (drop a copy of an expert whose home GPU has room to take
   its share back, add one where the maximum is) while that lowers the maximum (ties: the sum
   of the four highest loads).
2. **Placement** (``place_replicas``): replicas heaviest first, each onto a GPU with a free
   spare slot that does not hold the expert yet, against each GPU's home load: any GPU that
   stays within the level of step 1 will do (the bottleneck matching leaves the others room
   for the lighter replicas), so among those the one whose weights are cheapest to fetch
   (``fetch_s``) wins, then the lowest load; none within the level: the lowest load (LPT).
3. **Local improvement of the placement** (``improve_placement``, on layers left above the
   level): swap a replica off the busiest GPU with a spare slot (a replica or an empty one)
   of another GPU while that lowers the pair's maximum, never two copies of an expert on one
   GPU.

**Wide search** (``wide_search=True``, ``wide_count_search``; an option: seconds per 61
DeepSeek-size layers instead of tens of milliseconds): in layers with one home copy per expert
and one spare slot per GPU, where ``matched_loads`` scores a count vector exactly up to the
own-expert rule, both count vectors of step 1 are polished by steepest descent over *every*
move of one copy (``+1`` on any expert, ``-1`` on any replicated one or none), which escapes
the plateaus the busiest-GPU moves above stop on (a move elsewhere re-orders the matching).

**Migration-minimal re-planning** (``previous``, ``fetch_s``, ``migration_slack``): the
counts do not depend on the previous plan; the placement accepts any GPU within
``(1 + migration_slack)`` of the level and there the cheapest fetch wins, so a replica that
is still useful is re-chosen on the GPU that already holds it (fetch ``0``) and ``keep_slots``
leaves it in its slot. ``plan_spare_slacks`` plans several slacks in one pass (counts and the
slack-free candidates shared), as the advisor does for its balance-first and migration-first
plans.

Candidates per layer: home copies only; the plan above (``water-fill``); EPLB's counts placed
the same way (``counts-first``, where their level may beat it); today's busiest-first planner
(``grow_replicas``, where ``busiest_first_pays``); with ``exact``, the exact optimum
(``gps.plans.exact``). The lowest predicted max GPU load wins; within ``(1 +
migration_slack)`` of it the cheapest to fetch, then the fewest replicas. A certified lower
bound with these home copies is ``gps.plans.spare_bound.spare_lower_bound``.

Shapes: ``L`` layers (``M`` rows in helpers), ``G`` GPUs, ``R`` slots per GPU, ``E`` experts,
``N`` replicas (at most the spare slots of a layer), ``B`` rows of a batch of candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gps.plans.duplication import max_gpu_load, replicate_greedy
from gps.plans.exact import check_small, exact_candidates
from gps.plans.plan import Plan, check_choice, check_load, expert_gpu_counts, expert_gpu_holds

REPLICA_MODES = ("spare", "repack")
IMPROVE_ITERS = 8  # count moves per layer at most in ``replica_counts``
SWAP_ITERS = 16  # replica swaps per layer in ``improve_placement``
# count moves tried per layer and iteration: +1 on the busiest GPU's MOVE_GAINS home experts of
# largest gain or its hosted expert, -1 on MOVE_DROPS replicated experts (or none): balance
# against time (larger sets gained a few tenths of a percent at proportionally more time)
MOVE_GAINS, MOVE_DROPS = 3, 6
BUSIEST_GPUS = 32  # ``busiest_first_pays``: at most this many GPUs
WIDE_ITERS = 64  # moves per layer at most in ``wide_count_search``
_TIE = 0.1  # weight of the four highest loads' sum when two count vectors tie on the maximum


def check_replicas(mode: str) -> str:
    """``mode`` if it is a known replica mode, else ``ValueError`` naming the config key."""
    return check_choice(mode, REPLICA_MODES, "strategy.replicas", "replica mode")


def spare_slots_per_gpu(num_experts: int, num_gpus: int, slots_per_gpu: int) -> int:
    """``R - ceil(E/G)``: spare slots per GPU; ``ValueError`` when negative (``R`` too small to
    hold one home copy of every expert)."""
    spare = int(slots_per_gpu) - -(-int(num_experts) // int(num_gpus))
    if spare < 0:
        raise ValueError(
            f"slots_per_gpu={slots_per_gpu}: {num_experts} experts on {num_gpus} GPUs need "
            f"ceil(E/G) = {slots_per_gpu - spare} home slots per GPU, leaving {spare} spare slots"
        )
    return spare


def matched_loads(home_load: np.ndarray, lumps: np.ndarray, room: np.ndarray,
                  ids: np.ndarray | None = None) -> tuple:  # fmt: skip
    """GPU loads once the lumps are hosted: heaviest lump first onto the least-loaded GPU with
    a free spare slot, one lump per GPU per round.

    With one spare slot per GPU this is the bottleneck matching (heaviest lump with lightest
    GPU), whose maximum is the least any hosting of these lumps reaches when a GPU may host any
    expert; with more slots per GPU it is LPT in rounds. It ignores that a GPU must not host a
    replica of an expert it holds (``place_replicas`` respects it).

    Args:
        home_load: ``[B, G]`` load of each GPU's home copies (tokens).
        lumps: ``[B, N]`` per-copy load of every replica (tokens, ``0`` = none), any order.
        room: ``[B, G]`` int free spare slots.
        ids: ``[B, N]`` expert of each lump (optional).

    Returns:
        ``(loads [B, G], heaviest hosted lump [B, G])`` and, with ``ids``, the expert of that
        lump ``[B, G]`` (``-1`` = none); ``inf`` loads where lumps outnumber the free slots.
    """
    b, g = home_load.shape
    order = np.argsort(-lumps, axis=1, kind="stable")
    w = np.take_along_axis(lumps, order, 1)
    n = w.shape[1]
    load = np.array(home_load, dtype=float, copy=True)
    top = np.zeros((b, g))
    top_id = np.full((b, g), -1, dtype=np.int64)
    left = np.array(room, copy=True)
    rows = np.arange(b)[:, None]
    nxt = np.zeros(b, dtype=np.int64)  # next lump to place, per row
    for _ in range(int(left.max(initial=0))):
        hosts = (left > 0).sum(axis=1)  # every GPU with a free slot takes one lump this round
        pos = nxt[:, None] + np.arange(g)  # [B, G]
        take = (np.arange(g) < hosts[:, None]) & (pos < n)
        if not take.any():
            break
        pos = np.minimum(pos, n - 1)
        chunk = np.where(take, np.take_along_axis(w, pos, 1), 0.0)
        live = take & (chunk > 0)
        hs = np.argsort(np.where(left > 0, load, np.inf), axis=1, kind="stable")
        load[rows, hs] += chunk
        first = top[rows, hs] == 0
        top[rows, hs] = np.where(live & first, chunk, top[rows, hs])
        if ids is not None:
            lid = np.take_along_axis(ids, np.take_along_axis(order, pos, 1), 1)
            top_id[rows, hs] = np.where(live & first, lid, top_id[rows, hs])
        left[rows, hs] -= live
        nxt += take.sum(axis=1)
    rest = np.take_along_axis(w, np.minimum(nxt, max(n - 1, 0))[:, None], 1)[:, 0] if n else 0.0
    unplaced = (nxt < n) & (rest > 0)
    load[unplaced] = np.inf
    return (load, top) if ids is None else (load, top, top_id)


def _replica_ids(extra: np.ndarray, width: int) -> np.ndarray:
    """``[M, width]`` the expert of every replica, row by row in expert order, ``-1`` padded
    (``extra [M, E]`` int replicas per expert, ``extra.sum(1) <= width``)."""
    m, e = extra.shape
    n = extra.sum(axis=1)
    out = np.full((m, width), -1, dtype=np.int64)
    pos = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    out[np.repeat(np.arange(m), n), pos] = np.repeat(np.tile(np.arange(e), m), extra.ravel())
    return out


class _Lumps:
    """Replicas of a batch of count vectors as fixed positions: ``w [M, N]`` per-copy load,
    ``e [M, N]`` expert (``-1`` = free position); ``hl [M, G]`` home loads."""

    def __init__(self, load, home_t, hcnt, counts, n: int) -> None:
        m = load.shape[0]
        self.e = _replica_ids(counts - hcnt, max(n, 1))
        per = load / counts
        self.w = np.where(self.e >= 0, per[np.arange(m)[:, None], np.maximum(self.e, 0)], 0.0)
        self.hl = np.matmul(per[:, None, :], home_t)[:, 0, :]


def _candidates(load, home_t, c, lumps: _Lumps, rows, inc, dec):
    """Home loads ``[A, K, G]`` and lumps ``[A, K, N]`` after moving one copy: ``+1`` on
    ``inc [A, K]`` and ``-1`` on ``dec [A, K]`` (``-1`` = none; never the same expert);
    ``home_t [M, E, G]`` home copies (float)."""
    a, k = inc.shape
    ai = np.arange(a)[:, None]
    cr, lr = c[rows], load[rows]
    hl = np.repeat(lumps.hl[rows][:, None, :], k, axis=1)
    w = np.repeat(lumps.w[rows][:, None, :], k, axis=1)
    e = np.repeat(lumps.e[rows][:, None, :], k, axis=1)
    kk = np.arange(k)[None, :]
    for ex, step in ((dec, -1), (inc, 1)):
        live = ex >= 0
        if not live.any():
            continue
        x = np.maximum(ex, 0)
        cx, lx = cr[ai, x], lr[ai, x]
        cn = np.maximum(cx + step, 1)
        d = np.where(live, lx / cx - lx / cn, 0.0)  # home copies' change
        moved = home_t[rows[:, None], x]  # [A, K, G]
        moved *= d[..., None]
        hl -= moved
        same = e == np.where(live, ex, -2)[..., None]  # no move: -2 matches no lump
        np.copyto(w, (lx / cn)[..., None], where=same)
        if step < 0:  # free the last position of a lump of ``x``
            pos = e.shape[2] - 1 - np.argmax(same[..., ::-1], axis=2)
            ok = live & same.any(axis=2)
            e[ai, kk, pos] = np.where(ok, -1, e[ai, kk, pos])
            w[ai, kk, pos] = np.where(ok, 0.0, w[ai, kk, pos])
        else:
            pos = np.argmax(e < 0, axis=2)
            e[ai, kk, pos] = np.where(live, x, e[ai, kk, pos])
            w[ai, kk, pos] = np.where(live, lx / cn, w[ai, kk, pos])
    return hl, w, e


def _home_lists(hmat: np.ndarray) -> np.ndarray:
    """``[M, G, H]`` the experts with a home copy on each GPU (``hmat [M, G, E]`` bool),
    ``-1`` padded."""
    m, g, e = hmat.shape
    key, ei = np.divmod(np.flatnonzero(hmat), e)  # key = row * G + GPU, sorted, then expert
    rank = np.arange(key.size) - np.searchsorted(key, key, side="left")
    out = np.full((m * g, max(int(rank.max(initial=0)) + 1, 1)), -1, dtype=np.int64)
    out[key, rank] = ei
    return out.reshape(m, g, -1)


def _greedy(load, hx, home_t, hcnt, room, cap, home_gpu):
    """Step 1's greedy (module docstring): ``(counts [M, E], max load [M])`` of the best prefix.
    Two candidates per row and step: the busiest GPU's home expert of largest gain and the
    expert of the heaviest lump it hosts."""
    m, g, _ = hx.shape
    single = bool((hcnt == 1).all())
    total = room.sum(axis=1)
    n = int(total.max(initial=0))
    c = hcnt.copy()
    lumps = _Lumps(load, home_t, hcnt, c, n)
    hl, lw, le = lumps.hl, lumps.w, lumps.e
    used = np.zeros(m, dtype=np.int64)
    gl, _, tope = matched_loads(hl, lw, room, le)
    best_f, best_c = gl.max(axis=1), c.copy()
    active = total > 0
    two = np.arange(2)[None, :]
    one_slot = int(room.max(initial=0)) <= 1 and bool((room > 0).all())
    for _ in range(n):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        ar = np.arange(a.size)
        ai = ar[:, None]
        gs = np.argmax(gl[a], axis=1)
        hxa = hx[a, gs]  # [A, H]
        hxc = np.maximum(hxa, 0)
        ca, la = c[a[:, None], hxc], load[a[:, None], hxc]
        gain = np.where((hxa >= 0) & (ca < cap) & (la > 0), la / ca - la / (ca + 1), -1.0)
        j = np.argmax(gain, axis=1)
        eb = tope[a, gs]
        ebc = np.maximum(eb, 0)
        cand = np.stack([hxc[ar, j], ebc], axis=1)  # [A, 2]
        okc = np.stack([gain[ar, j] > 0, (eb >= 0) & (c[a, ebc] < cap)], axis=1)
        ce, lc = c[a[:, None], cand], load[a[:, None], cand]
        wnew = lc / (ce + 1)
        hl2 = np.repeat(hl[a][:, None, :], 2, axis=1)  # [A, 2, G]
        if single:
            hl2[ai, two, home_gpu[a[:, None], cand]] -= lc / ce - wnew
        else:
            hl2 -= home_t[a[:, None], cand] * (lc / ce - wnew)[..., None]
        w2 = np.where(le[a][:, None, :] == cand[..., None], wnew[..., None], lw[a][:, None, :])
        w2[ai, two, used[a][:, None]] = wnew
        if one_slot:  # ``_one_slot_loads`` inline: its sorted arrays locate the busiest GPU below
            hs = np.sort(hl2, axis=2)
            ws = -np.sort(-w2, axis=2)[..., :g]
            loads = hs.copy()
            loads[..., : ws.shape[2]] += ws
            big = -np.partition(-loads, min(3, g - 1), axis=2)[..., : min(4, g)]
        else:
            big = _peaks(hl2.reshape(-1, g), w2.reshape(2 * a.size, -1),
                         np.repeat(room[a], 2, axis=0)).reshape(a.size, 2, -1)  # fmt: skip
        fmax = big.max(axis=2)
        value = np.where(okc & np.isfinite(fmax), fmax + 1e-9 * big.sum(axis=2), np.inf)
        pick = np.argmin(value, axis=1)
        go = np.isfinite(value[ar, pick])
        sel = ar[go]
        r, p = a[go], pick[go]
        x = cand[sel, p]
        c[r, x] += 1
        hl[r], lw[r] = hl2[sel, p], w2[sel, p]
        le[r, used[r]] = x
        used[r] += 1
        if one_slot:  # the busiest GPU and the lump it hosts, found by their values
            lr = loads[sel, p]
            i = np.argmax(lr, axis=1)
            k = np.arange(sel.size)
            nw = ws.shape[2]
            hv = hs[sel, p, i]
            wv = np.where(i < nw, ws[sel, p, np.minimum(i, nw - 1)], 0.0)
            gs_r = np.argmin(np.abs(hl[r] - hv[:, None]), axis=1)
            gl[r] = -np.inf
            gl[r, gs_r] = lr[k, i]
            at = np.argmin(np.where(le[r] >= 0, np.abs(lw[r] - wv[:, None]), np.inf), axis=1)
            tope[r] = -1
            tope[r, gs_r] = np.where(wv > 0, le[r, at], -1)
        else:
            gl[r], _, tope[r] = matched_loads(hl[r], lw[r], room[r], le[r])
        f = gl[r].max(axis=1)
        better = f < best_f[r] * (1 - 1e-12)
        best_f[r[better]] = f[better]
        best_c[r[better]] = c[r[better]]
        active[a[~go]] = False
        active &= used < total
    return best_c, best_f


def replica_counts(
    load: np.ndarray,
    home_experts: np.ndarray,
    room: np.ndarray,
    *,
    max_replicas: int | None = None,
    wide_search: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of every expert (home copies included), water-filling over the busiest GPU once
    the replicas are hosted (module docstring, step 1).

    Args:
        load: ``[M, E]`` predicted tokens per expert (>= 0).
        home_experts: ``[M, G, E]`` bool, ``True`` where GPU ``g`` holds a home copy of ``e``.
        room: ``[M, G]`` int free spare slots.
        max_replicas: copies per expert at most (default ``G``).
        wide_search: then ``wide_count_search`` on both candidates in the rows with one home
            copy per expert and one spare slot per GPU (slower: seconds per 61 layers).

    Returns:
        ``(counts [2, M, E] int64, level [2, M])``: the improved counts, then the counts-first
        start (``replicate_greedy`` from the home copies) as a second candidate (better where
        ``matched_loads`` misjudges: several spare slots per GPU, a GPU that may not host an
        expert it holds). ``counts >=`` home copies, ``sum(counts - home) <= room.sum(1)``;
        ``level`` is the maximum GPU load of ``matched_loads`` with these counts. Loop of at
        most ``room.sum(1).max()`` greedy steps and ``IMPROVE_ITERS`` moves, each vectorised
        over the rows (``[rows, candidates, G]``).
    """
    load = np.asarray(load, dtype=float)
    hmat = np.asarray(home_experts, dtype=bool)
    g = hmat.shape[1]
    hx = _home_lists(hmat)  # [M, G, H]
    home_t = hmat.transpose(0, 2, 1).astype(float)  # [M, E, G] home copies
    cap = min(g, g if max_replicas is None else int(max_replicas))
    hcnt = hmat.sum(axis=1).astype(np.int64)
    total = np.asarray(room).sum(axis=1)
    n = int(total.max(initial=0))
    home_gpu = np.argmax(hmat, axis=1)  # [M, E] one home GPU of each expert
    best_c, best_f = _greedy(load, hx, home_t, hcnt, np.asarray(room), cap, home_gpu)
    # counts-first start: each spare slot to the largest load per copy (EPLB's replication,
    # from the home copies); the better start per row is improved
    first = replicate_greedy(load, hcnt.sum(axis=1) + total, max_replicas=cap, start=hcnt)
    lumps = _Lumps(load, home_t, hcnt, first, n)
    f_first = matched_loads(lumps.hl, lumps.w, room)[0].max(axis=1)
    take = f_first < best_f * (1 - 1e-12)
    best_c = np.where(take[:, None], first, best_c)
    best_f = np.where(take, f_first, best_f)
    c = best_c.copy()
    lumps = _Lumps(load, home_t, hcnt, c, n)
    gl, top = matched_loads(lumps.hl, lumps.w, room)
    f = gl.max(axis=1)
    active = total > 0
    for _ in range(IMPROVE_ITERS):  # local improvement: move one copy between experts
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        inc = _bottleneck_moves(load, hx, c, lumps, gl, top, a, cap, gains=MOVE_GAINS)
        dec = _cheap_drops(load, home_gpu, hcnt, c, lumps, f, a, count=MOVE_DROPS)
        kin, kde = inc.shape[1], dec.shape[1] + 1
        dec_all = np.concatenate([dec, np.full((a.size, 1), -1)], axis=1)
        inc_k = np.repeat(inc, kde, axis=1)
        dec_k = np.tile(dec_all, (1, kin))
        room_ok = ((c[a] - hcnt[a]).sum(axis=1) < total[a])[:, None] | (dec_k >= 0)
        inc_k = np.where(room_ok & (inc_k != dec_k), inc_k, -1)
        ok = _apply_best(load, home_t, c, lumps, gl, top, room, a, inc_k, dec_k)
        f = gl.max(axis=1)
        active[a[~ok]] = False
    f = gl.max(axis=1)
    improved = f < best_f * (1 - 1e-12)
    out = np.where(improved[:, None], c, best_c)
    level = np.where(improved, f, best_f)
    counts, levels = np.stack([out, first]), np.stack([level, f_first])
    rows = np.flatnonzero((hcnt == 1).all(axis=1) & (np.asarray(room) == 1).all(axis=1))
    if wide_search and rows.size:
        for i in range(2):
            counts[i, rows], levels[i, rows] = wide_count_search(
                load[rows], home_gpu[rows], counts[i, rows], cap, num_gpus=g
            )
    return counts, levels


def _bottleneck_moves(load, hx, c, lumps: _Lumps, gl, top, rows, cap, *, gains: int):
    """``[A, gains + 1]`` experts whose extra copy may lower the busiest GPU's load: its
    ``gains`` home experts (``hx [M, G, H]``, ``-1`` padded) with the largest gain, and the
    expert of the heaviest lump it hosts (``-1`` = none)."""
    a = rows.size
    ar = np.arange(a)
    gs = np.argmax(gl[rows], axis=1)
    hxa = hx[rows, gs]  # [A, H]
    hxc = np.maximum(hxa, 0)
    cr, lr = c[rows[:, None], hxc], load[rows[:, None], hxc]
    gain = np.where((hxa >= 0) & (cr < cap) & (lr > 0), lr / cr - lr / (cr + 1), -1.0)
    k = min(gains, gain.shape[1])
    best = np.argpartition(-gain, k - 1, axis=1)[:, :k] if k < gain.shape[1] else (
        np.broadcast_to(np.arange(k), (a, k)))  # fmt: skip
    home = np.where(np.take_along_axis(gain, best, 1) > 0, np.take_along_axis(hxc, best, 1), -1)
    hw = top[rows, gs]  # heaviest lump on the busiest GPU
    lw, le = lumps.w[rows], lumps.e[rows]
    pick = np.argmin(np.where(le >= 0, np.abs(lw - hw[:, None]), np.inf), axis=1)
    hosted = le[ar, pick]
    hosted = np.where((hw > 0) & (hosted >= 0), hosted, -1)
    hosted = np.where((hosted >= 0) & (c[rows, np.maximum(hosted, 0)] < cap), hosted, -1)
    return np.concatenate([home, hosted[:, None]], axis=1)


def _cheap_drops(load, home_gpu, hcnt, c, lumps: _Lumps, f, rows, *, count: int):
    """``[A, count]`` replicated experts whose home GPU keeps the most room below the current
    maximum ``f`` once it takes one copy's share back (``-1`` = fewer candidates)."""
    cr, lr = c[rows], load[rows]
    has = cr > hcnt[rows]
    back = np.where(has, lr / np.maximum(cr - 1, 1) - lr / cr, 0.0)
    slack = f[rows, None] - np.take_along_axis(lumps.hl[rows], home_gpu[rows], 1) - back
    slack = np.where(has, slack, -np.inf)
    k = min(count, slack.shape[1])
    pick = np.argpartition(-slack, k - 1, axis=1)[:, :k]
    return np.where(np.isfinite(np.take_along_axis(slack, pick, 1)), pick, -1)


def _one_slot_loads(hl: np.ndarray, lumps: np.ndarray,
                    has_slot: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``[K, G]`` GPU loads (tokens) of the bottleneck matching with at most one spare slot per
    GPU, in no GPU order: the home loads ``hl [K, G]`` of the GPUs with a slot ascending plus
    the lumps ``[K, N]`` (``0`` = none) descending (heaviest lump with lightest GPU); GPUs
    without one (``has_slot [K, G]`` bool ``False``; default every GPU has one) keep their home
    load. ``inf`` rows where more lumps are positive than GPUs have a slot."""
    g = hl.shape[1]
    hs = np.sort(hl if has_slot is None else np.where(has_slot, hl, np.inf), axis=1)
    ws = -np.sort(-lumps, axis=1)
    n = ws.shape[1]
    m = min(g, n)
    hs[:, :m] += ws[:, :m]
    if has_slot is None:
        if n > g:
            hs[ws[:, g] > 0] = np.inf
        return hs
    # GPUs without a slot were sorted last (``inf``): their home loads instead
    hs = np.where(np.isposinf(hs), np.sort(np.where(has_slot, -np.inf, hl), axis=1), hs)
    open_ = has_slot.sum(axis=1)
    if n:  # the lump after the last open GPU's is positive: it finds no slot
        over = np.take_along_axis(ws, np.minimum(open_, n - 1)[:, None], 1)[:, 0] > 0
        hs[(open_ < n) & over] = np.inf
    return hs


def _peaks(home_load: np.ndarray, lumps: np.ndarray, room: np.ndarray) -> np.ndarray:
    """``[B, 4]`` the four highest loads of ``matched_loads`` (sorted, highest first); with at
    most one spare slot per GPU by sorting alone (``_one_slot_loads``)."""
    if room.max(initial=0) <= 1:
        has_slot = room > 0
        loads = _one_slot_loads(home_load, lumps, None if has_slot.all() else has_slot)
        g = loads.shape[1]
        top = np.partition(loads, g - 4, axis=1)[:, g - 4 :] if g > 4 else loads
        return np.sort(top, axis=1)[:, ::-1]
    loads, _ = matched_loads(home_load, lumps, room)
    return -np.sort(-loads, axis=1)[:, :4]


def _apply_best(load, home_t, c, lumps: _Lumps, gl, top, room, rows, inc, dec) -> np.ndarray:
    """Evaluate moves ``(+1 inc, -1 dec) [A, K]`` (``inc = -1``: not a move), apply per row the
    one with the lowest ``max + _TIE * sum(top 4 loads)`` if it beats the current state's
    (``gl [M, G]``). Returns ``moved [A]`` bool."""
    a, k = inc.shape
    hl, w, e = _candidates(load, home_t, c, lumps, rows, inc, dec)
    g = hl.shape[2]
    big = _peaks(hl.reshape(a * k, g), w.reshape(a * k, -1),
                 np.repeat(room[rows], k, axis=0)).reshape(a, k, -1)  # fmt: skip
    fmax = big[..., 0]
    value = np.where((inc >= 0) & np.isfinite(fmax), fmax + _TIE * big.sum(axis=2), np.inf)
    pick = np.argmin(value, axis=1)
    ar = np.arange(a)
    now = -np.sort(-gl[rows], axis=1)[:, :4]
    moved = value[ar, pick] < (now[:, 0] + _TIE * now.sum(axis=1)) * (1 - 1e-12)
    sel = np.flatnonzero(moved)
    r, p = rows[sel], pick[sel]
    np.add.at(c, (r, inc[sel, p]), 1)
    d = dec[sel, p]
    np.add.at(c, (r[d >= 0], d[d >= 0]), -1)
    lumps.hl[r], lumps.w[r], lumps.e[r] = hl[sel, p], w[sel, p], e[sel, p]
    gl[r], top[r] = matched_loads(lumps.hl[r], lumps.w[r], room[r])
    return moved


def wide_count_search(load: np.ndarray, home_gpu: np.ndarray, counts: np.ndarray, cap: int, *,
                      num_gpus: int | None = None,
                      iters: int = WIDE_ITERS) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Exhaustive single-move local search over replica counts for layers with one home copy
    per expert and one spare slot per GPU (``plan_spare(..., wide_search=True)``).

    Every move ``+1`` copy of any expert ``e`` and ``-1`` copy of any replicated expert ``f``
    (or none, while a spare slot is free) is scored exactly by the bottleneck matching
    (``matched_loads`` with one slot per GPU: heaviest lump onto the lightest GPU, which ignores
    only that a GPU may not host a replica of its own home expert); the best move by ``max +
    _TIE * sum(four highest loads)`` is applied while it lowers that value; the counts of the
    lowest maximum seen are returned. Moves that push ``f``'s home GPU to the current maximum on
    their own are skipped (they cannot lower the maximum).

    Args:
        load: ``[M, E]`` tokens per expert (>= 0).
        home_gpu: ``[M, E]`` the GPU holding each expert's home copy (``G`` GPUs, every GPU one
            spare slot).
        counts: ``[M, E]`` int start counts (>= 1, ``sum(counts - 1) <= G``).
        cap: copies per expert at most.
        num_gpus: ``G`` (default: the highest GPU in ``home_gpu`` plus one).
        iters: moves per row at most.

    Returns:
        ``(counts [M, E], level [M])``: the improved counts and their matched max load (never
        above the start's). Work per row and move ``O(E * F * G log G)`` (``F`` replicated
        experts), rows one at a time: seconds for 61 DeepSeek-size layers, so an option.
    """
    load = np.asarray(load, dtype=float)
    out = np.array(counts, dtype=np.int64, copy=True)
    m, e = load.shape
    g = int(home_gpu.max(initial=0)) + 1 if num_gpus is None else int(num_gpus)
    level = np.empty(m)
    ex = np.arange(e)
    for row in range(m):
        ld, hg, c = load[row], home_gpu[row], out[row].copy()
        best_max, best_c = np.inf, c.copy()
        for step in range(iters + 1):
            per = ld / c
            hl = np.bincount(hg, per, minlength=g)
            lump_id = np.repeat(ex, c - 1)
            base = _one_slot_loads(hl[None], per[lump_id][None])[0]
            if base.max() < best_max:  # the value may fall while the maximum rises a little
                best_max, best_c = base.max(), c.copy()
            top = -np.partition(-base, min(3, g - 1))[: min(4, g)]
            cur = base.max() + _TIE * top.sum()
            if step == iters:
                break
            # decrements: replicated experts whose home GPU stays below the maximum, or none
            dec = np.flatnonzero(c > 1)
            free = (c - 1).sum() < g
            dec = np.concatenate([dec, [-1]]) if free else dec
            inc = ex[(c < cap) & (ld > 0)]
            if dec.size == 0 or inc.size == 0:
                break
            ii, dd = (x.ravel() for x in np.meshgrid(inc, dec, indexing="ij"))
            # f's home GPU on its own at the maximum: the move cannot lower it
            dc = np.maximum(dd, 0)
            rise = np.where(dd >= 0, hl[hg[dc]] + ld[dc] / np.maximum(c[dc] - 1, 1) - per[dc], 0.0)
            rise -= np.where(hg[ii] == hg[dc], per[ii] - ld[ii] / (c[ii] + 1), 0.0)
            keep = (ii != dd) & (rise < base.max())
            ii, dd = ii[keep], dd[keep]
            k = ii.size
            kk = np.arange(k)
            hlk = np.repeat(hl[None], k, axis=0)
            ci = c[ii]
            np.subtract.at(hlk, (kk, hg[ii]), ld[ii] / ci - ld[ii] / (ci + 1))
            live = dd >= 0
            dc = np.maximum(dd, 0)
            cd = c[dc]
            np.add.at(hlk, (kk[live], hg[dc[live]]),
                      ld[dc[live]] / (cd[live] - 1) - ld[dc[live]] / cd[live])  # fmt: skip
            # lumps: the current ones except those of ii and dd, then theirs at the new counts
            lw = np.where((lump_id[None] == ii[:, None]) | (lump_id[None] == dd[:, None]), 0.0,
                          per[lump_id][None])  # fmt: skip
            width = int(c.max()) + 1
            col = np.arange(width)[None]
            new_i = np.where(col < ci[:, None], (ld[ii] / (ci + 1))[:, None], 0.0)
            nd = np.where(live, cd - 2, 0)
            new_d = np.where(col < nd[:, None], (ld[dc] / np.maximum(cd - 1, 1))[:, None], 0.0)
            loads = _one_slot_loads(hlk, np.concatenate([lw, new_i, new_d], axis=1))
            big = -np.partition(-loads, min(3, g - 1), axis=1)[:, : min(4, g)]
            value = loads.max(axis=1) + _TIE * big.sum(axis=1)
            j = int(np.argmin(value))
            if not value[j] < cur * (1 - 1e-12):
                break
            c[ii[j]] += 1
            if dd[j] >= 0:
                c[dd[j]] -= 1
        out[row], level[row] = best_c, best_max
    return out, level


def place_replicas(
    load: np.ndarray,
    slot_expert: np.ndarray,
    free: np.ndarray,
    counts: np.ndarray,
    level: np.ndarray,
    *,
    fetch_s: np.ndarray | None = None,
    migration_slack: float = 0.0,
) -> np.ndarray:
    """Place the replicas ``counts`` asks for on top of ``slot_expert`` (module docstring,
    step 2): heaviest first, each onto a GPU with a free slot that does not hold the expert;
    among GPUs whose load stays within ``level * (1 + migration_slack)`` the cheapest fetch,
    then the lowest load; if none stays within it, the lowest load.

    Args:
        load: ``[M, E]`` predicted tokens per expert.
        slot_expert: ``[M, G, R]`` copies already placed (home copies), ``-1`` = empty.
        free: ``[M, G, R]`` bool, empty slots a replica may take.
        counts: ``[M, E]`` copies wanted (``>=`` the copies in ``slot_expert``).
        level: ``[M]`` target max GPU load (``replica_counts``' level).
        fetch_s: ``[M, G, E]`` cost of bringing ``e`` to ``g`` (``None``: all equal).
        migration_slack: relative balance given up for a cheaper fetch (>= 0).

    Returns:
        ``[M, G, R]``; a replica no GPU can take (every GPU with room holds it) is dropped.
        Loop of ``max(counts - placed)`` steps, each vectorised over rows (``[M, G]``).
    """
    load = np.asarray(load, dtype=float)
    se = np.array(slot_expert, dtype=np.int64, copy=True)
    m = se.shape[0]
    e = load.shape[1]
    free = np.array(free, dtype=bool, copy=True) & (se < 0)
    has = expert_gpu_holds(se, e).transpose(0, 2, 1)  # [M, E, G]
    per = load / np.maximum(counts, 1)
    gl = np.where(se >= 0, per[np.arange(m)[:, None, None], np.maximum(se, 0)], 0.0).sum(axis=2)
    extra = np.maximum(counts - has.sum(axis=2), 0)
    n = extra.sum(axis=1)
    if n.max(initial=0) == 0:
        return se
    fetch_t = None if fetch_s is None else np.asarray(fetch_s).transpose(0, 2, 1)  # [M, E, G]
    k = int(n.max())
    rows = np.arange(m)
    items = _replica_ids(extra, k)
    weight = np.where(items >= 0, per[rows[:, None], np.maximum(items, 0)], -1.0)
    order = np.argsort(-weight, axis=1, kind="stable")
    items = np.take_along_axis(items, order, 1)
    weight = np.take_along_axis(weight, order, 1)
    room = free.sum(axis=2)
    cap = np.asarray(level, dtype=float) * (1 + migration_slack) * (1 + 1e-12)
    dest = np.full((m, k), -1, dtype=np.int64)  # GPU of each replica
    # step j's expert and weight per row, contiguous; no replica: infinite weight, no GPU fits
    xs = np.maximum(items, 0).T.copy()  # [K, M]
    ws = np.where(items >= 0, weight, np.inf).T.copy()  # [K, M]
    for j in range(k):
        x, w = xs[j], ws[j]
        score = np.where((room < 1) | has[rows, x], np.inf, gl + w[:, None])
        t = np.argmin(score, axis=1)  # the lowest load (first GPU on ties)
        best = score[rows, t]
        if fetch_t is not None:  # the cheapest fetch within the level, then the lowest load
            fits = score <= np.maximum(best * (1 + 1e-12), cap)[:, None]
            fc = np.where(fits, fetch_t[rows, x], np.inf)
            fits &= fc <= fc[rows, np.argmin(fc, axis=1)][:, None]
            t = np.argmin(np.where(fits, score, np.inf), axis=1)
        go = best < np.inf  # a GPU takes replica j (rows without one change nothing)
        gl[rows, t] += np.where(go, w, 0.0)
        has[rows, x, t] |= go
        room[rows, t] -= go
        dest[:, j] = np.where(go, t, -1)
    # every placed replica into a free slot of its GPU, in order
    r_, j_ = np.nonzero(dest >= 0)
    g_ = dest[r_, j_]
    key = r_ * se.shape[1] + g_
    srt = np.argsort(key, kind="stable")
    r_, j_, g_, key = r_[srt], j_[srt], g_[srt], key[srt]
    rank = np.arange(key.size) - np.searchsorted(key, key, side="left")
    fr, fg, fs = np.nonzero(free)  # sorted by (row, GPU, slot)
    fkey = fr * se.shape[1] + fg
    se[r_, g_, fs[np.searchsorted(fkey, key, side="left") + rank]] = items[r_, j_]
    return se


def improve_placement(
    slot_expert: np.ndarray, spare: np.ndarray, load: np.ndarray, *, iters: int = SWAP_ITERS
) -> np.ndarray:
    """Local improvement of a placement (module docstring, step 3): per row and iteration, the
    best swap of a spare slot of the busiest GPU ``h`` with a spare slot (replica or empty) of
    another GPU ``g``, applied iff ``max(load_h', load_g') < load_h``; never two copies of an
    expert on one GPU. Replica counts do not change, so the max GPU load never rises.

    Args:
        slot_expert: ``[M, G, R]`` expert ids, ``-1`` = empty.
        spare: ``[M, G, R]`` bool slots that may change (home slots never do).
        load: ``[M, E]`` predicted tokens per expert.
        iters: iterations at most (each ``[rows, R, G*R]`` candidates).

    Returns:
        ``[M, G, R]`` copy.
    """
    load = np.asarray(load, dtype=float)
    se = np.array(slot_expert, dtype=np.int64, copy=True)
    m, g, r = se.shape
    e = load.shape[1]
    spare = np.asarray(spare, dtype=bool)
    cnt = expert_gpu_counts(se, e)  # [M, G, E]
    per = load / np.maximum(cnt.sum(axis=1), 1)
    rows = np.arange(m)
    w = np.where(se >= 0, per[rows[:, None, None], np.maximum(se, 0)], 0.0)  # [M, G, R]
    gl = w.sum(axis=2)
    active = np.flatnonzero(spare.any(axis=(1, 2)) & (g > 1))
    for _ in range(iters):
        if active.size == 0:
            break
        a = active
        n = a.size
        ar = np.arange(n)
        h = np.argmax(gl[a], axis=1)
        lh = gl[a, h]
        wh, eh, sh = w[a, h], se[a, h], spare[a, h]  # [A, R]
        wp = w[a].reshape(n, g * r)
        ep = se[a].reshape(n, g * r)
        sp = spare[a].reshape(n, g * r)
        gp = np.repeat(np.arange(g), r)[None, :]  # GPU of each partner slot
        delta = wh[:, :, None] - wp[:, None, :]  # [A, R, G*R] load moved from h
        lg = gl[a][:, gp[0]]  # [A, G*R]
        score = np.maximum(lh[:, None, None] - delta, lg[:, None, :] + delta)
        tol = 1e-12 * np.maximum(lh, 1e-300)[:, None, None]
        ok = sh[:, :, None] & sp[:, None, :] & (gp != h[:, None])[:, None, :]
        ok &= (delta > tol) & (score < lh[:, None, None] - tol)
        ehc, epc = np.maximum(eh, 0), np.maximum(ep, 0)
        on_g = cnt[a[:, None, None], gp[:, None, :], ehc[:, :, None]] > 0
        ok &= ~((eh >= 0)[:, :, None] & on_g)
        ok &= ~((ep >= 0)[:, None, :] & (cnt[a[:, None], h[:, None], epc] > 0)[:, None, :])
        score = np.where(ok, score, np.inf).reshape(n, r * g * r)
        best = np.argmin(score, axis=1)
        go = np.isfinite(score[ar, best])
        if not go.any():
            break
        a, h, best = a[go], h[go], best[go]
        i, j = best // (g * r), best % (g * r)
        gg, jj = j // r, j % r
        x, y = se[a, h, i], se[a, gg, jj]
        d = w[a, h, i] - w[a, gg, jj]
        se[a, h, i], se[a, gg, jj] = y, x
        w[a, h, i], w[a, gg, jj] = w[a, gg, jj], w[a, h, i] + 0.0
        gl[a, h] -= d
        gl[a, gg] += d
        for gpu, old, new in ((h, x, y), (gg, y, x)):
            live_o, live_n = old >= 0, new >= 0
            cnt[a[live_o], gpu[live_o], old[live_o]] -= 1
            cnt[a[live_n], gpu[live_n], new[live_n]] += 1
        active = a
    return se


def grow_replicas(
    load: np.ndarray,
    slot_expert: np.ndarray,
    free: np.ndarray,
    *,
    fetch_s: np.ndarray | None = None,
    migration_slack: float = 0.0,
    max_replicas: int | None = None,
    partners: int = 16,
) -> np.ndarray:
    """Today's busiest-first planner, kept as a candidate because it still wins some layers
    (``benchmarks/bench_spare.py`` counts them): while a spare slot is free, take the busiest
    GPU ``h`` and add one replica of one of its experts ``e`` on a GPU ``g`` with a free spare
    slot that does not hold ``e`` yet, the pair that lowers ``max(load_h', load_g')`` most;
    stop when no pair lowers the busiest GPU's load. Among pairs within ``(1 +
    migration_slack)`` of the best one, the cheapest fetch.

    Args:
        load: ``[M, E]`` predicted tokens per expert (>= 0).
        slot_expert: ``[M, G, R]`` copies already placed (home copies), ``-1`` = empty.
        free: ``[M, G, R]`` bool, empty slots a replica may take.
        fetch_s: ``[M, G, E]`` cost of bringing ``e`` to ``g`` (``None``: all equal).
        migration_slack: relative balance given up for a cheaper fetch (>= 0).
        max_replicas: copies per expert at most (default ``G``).
        partners: target GPUs considered per step: the ``partners`` least-loaded GPUs with a
            free slot (the best target is among them unless they all hold the expert).

    Returns:
        ``[M, G, R]`` with replicas in some free slots. Loop of at most ``free.sum(axis=(1,
        2)).max()`` steps, each vectorised over the rows still improving
        (``[rows, partners, R]``).
    """
    load = np.asarray(load, dtype=float)
    se = np.array(slot_expert, dtype=np.int64, copy=True)
    g, r = se.shape[1:]
    e = load.shape[1]
    free = np.array(free, dtype=bool, copy=True) & (se < 0)
    cap = g if max_replicas is None else int(max_replicas)
    cnt = expert_gpu_counts(se, e)  # [M, G, E]
    c = cnt.sum(axis=1)  # [M, E]
    per_copy = load / np.maximum(c, 1)
    gl = np.einsum("mge,me->mg", cnt, per_copy)
    room = free.sum(axis=2)  # [M, G]
    active = np.flatnonzero(room.sum(axis=1) > 0)
    steps = int(room.sum(axis=1).max(initial=0))
    gi = np.arange(g)
    p = min(g, partners)
    for _ in range(steps):
        if active.size == 0:
            break
        a = active
        n = a.size
        h = np.argmax(gl[a], axis=1)  # [A]
        lh = gl[a, h]
        ex = se[a, h]  # [A, R] experts on the busiest GPU
        exc = np.maximum(ex, 0)
        ce = c[a[:, None], exc]  # [A, R]
        le = load[a[:, None], exc]
        w_new = le / (ce + 1)
        h_new = lh[:, None] - (le / np.maximum(ce, 1) - w_new) * cnt[a[:, None], h[:, None], exc]
        open_load = np.where(room[a] > 0, gl[a], np.inf)  # [A, G]
        part = np.argpartition(open_load, p - 1, axis=1)[:, :p] if p < g else np.tile(gi, (n, 1))
        pl = np.take_along_axis(open_load, part, 1)  # [A, P] load of the lightest open GPUs
        score = np.maximum(h_new[:, None, :], pl[:, :, None] + w_new[:, None, :])  # [A, P, R]
        holds = cnt[a[:, None, None], part[:, :, None], exc[:, None, :]] > 0
        ok = (ex >= 0) & (ce < cap) & (le > 0)  # [A, R]
        valid = ok[:, None, :] & np.isfinite(pl)[:, :, None] & ~holds
        valid &= score < lh[:, None, None] * (1 - 1e-12)
        score = np.where(valid, score, np.inf)
        best = score.reshape(n, -1).min(axis=1)
        go = np.isfinite(best)
        if not go.any():
            break
        a, h, ex, part = a[go], h[go], ex[go], part[go]
        score, best, w_new = score[go], best[go], w_new[go]
        n = a.size
        near = score <= best[:, None, None] * (1 + migration_slack) + 1e-12 * best[:, None, None]
        if fetch_s is not None:
            fc = fetch_s[a[:, None, None], part[:, :, None], np.maximum(ex, 0)[:, None, :]]
            fc = np.where(near, fc, np.inf)
            near &= fc <= fc.reshape(n, -1).min(axis=1)[:, None, None]
        pick = np.argmin(np.where(near, score, np.inf).reshape(n, -1), axis=1)
        tg, slot = part[np.arange(n), pick // r], pick % r
        eb = ex[np.arange(n), slot]
        c_old = c[a, eb]
        # every holder's copy of eb shrinks from load/c to load/(c+1); the target gains one
        gl[a] -= cnt[a, :, eb] * (load[a, eb] / c_old - load[a, eb] / (c_old + 1))[:, None]
        gl[a, tg] += w_new[np.arange(n), slot]
        cnt[a, tg, eb] += 1
        c[a, eb] += 1
        room[a, tg] -= 1
        fs = np.argmax(free[a, tg], axis=1)  # first free slot of the target GPU
        se[a, tg, fs] = eb
        free[a, tg, fs] = False
        active = a[room[a].sum(axis=1) > 0]
    return se


def keep_slots(slot_expert: np.ndarray, spare: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Reorder each GPU's spare replicas so that a replica ``previous`` already had on that GPU
    keeps its slot (same expert per GPU, fewer slot changes).

    Args:
        slot_expert: ``[L, G, R]`` new plan; spare: ``[L, G, R]`` bool spare slots;
        previous: ``[L, G, R]`` previous plan's ``slot_expert``.
    """
    if int(np.asarray(spare).sum(axis=2).max(initial=0)) <= 1:
        return np.array(slot_expert, copy=True)  # one spare slot per GPU: nothing to reorder
    nl, g = slot_expert.shape[:2]
    e = int(max(slot_expert.max(), previous.max())) + 1
    new_sp = np.where(spare, slot_expert, -1)
    prev_sp = np.where(spare, previous, -1)
    wanted = expert_gpu_holds(new_sp, e)  # [L, G, E]
    li, gi = np.arange(nl)[:, None, None], np.arange(g)[None, :, None]
    keep = (prev_sp >= 0) & wanted[li, gi, np.maximum(prev_sp, 0)]
    out = np.where(spare, np.where(keep, prev_sp, -1), slot_expert)
    kept = expert_gpu_holds(np.where(keep, prev_sp, -1), e)
    rest_l, rest_g, rest_e = np.nonzero(wanted & ~kept)  # sorted by (layer, GPU)
    if rest_e.size == 0:
        return out
    open_l, open_g, open_r = np.nonzero(spare & ~keep)  # sorted by (layer, GPU, slot)
    key_rest, key_open = rest_l * g + rest_g, open_l * g + open_g
    rank = np.arange(key_rest.size) - np.searchsorted(key_rest, key_rest, side="left")
    pos = np.searchsorted(key_open, key_rest, side="left") + rank
    out[rest_l, rest_g, open_r[pos]] = rest_e
    return out


def _fetch_total(slot_expert: np.ndarray, ref_has: np.ndarray, fetch_s: np.ndarray | None,
                 spare_at: tuple) -> np.ndarray:  # fmt: skip
    """``[M]`` summed fetch cost of the copies in ``slot_expert [M, G, R]`` on GPUs that do not
    hold that expert in the reference (``ref_has [M, G, E]`` bool). Only spare slots can
    differ from the reference (it holds every home copy), so only ``spare_at`` (``np.nonzero``
    of the spare slots) is read."""
    if fetch_s is None:
        return np.zeros(slot_expert.shape[0])
    sl, sg, sr = spare_at
    ex = slot_expert[sl, sg, sr]
    x = np.maximum(ex, 0)
    cost = np.where((ex >= 0) & ~ref_has[sl, sg, x], fetch_s[sl, sg, x], 0.0)
    return np.bincount(sl, weights=cost, minlength=slot_expert.shape[0])


def _place(load, base, spare, counts, level, fetch_s, slack) -> tuple[np.ndarray, np.ndarray]:
    """``place_replicas``, then ``improve_placement`` on the rows it left above the level:
    ``(slot_expert [M, G, R], max GPU load [M])``."""
    se = place_replicas(load, base, spare, counts, level, fetch_s=fetch_s, migration_slack=slack)
    mx = max_gpu_load(se, load)
    rows = np.flatnonzero(mx > level * (1 + slack) * (1 + 1e-12))
    if rows.size:
        se[rows] = improve_placement(se[rows], spare[rows], load[rows])
        mx[rows] = max_gpu_load(se[rows], load[rows])
    return se, mx


def _check_inputs(load, home: Plan, previous, fetch_s, slacks) -> np.ndarray:
    """``load [L, E]`` as float once ``plan_spare_slacks``' arguments are checked (its Raises)."""
    load = check_load(load)
    if home.home is None:
        raise ValueError("home: the plan has no home slots (Plan.home is None)")
    nl, g, _ = home.slot_expert.shape
    e = home.num_experts
    if load.shape != (nl, e):
        raise ValueError(f"load: shape {load.shape}, expected [L, E] = [{nl}, {e}]")
    for x in slacks:
        if not x >= 0:
            raise ValueError(f"migration_slack: must be >= 0, got {x}")
    if previous is not None and (
        previous.slot_expert.shape != home.slot_expert.shape
        or previous.home is None
        or not np.array_equal(previous.home, home.home)
    ):
        raise ValueError("previous: must have the same [L, G, R] and home slots as home")
    if fetch_s is not None and np.shape(fetch_s) != (nl, g, e):
        raise ValueError(f"fetch_s: shape {np.shape(fetch_s)}, expected [L, G, E] = {[nl, g, e]}")
    return load


def plan_spare_slacks(
    load: np.ndarray,
    home: Plan,
    slacks: Sequence[float],
    *,
    previous: Plan | None = None,
    fetch_s: np.ndarray | None = None,
    max_replicas: int | None = None,
    exact: bool = False,
    exact_time_limit_s: float = 5.0,
    wide_search: bool = False,
) -> list[Plan]:
    """``plan_spare`` at every ``migration_slack`` in ``slacks`` from one pass: the replica
    counts, the slack-free candidates (home copies, the counts placed by balance, busiest-first,
    exact) and their loads are computed once; each positive slack adds the counts placed with
    that slack (cheaper fetches) and chooses. Every plan's max GPU load is within ``1 +
    slack`` of the best candidate's, so of the balance-first plan's.

    Returns:
        One ``Plan`` per slack, in order (see ``plan_spare``).
    """
    slacks = [float(x) for x in slacks]
    load = _check_inputs(load, home, previous, fetch_s, slacks)
    nl, g, r = home.slot_expert.shape
    e = home.num_experts
    cap = g if max_replicas is None else int(max_replicas)
    if cap < 1:
        raise ValueError(f"max_replicas: must be >= 1, got {max_replicas}")
    spare = ~home.home
    base = np.where(home.home, home.slot_expert, -1)
    hmat = expert_gpu_holds(base, e)
    counts, level = replica_counts(load, hmat, spare.sum(axis=2), max_replicas=cap,
                                   wide_search=wide_search)  # fmt: skip
    home_max = max_gpu_load(base, load)
    status, exact_se = None, None
    if exact:
        check_small(e, g)
        firsts = [_place(load, base, spare, c, lv, None, 0.0)[0]
                  for c, lv in zip(counts, level, strict=True)]  # fmt: skip
        exact_se, status = exact_candidates(load, g, r, base, home=base, max_replicas=cap,
                                            time_limit_s=exact_time_limit_s,
                                            candidates=firsts)  # fmt: skip
    ref_has = expert_gpu_holds(base if previous is None else previous.slot_expert, e)
    fixed = {"home-only": base}  # candidates that do not depend on the slack
    if busiest_first_pays(g, spare):  # today's planner, at the first slack's fetch ties
        fixed["busiest-first"] = grow_replicas(
            load, base, spare, fetch_s=fetch_s, migration_slack=min(slacks), max_replicas=cap
        )
    if exact_se is not None:
        fixed["exact"] = exact_se
    fixed_max = {k: home_max if k == "home-only" else max_gpu_load(v, load)
                 for k, v in fixed.items()}  # fmt: skip
    spare_at = np.nonzero(spare)
    fixed_fetch = {k: _fetch_total(v, ref_has, fetch_s, spare_at) for k, v in fixed.items()}

    def placed(slack: float, so_far: np.ndarray, todo: np.ndarray) -> dict:
        """Step 1's counts placed at ``slack`` in the layers ``todo`` [L] bool where their level
        is within ``1 + slack`` of the best plan so far: ``{name: (slot_expert, max load,
        fetch)}``."""
        out = {}
        for name, c, lv in zip(("water-fill", "counts-first"), counts, level, strict=True):
            rows = np.flatnonzero(todo & (lv < so_far * (1 + slack) * (1 - 1e-12)))
            se, mx = base.copy(), home_max.copy()
            if rows.size:
                at = slice(None) if rows.size == nl else rows  # every layer: no copies
                fs = None if fetch_s is None else fetch_s[at]
                se[at], mx[at] = _place(load[at], base[at], spare[at], c[at], lv[at], fs, slack)
            out[name if slack == 0 else f"{name}, slack {slack:g}"] = (
                se, mx, _fetch_total(se, ref_has, fetch_s, spare_at))  # fmt: skip
            so_far = np.minimum(so_far, mx)
        return out

    shared = {k: (v, fixed_max[k], fixed_fetch[k]) for k, v in fixed.items()}
    shared |= placed(0.0, np.minimum.reduce(list(fixed_max.values())), np.ones(nl, bool))
    best_shared = np.minimum.reduce([v[1] for v in shared.values()])
    plans = []
    for slack in slacks:
        cands = dict(shared)
        if slack > 0 and fetch_s is not None:
            # cheaper fetches within the slack: where every shared candidate within it fetches
            mx, fe = (np.stack([v[i] for v in shared.values()]) for i in (1, 2))
            fetching = np.where(mx <= best_shared * (1 + slack), fe, np.inf).min(axis=0) > 0
            if fetching.any():
                cands |= placed(slack, best_shared, fetching)
        names = list(cands)
        cands, maxes, fetch = ([v[i] for v in cands.values()] for i in range(3))
        maxes, fetch = np.stack(maxes), np.stack(fetch)  # [C, L]
        stacked = np.stack(cands)  # [C, L, G, R]
        used = (stacked >= 0).sum(axis=(2, 3)).astype(float)
        best = maxes.min(axis=0)
        near = maxes <= best * (1 + slack) + 1e-12 * np.abs(best)
        fetch = np.where(near, fetch, np.inf)
        near &= fetch <= fetch.min(axis=0)
        choice = np.argmin(np.where(near, used, np.inf), axis=0)
        se = stacked[choice, np.arange(nl)]
        if previous is not None:
            se = keep_slots(se, spare, previous.slot_expert)
        plans.append(
            Plan(
                se,
                e,
                meta={
                    "planner": "spare",
                    "choice": [names[c] for c in choice],
                    "predicted_max_load": maxes[choice, np.arange(nl)],
                    "home_max_load": home_max,
                    "lower_bound": load.sum(axis=1) / g,
                    **({} if status is None else {"exact_status": list(status)}),
                },
                home=home.home,
            )
        )
    return plans


def busiest_first_pays(num_gpus: int, spare: np.ndarray) -> bool:
    """Whether today's busiest-first planner (``grow_replicas``) runs as a candidate: at most
    ``BUSIEST_GPUS`` GPUs or several spare slots per GPU (``spare [L, G, R]`` bool), where it
    still wins layers; at 64 GPUs with one spare slot it won none of ``bench_spare.py
    --busiest-everywhere``'s 122 layers and nearly doubled the plan's time."""
    return num_gpus <= BUSIEST_GPUS or int(np.asarray(spare).sum(axis=-1).max(initial=0)) >= 2


def plan_spare(
    load: np.ndarray,
    home: Plan,
    *,
    previous: Plan | None = None,
    fetch_s: np.ndarray | None = None,
    migration_slack: float = 0.0,
    max_replicas: int | None = None,
    exact: bool = False,
    exact_time_limit_s: float = 5.0,
    wide_search: bool = False,
) -> Plan:
    """Duplication plan that rewrites spare slots only (module docstring).

    Args:
        load: ``[L, E]`` predicted tokens per expert, >= 0.
        home: plan whose ``home`` slots are kept (e.g. ``static_placement(...)``, whose home
            slots are its occupied slots); its spare slots are rewritten.
        previous: the plan in place (same home slots); its replicas that stay keep their slot.
        fetch_s: ``[L, G, E]`` cost of bringing ``e`` to ``g`` from ``previous``
            (``gps.plans.migration.fetch_seconds``); ``None``: placement by balance only.
        migration_slack: relative balance traded for cheaper fetches (>= 0; ``0``: only GPUs
            within the level of the counts).
        max_replicas: copies per expert at most (default ``G``).
        exact: add each layer's exact optimum with these home copies (``gps.plans.exact``;
            ``E <= 16``, ``G <= 8``) as a candidate; ``meta["exact_status"]`` [L].
        exact_time_limit_s: HiGHS time limit per layer.
        wide_search: polish the replica counts with ``wide_count_search`` (every one-copy move
            scored exactly) in layers with one home copy per expert and one spare slot per
            GPU: about 1% lower max load on ``bench_spare.py``'s DeepSeek-size Dirichlet loads,
            at seconds instead of tens of milliseconds per 61 layers (an option, not the
            advisor's re-plan).

    Returns:
        ``Plan`` with ``home`` = ``home.home``; ``meta``: ``choice`` [L] candidate names
        (``home-only``, ``water-fill``, ``counts-first``, ``busiest-first``, ``exact``; with
        a slack and fetch costs also ``water-fill, slack 0.05`` etc.: the counts placed with
        the slack), ``predicted_max_load`` [L],
        ``home_max_load`` [L] (home copies only), ``lower_bound`` [L] (``sum load / G``;
        ``spare_lower_bound`` is the certified one with these homes). By construction
        ``predicted_max_load <= home_max_load`` in every layer.

    Raises:
        ValueError: bad loads, a ``home`` plan without home slots, shapes that differ, a
            negative ``migration_slack``, ``max_replicas < 1``.
    """
    return plan_spare_slacks(load, home, (migration_slack,), previous=previous, fetch_s=fetch_s,
                             max_replicas=max_replicas, exact=exact,
                             exact_time_limit_s=exact_time_limit_s,
                             wide_search=wide_search)[0]  # fmt: skip
