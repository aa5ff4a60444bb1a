"""Dynamic expert duplication from a predicted load: greedy replication + balanced packing.

One algorithm per function, each vectorised over rows ``M`` (layers, or layer x node):

* ``replicate_greedy``: how many replicas each expert gets (next slot to the expert with the
  largest load per replica), as in DeepSeek's EPLB ``replicate_experts``.
* ``pack_balanced``: which GPU each replica goes to (heaviest replica first to the
  least-loaded GPU with a free slot that does not hold the expert yet; LPT).
* ``refine_swaps``: local search on the packing (move/swap a replica off the busiest GPU while
  that lowers the pair's maximum).
* ``plan_duplication``: the planner: several candidates per layer, the best one kept.
* ``plan_duplication_node_aware``: hierarchical variant for multi-node clusters.

A replica of expert ``e`` with ``c_e`` replicas carries ``load_e / c_e`` predicted tokens (the
even split of ``gps.simulate``). The loop over replicas (``G*R`` steps) is vectorised over rows.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from gps.plans.exact import check_small, exact_candidates
from gps.plans.placement import static_slot_expert
from gps.plans.plan import Plan, check_load, check_slots, expert_gpu_counts

CANDIDATES = ("static-contiguous", "static-round-robin", "lpt-no-dup", "greedy-lpt", "refined")


def balanced_lower_bound(load: np.ndarray, num_gpus: int) -> np.ndarray:
    """Lower bound of any plan's maximum GPU load: ``sum_e load / G``; ``[L, E] -> [L]``."""
    return np.asarray(load, dtype=float).sum(axis=-1) / num_gpus


def slots_needed(load: np.ndarray, num_gpus: int) -> np.ndarray:
    """Replica slots the skew needs: ``sum_e ceil(load_e / (sum load / G))``, ``[L, E] -> [L]``.

    With that many slots every replica can carry at most the balanced GPU load.
    """
    load = np.asarray(load, dtype=float)
    mean = load.sum(axis=-1, keepdims=True) / num_gpus
    ratio = np.divide(load, mean, out=np.zeros_like(load), where=mean > 0)
    return np.maximum(np.ceil(ratio - 1e-9), 1).astype(np.int64).sum(axis=-1)


