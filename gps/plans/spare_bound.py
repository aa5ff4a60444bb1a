"""Certified lower bound of the max GPU load when home copies are fixed (``plan_spare``'s
problem), so that "the homes prevent it" is a measured statement.

Setting (one layer): GPU ``g`` holds fixed home copies, ``h_e >= 1`` of expert ``e`` in all,
and ``S_g`` free spare slots, each able to hold one replica; expert ``e`` ends with ``c_e``
copies (``h_e <= c_e <= cap``), each carrying ``l_e / c_e`` (the even split). ``W = sum l``;
``HL_g`` is GPU ``g``'s load with home copies only (``c = h``). A plan reaches max load ``T``
only if every GPU's load is at most ``T``.

**Export bound.** Split the GPUs into a heavy set ``H`` and a light set ``A`` (any split).
Call the ``c_e - h_e`` replicas of ``e`` its *lumps*, each weighing ``l_e / c_e``. Then

    T >= (sum_{g in H} HL_g - Lambda_H(n_A)) / |H|,   n_A = sum_{g in A} S_g,

where ``Lambda_H(n)`` is the largest total weight ``n`` lumps of experts with a home copy in
``H`` can have: the sum of the ``n`` largest gains ``l_e h_e / ((h_e + j)(h_e + j - 1))``,
``j = 1 .. cap - h_e``, over those experts (the ``j``-th lump of ``e`` adds that much to
``j l_e / (h_e + j)``, the weight of ``j`` lumps; the gains fall with ``j``, so the largest
``n`` gains of all experts give the largest total).

*Proof.* In a plan of max load ``T`` the load of ``H`` is at most ``|H| T``. Its home copies
carry ``sum_e n_e l_e / c_e`` (``n_e``: home copies of ``e`` in ``H``), which falls short of
``sum_{g in H} HL_g = sum_e n_e l_e / h_e`` by ``sum_e (n_e / h_e)(c_e - h_e) l_e / c_e``, at
most the total weight of the lumps of ``H``'s experts. Those hosted in ``H`` add back to
``H``'s load, so ``H``'s load is at least ``sum_H HL_g`` minus the weight of ``H``'s lumps
hosted in ``A``. ``A`` has ``n_A`` spare slots, so at most ``n_A`` such lumps; ``j`` lumps of
``e`` weigh ``j l_e / c_e <= j l_e / (h_e + j)`` because ``c_e >= h_e + j``; so they weigh at
most ``Lambda_H(n_A)``. Hence ``|H| T >= sum_H HL_g - Lambda_H(n_A)``. QED.

``A = {}`` gives ``T >= W / G``. The bound takes the best ``H`` among the ``G`` splits "the
``k`` GPUs of largest ``HL_g``" (``k = 1 .. G``), together with ``T >= l_e / min(cap, h_e +
sum S)`` (a copy carries ``l_e / c_e``). It ignores that a GPU holds an expert once and the
lumps' sizes on each host, so it may lie below the optimum; every plan's max load is at least
the bound.

Shapes: ``L`` layers, ``G`` GPUs, ``R`` slots per GPU, ``E`` experts, ``J`` lumps per expert
at most.
"""

from __future__ import annotations

import numpy as np

from gps.plans.plan import Plan, check_load, expert_gpu_counts


