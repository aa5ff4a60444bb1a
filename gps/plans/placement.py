"""Static expert placement: the no-balancing baseline (no replicas, same in every layer)."""

from __future__ import annotations

import numpy as np

from gps.model import home_slot_expert
from gps.plans.plan import Plan, check_slots

LAYOUTS = ("contiguous", "round_robin")


def static_slot_expert(
    num_experts: int, num_gpus: int, slots_per_gpu: int | None = None, layout: str = "contiguous"
) -> np.ndarray:
    """``[G, R]`` expert id per slot of one layer, ``-1`` = empty.

    ``E >= G``: one copy of every expert. ``contiguous``: GPU ``g`` holds experts
    ``g*R0 .. g*R0+R0-1`` with ``R0 = ceil(E/G)`` (:func:`gps.model.home_slot_expert`, the
    one rule ``gps-trace inspect`` uses too; the cost model's default placement,
    ``gps.cost.routing.uniform_slot_tokens``); ``round_robin``: expert ``e`` sits on GPU
    ``e % G``, slot ``e // G``. ``E < G``: ``R0 = 1`` and GPU ``g`` holds a replica of expert
    ``floor(g*E/G)`` (both layouts), as in the cost model. Slots past ``R0`` stay empty.

    Args:
        num_experts: ``E``.
        num_gpus: ``G``.
        slots_per_gpu: ``R >= R0``; ``None`` = ``R0``.
        layout: ``"contiguous"`` or ``"round_robin"``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r} not in {LAYOUTS}")
    e, g = num_experts, num_gpus
    if isinstance(e, bool) or not isinstance(e, int | np.integer) or e < 1:
        raise ValueError(f"num_experts: expected an integer >= 1, got {e!r}")
    r0 = -(-e // g) if isinstance(g, int | np.integer) and g >= 1 else 1
    r = r0 if slots_per_gpu is None else slots_per_gpu
    check_slots(e, g, r)
    if r < r0:
        raise ValueError(f"slots_per_gpu: static placement needs ceil(E/G) = {r0}, got {r}")
    out = np.full((g, r), -1, dtype=np.int64)
    if e < g or layout == "contiguous":
        home = home_slot_expert(e, g)
        out[:, : home.shape[1]] = home
        return out
    ids = np.arange(e)
    out[ids % g, ids // g] = ids
    return out


def static_placement(
    num_layers: int,
    num_experts: int,
    num_gpus: int,
    slots_per_gpu: int | None = None,
    layout: str = "contiguous",
) -> Plan:
    """The same static placement (``static_slot_expert``) in every one of ``L`` layers.

    Returns:
        ``Plan`` with ``slot_expert [L, G, R]``; its occupied slots are its home slots
        (``Plan.home``), the rest are spare slots.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int | np.integer):
        raise ValueError(f"num_layers: expected an integer >= 1, got {num_layers!r}")
    if num_layers < 1:
        raise ValueError(f"num_layers: expected an integer >= 1, got {num_layers}")
    layer = static_slot_expert(num_experts, num_gpus, slots_per_gpu, layout)
    se = np.broadcast_to(layer, (num_layers, *layer.shape)).copy()
    return Plan(se, num_experts, meta={"planner": f"static-{layout}"}, home=se >= 0)