def replicate_greedy(
    load: np.ndarray,
    num_slots: int | np.ndarray,
    *,
    member: np.ndarray | None = None,
    max_replicas: int | None = None,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Replica counts: one per (member) expert, then each further slot to the expert with the
    largest ``load / replicas``.

    A slot is left unused when every candidate has zero load or ``max_replicas`` replicas (a
    replica beyond one per GPU cannot help), so ``counts.sum(1) <= num_slots``.

    Args:
        load: ``[M, E]`` predicted tokens per expert (>= 0).
        num_slots: slots per row, int or ``[M]``.
        member: ``[M, E]`` bool, experts this row must place (default all).
        max_replicas: cap per expert (default unlimited).
        start: ``[M, E]`` copies already placed (e.g. home copies), instead of one per member;
            they count against ``num_slots``.

    Returns:
        ``[M, E]`` int64 replica counts (0 for non-members).
    """
    load = np.asarray(load, dtype=float)
    m, e = load.shape
    member = np.ones((m, e), dtype=bool) if member is None else np.asarray(member, dtype=bool)
    counts = member.astype(np.int64) if start is None else np.array(start, dtype=np.int64)
    budget = np.broadcast_to(np.asarray(num_slots, dtype=np.int64), (m,)) - counts.sum(axis=1)
    if np.any(budget < 0):
        raise ValueError("num_slots: fewer slots than experts to place")
    cap = np.iinfo(np.int64).max if max_replicas is None else int(max_replicas)
    ratio = np.where(member & (counts < cap), load / np.maximum(counts, 1), -np.inf)
    rows = np.arange(m)
    for _ in range(int(budget.max(initial=0))):
        best = np.argmax(ratio, axis=1)
        active = (budget > 0) & (ratio[rows, best] > 0)
        if not active.any():
            break
        r, b = rows[active], best[active]
        counts[r, b] += 1
        budget[r] -= 1
        ratio[r, b] = np.where(counts[r, b] < cap, load[r, b] / counts[r, b], -np.inf)
    return counts


def _replica_lists(load: np.ndarray, counts: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Replicas of each row, heaviest first: ``(expert [M, size], weight [M, size])``, padded
    with expert ``-1`` and weight ``-1``."""
    m, e = counts.shape
    n = counts.sum(axis=1)
    flat = np.repeat(np.tile(np.arange(e), m), counts.ravel())
    row = np.repeat(np.arange(m), n)
    pos = np.arange(flat.size) - np.repeat(np.cumsum(n) - n, n)
    experts = np.full((m, size), -1, dtype=np.int64)
    experts[row, pos] = flat
    weight = np.full((m, size), -1.0)
    weight[row, pos] = load[row, flat] / counts[row, flat]
    order = np.argsort(-weight, axis=1, kind="stable")
    return np.take_along_axis(experts, order, 1), np.take_along_axis(weight, order, 1)


def pack_balanced(
    load: np.ndarray, counts: np.ndarray, num_gpus: int, slots_per_gpu: int
) -> np.ndarray:
    """Place replicas on GPUs, heaviest first, each on the least-loaded GPU with a free slot
    (LPT), avoiding a GPU that already holds the expert while another GPU with room does not.

    Args:
        load: ``[M, E]`` predicted tokens per expert.
        counts: ``[M, E]`` replicas per expert, row sums ``<= G*R``.
        num_gpus: ``G``.
        slots_per_gpu: ``R``.

    Returns:
        ``[M, G, R]`` int64 expert per slot, ``-1`` = empty. Loop of ``max replicas`` steps,
        each vectorised over the ``M`` rows.
    """
    g, r = num_gpus, slots_per_gpu
    m, e = counts.shape
    if np.any(counts.sum(axis=1) > g * r):
        raise ValueError(f"counts: more replicas than num_gpus * slots_per_gpu = {g * r}")
    experts, weight = _replica_lists(np.asarray(load, dtype=float), counts, g * r)
    out = np.full((m, g, r), -1, dtype=np.int64)
    gpu_load = np.zeros((m, g))
    used = np.zeros((m, g), dtype=np.int64)
    has = np.zeros((m, g, e + 1), dtype=bool)  # column e (= index -1) is "empty": never set
    rows = np.arange(m)
    for s in range(int(counts.sum(axis=1).max(initial=0))):
        ex = experts[:, s]
        active = ex >= 0
        free = used < r
        ok = free & ~has[rows, :, ex]
        ok = np.where(ok.any(axis=1, keepdims=True), ok, free)
        gpu = np.argmin(np.where(ok, gpu_load, np.inf), axis=1)
        ra, ga, ea = rows[active], gpu[active], ex[active]
        out[ra, ga, used[ra, ga]] = ea
        gpu_load[ra, ga] += weight[active, s]
        used[ra, ga] += 1
        has[ra, ga, ea] = True
    return out


def _slot_weights(slot_expert: np.ndarray, load: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[M, G, R]`` predicted tokens per slot (``load / counts``; 0 for empty slots)."""
    m = slot_expert.shape[0]
    se = np.maximum(slot_expert, 0)
    rows = np.arange(m)[:, None, None]
    w = load[rows, se] / np.maximum(counts[rows, se], 1)
    return np.where(slot_expert >= 0, w, 0.0)


def max_gpu_load(slot_expert: np.ndarray, load: np.ndarray) -> np.ndarray:
    """Predicted maximum GPU load ``[M]`` of ``slot_expert [M, G, R]`` under ``load [M, E]``
    (tokens split evenly over replicas)."""
    load = np.asarray(load, dtype=float)
    m, e = load.shape
    idx = np.where(slot_expert >= 0, slot_expert, e) + (np.arange(m) * (e + 1))[:, None, None]
    counts = np.bincount(idx.ravel(), minlength=m * (e + 1)).reshape(m, e + 1)[:, :e]
    return _slot_weights(slot_expert, load, counts).sum(axis=2).max(axis=1)


def refine_swaps(
    slot_expert: np.ndarray,
    load: np.ndarray,
    max_iter: int = 64,
    partners: int = 8,
    rel_tol: float = 1e-9,
) -> np.ndarray:
    """Local search: swap a replica on the busiest GPU ``h`` with a lighter replica (or an
    empty slot) on one of the ``partners`` least-loaded GPUs ``g`` whenever
    ``max(load_h', load_g') < load_h``.

    The best such swap (lowest pair maximum) is applied per row and iteration; swaps never put
    two replicas of one expert on a GPU. Replica counts do not change. Each iteration is
    vectorised over the rows still improving (``[rows, R, partners*R]`` candidates); stops
    after ``max_iter`` iterations.

    Args:
        slot_expert: ``[M, G, R]`` expert ids, ``-1`` = empty.
        load: ``[M, E]`` predicted tokens per expert.

    Returns:
        ``[M, G, R]`` refined copy; its max GPU load is ``<=`` the input's in every row.
    """
    load = np.asarray(load, dtype=float)
    m, g, r = slot_expert.shape
    e = load.shape[1]
    if g < 2:
        return slot_expert.copy()
    p = min(partners, g - 1)
    cnt = np.zeros((m, g, e + 1), dtype=np.int64)
    cnt[..., :e] = expert_gpu_counts(slot_expert, e)
    counts = cnt.sum(axis=1)[:, :e]
    se = slot_expert.reshape(m, g * r).copy()
    w = _slot_weights(slot_expert, load, counts).reshape(m, g * r)
    gload = w.reshape(m, g, r).sum(axis=2)
    active = np.arange(m)
    for _ in range(max_iter):
        if active.size == 0:
            break
        a = active
        n = a.size
        h = np.argmax(gload[a], axis=1)
        lh = gload[a, h]
        part = np.argpartition(gload[a], p - 1, axis=1)[:, :p]  # [A, P] lightest GPUs
        hs = h[:, None] * r + np.arange(r)  # [A, R] slots of the busiest GPU
        ps = (part[:, :, None] * r + np.arange(r)).reshape(n, p * r)  # [A, P*R]
        pgpu = np.repeat(part, r, axis=1)  # [A, P*R] GPU of each partner slot
        wh, eh = np.take_along_axis(w[a], hs, 1), np.take_along_axis(se[a], hs, 1)
        wp, ep = np.take_along_axis(w[a], ps, 1), np.take_along_axis(se[a], ps, 1)
        delta = wh[:, :, None] - wp[:, None, :]  # [A, R, P*R] load moved from h to pgpu
        gp = np.take_along_axis(gload[a], pgpu, 1)
        score = np.maximum(gp[:, None, :] + delta, lh[:, None, None] - delta)
        tol = rel_tol * np.maximum(lh, 1e-300)[:, None, None]
        valid = (delta > tol) & (score < lh[:, None, None] - tol)
        valid &= (pgpu != h[:, None])[:, None, :]
        valid &= ~(cnt[a[:, None, None], pgpu[:, None, :], eh[:, :, None]] > 0)
        valid &= ~(cnt[a[:, None], h[:, None], ep] > 0)[:, None, :]
        score = np.where(valid, score, np.inf).reshape(n, r * p * r)
        best = np.argmin(score, axis=1)
        ok = np.isfinite(score[np.arange(n), best])
        if not ok.any():
            break
        a, h, best = a[ok], h[ok], best[ok]
        slot_h = h * r + best // (p * r)
        slot_g = ps[ok, best % (p * r)]
        gg = slot_g // r
        e_h, e_g = se[a, slot_h], se[a, slot_g]
        d = w[a, slot_h] - w[a, slot_g]
        se[a, slot_h], se[a, slot_g] = e_g, e_h
        w[a, slot_h], w[a, slot_g] = w[a, slot_g], w[a, slot_h] + 0.0
        gload[a, h] -= d
        gload[a, gg] += d
        np.subtract.at(cnt, (a, h, e_h), 1)
        np.add.at(cnt, (a, gg, e_h), 1)
        np.subtract.at(cnt, (a, gg, e_g), 1)
        np.add.at(cnt, (a, h, e_g), 1)
        cnt[..., e] = 0
        active = a
    return se.reshape(m, g, r)


def align_to_previous(
    slot_expert: np.ndarray, previous: Plan, gpus_per_node: int | None = None
) -> np.ndarray:
    """Relabel GPUs per layer (inside each node) to keep as many replicas where ``previous``
    already has them (fewer weights to migrate); predicted loads do not change.

    Args:
        slot_expert: ``[L, G, R]`` new plan.
        previous: plan with the same ``L``, ``G`` and ``E``.
        gpus_per_node: GPUs per node (``None`` = one node); GPUs only move within a node.

    Returns:
        ``[L, G, R]`` with GPU ``g``'s slots replaced by those of a matched GPU. One
        ``linear_sum_assignment`` per layer and node.
    """
    nl, g, _ = slot_expert.shape
    e = previous.num_experts
    if previous.slot_expert.shape[:2] != (nl, g):
        raise ValueError(
            f"previous: plan shape {previous.slot_expert.shape} does not match [L, G] = [{nl}, {g}]"
        )
    per_node = g if gpus_per_node is None else int(gpus_per_node)
    new_has = (expert_gpu_counts(slot_expert, e) > 0).astype(float)
    old_has = (previous.expert_gpu_counts() > 0).astype(float)
    overlap = np.einsum("lie,lje->lij", old_has, new_has)  # old GPU i keeps new GPU j's experts
    perm = np.empty((nl, g), dtype=np.int64)
    for layer in range(nl):
        for start in range(0, g, per_node):
            block = overlap[layer, start : start + per_node, start : start + per_node]
            rows, cols = linear_sum_assignment(block, maximize=True)
            perm[layer, start + rows] = start + cols
    return np.take_along_axis(slot_expert, perm[:, :, None], 1)


def _best_per_row(candidates: list[np.ndarray], load: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row, the candidate ``[M, G, R]`` with the lowest max GPU load, ties to fewer occupied
    slots, then to the earlier candidate. Returns ``(slot_expert, choice [M], max_loads [C, M])``.
    """
    maxes = np.stack([max_gpu_load(c, load) for c in candidates])  # [C, M]
    used = np.stack([(c >= 0).sum(axis=(1, 2)) for c in candidates]).astype(float)
    best = maxes.min(axis=0)
    tied = maxes <= best * (1 + 1e-12) + 1e-300
    choice = np.argmin(np.where(tied, used, np.inf), axis=0)
    stacked = np.stack(candidates)
    return stacked[choice, np.arange(load.shape[0])], choice, maxes


def plan_duplication(
    load: np.ndarray,
    num_gpus: int,
    slots_per_gpu: int,
    *,
    max_replicas: int | None = None,
    refine_iters: int = 64,
    previous: Plan | None = None,
    gpus_per_node: int | None = None,
    exact: bool = False,
    exact_time_limit_s: float = 5.0,
) -> Plan:
    """Duplication plan minimising the predicted maximum GPU load, per layer.

    Candidates per layer: static contiguous and round-robin placement, LPT packing without
    replicas (no duplication), greedy replication + LPT packing, and the same after
    ``refine_swaps``. The one with the lowest predicted max GPU load is kept (ties: fewer
    occupied slots, i.e. fewer weights to read), so by construction the plan is never worse
    than no duplication nor than greedy without refinement.

    Args:
        load: ``[L, E]`` predicted tokens (or proportions) per expert, >= 0.
        num_gpus: ``G``.
        slots_per_gpu: ``R``; ``G*R >= E``.
        max_replicas: cap per expert (default ``G``: one per GPU).
        refine_iters: swap iterations of ``refine_swaps`` (0 disables).
        previous: earlier plan; GPUs are relabelled (``align_to_previous``) to move fewer
            weights (``migration_bytes(previous, plan, ...)``).
        gpus_per_node: limits that relabelling to within nodes.
        exact: add the exact optimum of each layer (``gps.plans.exact``, HiGHS MILP;
            ``E <= 16`` and ``G <= 8`` only) as a candidate; ``meta["exact_status"]`` [L].
        exact_time_limit_s: HiGHS time limit per layer.

    Returns:
        ``Plan``; ``meta``: ``choice`` [L] candidate names, ``predicted_max_load`` [L],
        ``lower_bound`` [L] (``balanced_lower_bound``), ``candidate_max_load`` {name: [L]}.

    Raises:
        ValueError: negative/non-finite loads, ``R < 1``, ``E > G*R``, ``exact`` on a layer
            larger than ``E <= 16``, ``G <= 8``.
    """
    load = check_load(load)
    nl, e = load.shape
    check_slots(e, num_gpus, slots_per_gpu)
    g, r = int(num_gpus), int(slots_per_gpu)
    cap = g if max_replicas is None else max_replicas
    ones = np.ones((nl, e), dtype=np.int64)
    greedy = pack_balanced(load, replicate_greedy(load, g * r, max_replicas=cap), g, r)
    candidates = [
        np.broadcast_to(static_slot_expert(e, g, r, "contiguous"), (nl, g, r)),
        np.broadcast_to(static_slot_expert(e, g, r, "round_robin"), (nl, g, r)),
        pack_balanced(load, ones, g, r),
        greedy,
        refine_swaps(greedy, load, refine_iters) if refine_iters > 0 else greedy,
    ]
    names = list(CANDIDATES)
    status = None
    if exact:
        check_small(e, g)
        best, _, _ = _best_per_row(candidates, load)
        solved, status = exact_candidates(load, g, r, best, max_replicas=cap,
                                          time_limit_s=exact_time_limit_s)  # fmt: skip
        candidates.append(solved)
        names.append("exact")
    slot_expert, choice, maxes = _best_per_row(candidates, load)
    if previous is not None:
        slot_expert = align_to_previous(slot_expert, previous, gpus_per_node)
    return Plan(
        slot_expert,
        e,
        meta={
            "planner": "duplication",
            "choice": [names[c] for c in choice],
            "predicted_max_load": maxes.min(axis=0),
            "lower_bound": balanced_lower_bound(load, g),
            "candidate_max_load": dict(zip(names, maxes, strict=True)),
            **({} if status is None else {"exact_status": status}),
        },
    )


def assign_home_nodes(
    load: np.ndarray, source_load: np.ndarray, node_slots: int, balance_slack: float = 0.05
) -> np.ndarray:
    """Home node of every expert: heaviest expert first, to the node sending it the most
    tokens among nodes with room whose load stays within ``(1 + slack) * total / N``; else to
    the least-loaded node with room. Room: at most ``ceil(E/N)`` experts (and ``node_slots``).

    Args:
        load: ``[L, E]``; source_load: ``[L, N, E]`` tokens from node ``n`` to expert ``e``.
        node_slots: slots per node ``gpus_per_node * R``.

    Returns:
        ``[L, E]`` int64 node index. Loop over ``E`` experts, vectorised over layers.
    """
    nl, n, e = source_load.shape
    cap = min(-(-e // n), node_slots)
    target = load.sum(axis=1) / n * (1 + balance_slack)  # [L]
    node_load = np.zeros((nl, n))
    node_count = np.zeros((nl, n), dtype=np.int64)
    home = np.zeros((nl, e), dtype=np.int64)
    order = np.argsort(-load, axis=1, kind="stable")
    rows = np.arange(nl)
    for step in range(e):
        ex = order[:, step]
        w = load[rows, ex]
        room = node_count < cap
        fits = room & (node_load + w[:, None] <= target[:, None] * (1 + 1e-12))
        affinity = source_load[rows, :, ex]  # [L, N]
        by_affinity = np.argmax(np.where(fits, affinity - 1e-9 * node_load, -np.inf), axis=1)
        by_load = np.argmin(np.where(room, node_load, np.inf), axis=1)
        node = np.where(fits.any(axis=1), by_affinity, by_load)
        home[rows, ex] = node
        node_load[rows, node] += w
        node_count[rows, node] += 1
    return home


def cross_node_copies(slot_expert: np.ndarray, source_load: np.ndarray, gpus_per_node: int):
    """Predicted token copies crossing nodes under locality-first routing, ``[L]``: tokens from
    node ``n`` to expert ``e`` cross iff node ``n`` holds no replica of ``e``.

    Args:
        slot_expert: ``[L, G, R]``; source_load: ``[L, N, E]``.
    """
    nl, n, e = source_load.shape
    on_node = expert_gpu_counts(slot_expert, e).reshape(nl, n, gpus_per_node, e).sum(axis=2) > 0
    return np.where(on_node, 0.0, source_load).sum(axis=(1, 2))


def plan_duplication_node_aware(
    load: np.ndarray,
    num_gpus: int,
    slots_per_gpu: int,
    gpus_per_node: int,
    *,
    source_load: np.ndarray | None = None,
    balance_slack: float = 0.05,
    max_replicas: int | None = None,
    refine_iters: int = 64,
    previous: Plan | None = None,
) -> Plan:
    """Hierarchical duplication: keep all replicas of an expert in its home node when it pays.

    1. ``assign_home_nodes``: each expert gets a home node (where its tokens come from, within
       the balance slack).
    2. Per node, ``replicate_greedy`` over the node's ``gpus_per_node * R`` slots for its home
       experts, ``pack_balanced`` + ``refine_swaps`` onto the node's GPUs (vectorised over
       layer x node rows).
    3. It pays in layer ``l`` when it sends fewer predicted token copies across nodes
       (``cross_node_copies``, locality-first routing) than the flat ``plan_duplication`` plan
       *and* its predicted max GPU load is within ``(1 + balance_slack)`` of the flat plan's;
       otherwise the layer keeps the flat plan.

    Args:
        load: ``[L, E]`` predicted tokens per expert.
        num_gpus, slots_per_gpu: ``G`` (a multiple of ``gpus_per_node``), ``R``.
        gpus_per_node: GPUs per node.
        source_load: ``[L, N, E]`` predicted tokens from node ``n`` to expert ``e`` (sums over
            ``N`` to ``load``); ``None`` = every node sends ``load / N`` (data-parallel
            attention with uniform routing over sources).
        balance_slack: tolerated relative increase of the max GPU load (>= 0).

    Returns:
        ``Plan``; ``meta``: ``node_aware`` [L] bool (hierarchical layout used),
        ``predicted_max_load`` [L], ``cross_node_copies`` [L], ``flat_cross_node_copies`` [L].
    """
    load = check_load(load)
    nl, e = load.shape
    check_slots(e, num_gpus, slots_per_gpu)
    g, r = int(num_gpus), int(slots_per_gpu)
    if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int | np.integer):
        raise ValueError(f"gpus_per_node: expected an integer, got {gpus_per_node!r}")
    if gpus_per_node < 1 or g % gpus_per_node:
        raise ValueError(f"gpus_per_node: {gpus_per_node} must divide num_gpus={g}")
    if not balance_slack >= 0:
        raise ValueError(f"balance_slack: must be >= 0, got {balance_slack}")
    n, gpn = g // gpus_per_node, int(gpus_per_node)
    if source_load is None:
        source_load = np.broadcast_to(load[:, None, :] / n, (nl, n, e))
    source_load = np.asarray(source_load, dtype=float)
    if source_load.shape != (nl, n, e):
        raise ValueError(
            f"source_load: shape {source_load.shape}, expected [L, N, E] = {[nl, n, e]}"
        )
    if not np.all(np.isfinite(source_load)) or np.any(source_load < 0):
        raise ValueError("source_load: must be finite and >= 0")
    flat = plan_duplication(load, g, r, max_replicas=max_replicas, refine_iters=refine_iters)
    flat_cross = cross_node_copies(flat.slot_expert, source_load, gpn)
    flat_max = flat.meta["predicted_max_load"]
    if n == 1:
        hier = flat.slot_expert
    else:
        home = assign_home_nodes(load, source_load, gpn * r, balance_slack)
        member = (home[:, None, :] == np.arange(n)[None, :, None]).reshape(nl * n, e)
        rows_load = np.where(member, np.repeat(load, n, axis=0), 0.0)
        cap = gpn if max_replicas is None else max_replicas
        counts = replicate_greedy(rows_load, gpn * r, member=member, max_replicas=cap)
        packed = pack_balanced(rows_load, counts, gpn, r)
        if refine_iters > 0:
            packed = refine_swaps(packed, rows_load, refine_iters)
        hier = packed.reshape(nl, g, r)
    hier_cross = cross_node_copies(hier, source_load, gpn)
    hier_max = max_gpu_load(hier, load)
    use = (hier_cross < flat_cross) & (hier_max <= flat_max * (1 + balance_slack) + 1e-300)
    slot_expert = np.where(use[:, None, None], hier, flat.slot_expert)
    if previous is not None:
        slot_expert = align_to_previous(slot_expert, previous, gpn)
    return Plan(
        slot_expert,
        e,
        meta={
            "planner": "duplication-node-aware",
            "node_aware": use,
            "predicted_max_load": np.where(use, hier_max, flat_max),
            "lower_bound": balanced_lower_bound(load, g),
            "cross_node_copies": np.where(use, hier_cross, flat_cross),
            "flat_cross_node_copies": flat_cross,
        },
    )
