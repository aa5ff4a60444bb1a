"""Dynamic duplication through spare slots: home copies stay, only replicas move.

A plan's **home slots** hold one resident copy of every expert (the static placement, never
migrated); the other ``R - ceil(E/G)`` slots per GPU are **spare slots**. ``plan_spare``
rewrites spare slots only, so serving from home copies alone (no balancing) is reachable from
any such plan at zero migration (``Plan.home_only``).

The planner (``grow_replicas``, vectorised over layers): starting from the home copies, while
a spare slot is free, take the busiest GPU ``h`` and add one replica of one of its experts
``e`` on a GPU ``g`` with a free spare slot that does not hold ``e`` yet, choosing the pair
that lowers ``max(load_h', load_g')`` most (``e``'s copies each carry ``load_e / c_e``: the
even split of ``gps.simulate``). Stop when no pair lowers the busiest GPU's load.

**Migration-minimal re-planning.** Among the pairs whose new maximum is within
``(1 + migration_slack)`` of the best pair's, the one whose weights are cheapest to fetch
(``fetch_s [L, G, E]``, e.g. ``gps.plans.migration.fetch_seconds``: ``0`` where the previous
plan already holds ``e`` on ``g``) wins, ties to the lower maximum. A previous replica that is
still useful is therefore re-chosen at zero cost and stays in its slot (``keep_slots``); a new
one goes to the GPU it is cheapest to copy to among equally balanced ones.

Shapes: ``L`` layers, ``G`` GPUs, ``R`` slots per GPU, ``E`` experts.
"""

from __future__ import annotations

import numpy as np

from gps.plans.duplication import max_gpu_load, replicate_greedy
from gps.plans.exact import check_small, exact_candidates
from gps.plans.plan import Plan, check_choice, check_load, expert_gpu_counts

