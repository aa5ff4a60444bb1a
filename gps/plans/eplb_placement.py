"""Static expert placement from recorded statistics, as the engines' EPLB lays it out.

An EPLB deployment has ``P = E + R`` *physical* experts per MoE layer (``R`` =
``num_redundant_experts``, SGLang ``--ep-num-redundant-experts``), ``P / G`` on each of the
``G`` expert-parallel GPUs; physical expert ``p`` lives on GPU ``p // (P / G)`` and holds
logical expert ``physical_to_logical_map[l, p]``. Every physical slot holds an expert.

* :func:`eplb_placement`: a balanced re-placement of the logical experts from a load
  ``[L, E]`` (recorded statistics), with ``R >= 0`` redundant copies: every slot to the
  expert with the largest load per copy (DeepSeek EPLB's replication rule,
  ``duplication.replicate_greedy``), copies packed heaviest first onto the least-loaded GPU
  (``pack_balanced``), then swap refinement (``refine_swaps``). With ``R = 0`` it is a pure
  re-placement (no contiguous homes), what SGLang users run first with
  ``--init-expert-location``.
* :func:`trivial_placement`: the engines' start layout (vLLM
  ``build_initial_global_physical_to_logical_map``, SGLang ``init_trivial``): physical ``p``
  holds logical ``p mod E``, so the redundant slots hold experts ``0 .. R-1`` again.
* :func:`physical_to_logical_map` / :func:`plan_from_physical_map` convert between a
  :class:`~gps.plans.plan.Plan` and the engines' ``[L, P]`` map;
  :func:`sglang_init_expert_location` is the JSON SGLang's ``--init-expert-location`` reads.

Shapes: ``L`` MoE layers, ``E`` logical experts, ``G`` GPUs, ``P = E + R`` physical experts.
"""

from __future__ import annotations

import numpy as np

from gps.plans.duplication import pack_balanced, refine_swaps, replicate_greedy
from gps.plans.plan import Plan, check_load


def physical_slots(num_experts: int, num_gpus: int, num_redundant: int) -> int:
    """Physical experts per GPU, ``(E + R) / G``.

    Raises:
        ValueError: ``R < 0`` or ``E + R`` not divisible by ``G`` (both engines refuse it:
            SGLang ``expert_location.py`` asserts ``num_physical_experts % ep_size == 0``,
            vLLM's fused MoE layer asserts ``global_num_experts % ep_size == 0`` with EPLB).
    """
    if isinstance(num_redundant, bool) or not isinstance(num_redundant, int | np.integer):
        raise ValueError(f"num_redundant_experts: expected an integer, got {num_redundant!r}")
    if num_redundant < 0:
        raise ValueError(f"num_redundant_experts: {num_redundant} < 0")
    if num_gpus < 1 or (num_experts + num_redundant) % num_gpus:
        raise ValueError(
            f"num_redundant_experts: E + R = {num_experts} + {num_redundant} is not divisible "
            f"by the {num_gpus} expert-parallel GPUs"
        )
    return (num_experts + num_redundant) // num_gpus


def eplb_placement(
    load: np.ndarray,
    num_gpus: int,
    num_redundant: int = 0,
    *,
    refine_iters: int = 64,
) -> Plan:
    """A balanced placement of every layer's logical experts, ``R`` redundant copies, all
    ``E + R`` physical slots filled.

    Args:
        load: ``[L, E]`` tokens per expert (recorded statistics, e.g. a window's mean).
        num_gpus: ``G``.
        num_redundant: ``R``; ``(E + R) % G == 0``.
        refine_iters: swap-refinement iterations (0: greedy + LPT only).

    Returns:
        ``Plan`` with ``slot_expert [L, G, (E + R) / G]``, no empty slot, ``home=None`` (a
        full re-layout); ``meta``: ``planner``, ``num_redundant_experts``.

    Raises:
        ValueError: a bad load or an ``R`` the engines refuse (:func:`physical_slots`).
    """
    load = check_load(load)
    e = load.shape[1]
    slots = physical_slots(e, num_gpus, num_redundant)
    # a tiny floor keeps zero-load experts eligible, so every slot is filled
    floor = 1e-9 * max(float(load.mean()), 1e-300)
    padded = load + floor
    counts = replicate_greedy(padded, e + num_redundant, max_replicas=num_gpus)
    se = pack_balanced(padded, counts, num_gpus, slots)
    if refine_iters > 0:
        se = refine_swaps(se, padded, max_iter=refine_iters)
    return Plan(se, e, meta={"planner": "eplb-static", "num_redundant_experts": int(num_redundant)})


def trivial_placement(
    num_layers: int, num_experts: int, num_gpus: int, num_redundant: int = 0
) -> Plan:
    """The engines' start layout: physical ``p`` holds logical ``p mod E``, GPU ``g`` the
    physical experts ``g P/G .. (g+1) P/G - 1`` (contiguous; ``R = 0`` is no balancing)."""
    slots = physical_slots(num_experts, num_gpus, num_redundant)
    phys = np.arange(num_gpus * slots) % num_experts
    se = np.broadcast_to(phys.reshape(num_gpus, slots), (num_layers, num_gpus, slots)).copy()
    return Plan(
        se, num_experts, meta={"planner": "trivial", "num_redundant_experts": int(num_redundant)}
    )


def physical_to_logical_map(plan: Plan) -> np.ndarray:
    """``[L, P]`` int64 logical expert of each physical expert ``p = g * (P/G) + r``.

    Raises:
        ValueError: the plan has an empty slot (the engines' maps have none).
    """
    se = plan.slot_expert
    if np.any(se < 0):
        raise ValueError("plan: an empty slot has no physical->logical entry (fill every slot)")
    return se.reshape(se.shape[0], -1).copy()


def plan_from_physical_map(
    mapping: np.ndarray, num_gpus: int, num_experts: int | None = None, meta: dict | None = None
) -> Plan:
    """The :class:`Plan` of an engine's ``[L, P]`` physical -> logical map on ``G`` GPUs.

    Raises:
        ValueError: ``P`` not divisible by ``G``, or a logical expert without a copy.
    """
    m = np.asarray(mapping, dtype=np.int64)
    if m.ndim != 2 or m.shape[1] % num_gpus:
        raise ValueError(
            f"physical_to_logical_map: shape {m.shape}: P must divide over {num_gpus} GPUs"
        )
    e = int(m.max()) + 1 if num_experts is None else int(num_experts)
    return Plan(m.reshape(m.shape[0], num_gpus, -1), e, meta=dict(meta or {}))


def sglang_init_expert_location(plan: Plan) -> dict:
    """What SGLang's ``--init-expert-location FILE.json`` reads: ``{"physical_to_logical_map":
    [L][P]}`` (``expert_location.py``: a dict holding ``physical_to_logical_map`` goes to
    ``ExpertLocationMetadata.init_by_mapping``; its only key, as it is passed as keyword
    arguments). Launch with ``--ep-num-redundant-experts P - E`` on ``G`` EP ranks."""
    return {"physical_to_logical_map": physical_to_logical_map(plan).tolist()}