def export_bound(load: np.ndarray, home_experts: np.ndarray, room: np.ndarray, cap: int):
    """The bound of the module docstring for every row.

    Args:
        load: ``[M, E]`` tokens per expert (>= 0).
        home_experts: ``[M, G, E]`` int home copies of ``e`` on GPU ``g`` (every expert >= 1).
        room: ``[M, G]`` int free spare slots.
        cap: copies per expert at most (``>= 1``).

    Returns:
        ``[M]`` lower bound of the max GPU load (tokens). Work ``O(G * E * J)`` per row.
    """
    load = np.asarray(load, dtype=float)
    hm = np.asarray(home_experts, dtype=np.int64)
    m, g, _ = hm.shape
    h = hm.sum(axis=1)  # [M, E]
    hl = np.einsum("mge,me->mg", hm, load / np.maximum(h, 1))  # home-only loads
    total = np.asarray(room).sum(axis=1)
    most = np.minimum(cap, h + total[:, None])  # copies of e at most
    best = np.maximum(load.sum(axis=1) / g, (load / np.maximum(most, 1)).max(axis=1))
    nj = int(np.maximum(most - h, 0).max(initial=0))
    if nj == 0:  # no copy can move: every GPU keeps its home load
        return np.maximum(best, hl.max(axis=1))
    order = np.argsort(-hl, axis=1, kind="stable")  # heaviest GPU first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(g), (m, g)), 1)
    first = np.where(hm > 0, rank[:, :, None], g).min(axis=1)  # [M, E] heaviest home's rank
    j = np.arange(1, nj + 1)
    hh = h[:, :, None]
    gain = load[:, :, None] * hh / ((hh + j) * (hh + j - 1))
    gain = np.where(j <= (most - h)[:, :, None], gain, 0.0).reshape(m, -1)  # [M, E*J]
    owner = np.repeat(first, nj, axis=1)
    srt = np.argsort(-gain, axis=1, kind="stable")
    gain, owner = np.take_along_axis(gain, srt, 1), np.take_along_axis(owner, srt, 1)
    heavy = np.cumsum(np.take_along_axis(hl, order, 1), axis=1)  # [M, G] k heaviest: sum
    slots = np.cumsum(np.take_along_axis(np.asarray(room), order, 1)[:, ::-1], axis=1)
    for k in range(1, g):  # H = the k heaviest GPUs, A = the other G - k
        mine = owner < k
        take = mine & (np.cumsum(mine, axis=1) <= slots[:, g - k - 1][:, None])
        lam = np.where(take, gain, 0.0).sum(axis=1)
        best = np.maximum(best, (heavy[:, k - 1] - lam) / k)
    return best


def spare_lower_bound(load: np.ndarray, home: Plan, *, max_replicas: int | None = None):
    """Certified lower bound ``[L]`` of the max GPU load of any plan that keeps ``home``'s home
    copies and puts replicas in its spare slots (module docstring).

    Args:
        load: ``[L, E]`` predicted tokens per expert (>= 0).
        home: plan whose ``home`` slots are fixed (``Plan.home`` not ``None``).
        max_replicas: copies per expert at most (default ``G``).

    Raises:
        ValueError: bad loads, no home slots, a shape other than ``[L, E]``, ``max_replicas < 1``.
    """
    load = check_load(load)
    if home.home is None:
        raise ValueError("home: the plan has no home slots (Plan.home is None)")
    nl, g, _ = home.slot_expert.shape
    if load.shape != (nl, home.num_experts):
        raise ValueError(f"load: shape {load.shape}, expected [L, E] = [{nl}, {home.num_experts}]")
    cap = g if max_replicas is None else int(max_replicas)
    if cap < 1:
        raise ValueError(f"max_replicas: must be >= 1, got {max_replicas}")
    base = np.where(home.home, home.slot_expert, -1)
    return export_bound(load, expert_gpu_counts(base, home.num_experts), (~home.home).sum(axis=2),
                        min(cap, g))  # fmt: skip


def spare_lower_bound_layer(load: np.ndarray, home: np.ndarray, cap: int) -> float:
    """``export_bound`` of one layer: ``load [E]``, ``home [G, R]`` home copies (``-1`` = free
    spare slot), ``cap`` copies per expert at most."""
    load = np.asarray(load, dtype=float)
    home = np.asarray(home)
    hm = expert_gpu_counts(home[None], load.size)
    return float(export_bound(load[None], hm, (home < 0).sum(axis=1)[None], cap)[0])