REPLICA_MODES = ("spare", "repack")


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
    """Add replicas into ``free`` slots, busiest GPU first (module docstring).

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
    nl, g = slot_expert.shape[:2]
    e = int(max(slot_expert.max(), previous.max())) + 1
    new_sp = np.where(spare, slot_expert, -1)
    prev_sp = np.where(spare, previous, -1)
    wanted = expert_gpu_counts(new_sp, e) > 0  # [L, G, E]
    li, gi = np.arange(nl)[:, None, None], np.arange(g)[None, :, None]
    keep = (prev_sp >= 0) & wanted[li, gi, np.maximum(prev_sp, 0)]
    out = np.where(spare, np.where(keep, prev_sp, -1), slot_expert)
    kept = expert_gpu_counts(np.where(keep, prev_sp, -1), e) > 0
    rest_l, rest_g, rest_e = np.nonzero(wanted & ~kept)  # sorted by (layer, GPU)
    if rest_e.size == 0:
        return out
    open_l, open_g, open_r = np.nonzero(spare & ~keep)  # sorted by (layer, GPU, slot)
    key_rest, key_open = rest_l * g + rest_g, open_l * g + open_g
    rank = np.arange(key_rest.size) - np.searchsorted(key_rest, key_rest, side="left")
    pos = np.searchsorted(key_open, key_rest, side="left") + rank
    out[rest_l, rest_g, open_r[pos]] = rest_e
    return out


def pack_replicas(
    load: np.ndarray,
    slot_expert: np.ndarray,
    free: np.ndarray,
    *,
    fetch_s: np.ndarray | None = None,
    migration_slack: float = 0.0,
    max_replicas: int | None = None,
) -> np.ndarray:
    """Counts first, then places: ``replicate_greedy`` spends the free slots on the experts with
    the largest load per copy (starting from the copies in ``slot_expert``), then the new
    replicas, heaviest first, each go to the GPU with a free slot and without that expert
    whose load stays lowest (LPT on top of the fixed copies' loads; among GPUs within
    ``(1 + migration_slack)`` of that, the cheapest fetch). Arguments as ``grow_replicas``.

    Returns:
        ``[M, G, R]``; a replica no GPU can take (all with room hold the expert) is dropped.
    """
    load = np.asarray(load, dtype=float)
    se = np.array(slot_expert, dtype=np.int64, copy=True)
    m, g = se.shape[:2]
    e = load.shape[1]
    free = np.array(free, dtype=bool, copy=True) & (se < 0)
    cnt = expert_gpu_counts(se, e)
    start = cnt.sum(axis=1)
    room = free.sum(axis=2)
    cap = g if max_replicas is None else int(max_replicas)
    counts = replicate_greedy(load, start.sum(axis=1) + room.sum(axis=1), max_replicas=cap,
                              start=start)  # fmt: skip
    per_copy = load / np.maximum(counts, 1)
    gl = np.einsum("mge,me->mg", cnt, per_copy)
    extra = counts - start  # [M, E] replicas to place
    n = extra.sum(axis=1)
    if n.max(initial=0) == 0:
        return se
    # replicas of each row, heaviest first: [M, K] expert ids (-1 padding)
    k = int(n.max())
    flat = np.repeat(np.tile(np.arange(e), m), extra.ravel())
    row = np.repeat(np.arange(m), n)
    pos = np.arange(flat.size) - np.repeat(np.cumsum(n) - n, n)
    items = np.full((m, k), -1, dtype=np.int64)
    items[row, pos] = flat
    weight = np.where(items >= 0, per_copy[np.arange(m)[:, None], np.maximum(items, 0)], -1.0)
    order = np.argsort(-weight, axis=1, kind="stable")
    items = np.take_along_axis(items, order, 1)
    weight = np.take_along_axis(weight, order, 1)
    rows = np.arange(m)
    for j in range(k):
        ex = items[:, j]
        live = ex >= 0
        exc = np.maximum(ex, 0)
        score = gl + weight[:, j][:, None]  # [M, G]
        ok = live[:, None] & (room > 0) & (cnt[rows, :, exc] == 0)
        score = np.where(ok, score, np.inf)
        best = score.min(axis=1)
        go = np.isfinite(best)
        if not go.any():
            continue
        near = score <= best[:, None] * (1 + migration_slack) + 1e-12 * np.abs(best)[:, None]
        if fetch_s is not None:
            fc = np.where(near, fetch_s[rows, :, exc], np.inf)
            near &= fc <= fc.min(axis=1, keepdims=True)
        tg = np.argmin(np.where(near, score, np.inf), axis=1)
        a, tg, eb = rows[go], tg[go], exc[go]
        gl[a, tg] += weight[a, j]
        cnt[a, tg, eb] += 1
        room[a, tg] -= 1
        fs = np.argmax(free[a, tg], axis=1)
        se[a, tg, fs] = eb
        free[a, tg, fs] = False
    return se


def _fetch_total(slot_expert: np.ndarray, ref_has: np.ndarray, fetch_s: np.ndarray | None):
    """``[M]`` summed fetch cost of the copies in ``slot_expert [M, G, R]`` on GPUs that do not
    hold that expert in the reference (``ref_has [M, G, E]`` bool)."""
    if fetch_s is None:
        return np.zeros(slot_expert.shape[0])
    m, g, _ = slot_expert.shape
    li, gi = np.arange(m)[:, None, None], np.arange(g)[None, :, None]
    x = np.maximum(slot_expert, 0)
    new = (slot_expert >= 0) & ~ref_has[li, gi, x]
    return np.where(new, fetch_s[li, gi, x], 0.0).sum(axis=(1, 2))


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
) -> Plan:
    """Duplication plan that rewrites spare slots only (module docstring).

    Candidates per layer: home copies only; ``grow_replicas`` (busiest GPU first);
    ``pack_replicas`` (counts first, LPT); with ``previous``, ``grow_replicas`` on top of
    ``previous`` (its replicas stay, new ones only fill its empty spare slots). Kept: the lowest
    predicted max GPU load; among candidates within ``(1 + migration_slack)`` of it, the
    cheapest to fetch (``fetch_s``), then the fewest replicas.

    Args:
        load: ``[L, E]`` predicted tokens per expert, >= 0.
        home: plan whose ``home`` slots are kept (e.g. ``static_placement(...)``, whose home
            slots are its occupied slots); its spare slots are rewritten.
        previous: the plan in place (same home slots); its replicas that stay keep their slot.
        fetch_s: ``[L, G, E]`` cost of bringing ``e`` to ``g`` from ``previous``
            (``gps.plans.migration.fetch_seconds``); ``None``: placement by balance only.
        migration_slack: relative balance traded for cheaper fetches (>= 0; ``0``: only ties).
        max_replicas: copies per expert at most (default ``G``).
        exact: add each layer's exact optimum with these home copies (``gps.plans.exact``;
            ``E <= 16``, ``G <= 8``) as a candidate; ``meta["exact_status"]`` [L].
        exact_time_limit_s: HiGHS time limit per layer.

    Returns:
        ``Plan`` with ``home`` = ``home.home``; ``meta``: ``choice`` [L] candidate names,
        ``predicted_max_load`` [L], ``home_max_load`` [L] (home copies only), ``lower_bound``
        [L]. By construction ``predicted_max_load <= home_max_load`` in every layer.

    Raises:
        ValueError: bad loads, a ``home`` plan without home slots, shapes that differ, a
            negative ``migration_slack``.
    """
    load = check_load(load)
    if home.home is None:
        raise ValueError("home: the plan has no home slots (Plan.home is None)")
    nl, g, r = home.slot_expert.shape
    e = home.num_experts
    if load.shape != (nl, e):
        raise ValueError(f"load: shape {load.shape}, expected [L, E] = [{nl}, {e}]")
    if not migration_slack >= 0:
        raise ValueError(f"migration_slack: must be >= 0, got {migration_slack}")
    if previous is not None and (
        previous.slot_expert.shape != home.slot_expert.shape
        or previous.home is None
        or not np.array_equal(previous.home, home.home)
    ):
        raise ValueError("previous: must have the same [L, G, R] and home slots as home")
    if fetch_s is not None and np.shape(fetch_s) != (nl, g, e):
        raise ValueError(f"fetch_s: shape {np.shape(fetch_s)}, expected [L, G, E] = {[nl, g, e]}")
    spare = ~home.home
    base = np.where(home.home, home.slot_expert, -1)
    kw = {"fetch_s": fetch_s, "migration_slack": migration_slack, "max_replicas": max_replicas}
    names = ["home-only", "busiest-first", "counts-first"]
    cands = [base, grow_replicas(load, base, spare, **kw), pack_replicas(load, base, spare, **kw)]
    if previous is not None:
        names.append("top-up")
        cands.append(grow_replicas(load, previous.slot_expert, spare, **kw))
    maxes = np.stack([max_gpu_load(c, load) for c in cands])  # [C, L]
    status = None
    if exact:
        check_small(e, g)
        best = np.stack(cands)[np.argmin(maxes, axis=0), np.arange(nl)]
        solved, status = exact_candidates(load, g, r, best, home=base, max_replicas=max_replicas,
                                          time_limit_s=exact_time_limit_s)  # fmt: skip
        names.append("exact")
        cands.append(solved)
        maxes = np.concatenate([maxes, max_gpu_load(solved, load)[None]])
    stacked = np.stack(cands)  # [C, L, G, R]
    ref_has = expert_gpu_counts(base if previous is None else previous.slot_expert, e) > 0
    fetch = np.stack([_fetch_total(c, ref_has, fetch_s) for c in cands])
    used = (stacked >= 0).sum(axis=(2, 3)).astype(float)
    best = maxes.min(axis=0)
    near = maxes <= best * (1 + migration_slack) + 1e-12 * np.abs(best)
    fetch = np.where(near, fetch, np.inf)
    near &= fetch <= fetch.min(axis=0)
    choice = np.argmin(np.where(near, used, np.inf), axis=0)
    se = stacked[choice, np.arange(nl)]
    if previous is not None:
        se = keep_slots(se, spare, previous.slot_expert)
    return Plan(
        se,
        e,
        meta={
            "planner": "spare",
            "choice": [names[c] for c in choice],
            "predicted_max_load": maxes[choice, np.arange(nl)],
            "home_max_load": maxes[0],
            "lower_bound": load.sum(axis=1) / g,
            **({} if status is None else {"exact_status": status}),
        },
        home=home.home,
    )
