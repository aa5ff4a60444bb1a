"""Default cost-model inputs: uniform routing on a static placement, and dispatch traffic.

Used until ``gps/plans`` and ``gps/simulate.py`` provide real ``slot_tokens``/``traffic_bytes``.
"""

from __future__ import annotations

import numpy as np

from gps.cost._common import element_bytes, num_moe_layers
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import Workload


def traffic_from_slot_tokens(slot_tokens: np.ndarray, spec: MoEModelSpec) -> np.ndarray:
    """Dispatch bytes ``[..., G, G]`` when every GPU sources an equal share of each slot's tokens.

    With data-parallel token sources (each GPU holds ``1/G`` of the step's tokens and routing is
    independent of the source), GPU ``i`` sends ``n_j / G`` token copies to GPU ``j``, where
    ``n_j = sum_R slot_tokens[..., j, :]``; a copy is ``d * a`` bytes (one hidden vector; no
    de-duplication of a token's several experts on the same GPU). The diagonal stays local: 0.

    Args:
        slot_tokens: ``[..., G, R]`` token copies per expert slot.
        spec: Model (``hidden_size``, ``dtype``).

    Returns:
        ``[..., G, G]`` bytes sent from GPU ``i`` to GPU ``j``.
    """
    n = np.asarray(slot_tokens, dtype=float)
    g = n.shape[-2]
    per_source = n.sum(axis=-1) * (spec.hidden_size * element_bytes(spec) / g)  # [..., G]
    return per_source[..., None, :] * (1.0 - np.eye(g))


def uniform_slot_tokens(spec: MoEModelSpec, cluster: Cluster, workload: Workload) -> np.ndarray:
    """``[L_moe, G, R]`` token copies per slot for perfectly uniform routing, static placement.

    Each routed expert receives ``T*k/E`` token copies on average (``T =
    workload.tokens_per_step``). ``E >= G``: contiguous placement, ``R = ceil(E/G)``, GPU ``g``
    holds experts ``g*R .. g*R+R-1`` (slots past ``E`` stay empty). Small decode batches do not
    touch every expert: an expert is idle with probability ``(1 - k/E)**T`` (each token picks
    ``k`` distinct experts uniformly), so a GPU with ``R_g`` experts has
    ``b_g = R_g * (1 - (1 - k/E)**T)`` busy experts in expectation; its ``R_g*T*k/E`` copies are
    spread evenly over ``max(1, round(b_g))`` slots, the rest stay empty (their weights are not
    read). For large ``T``, ``b_g = R_g``. ``E < G``: ``R = 1``, GPU ``g`` holds a replica of
    expert ``floor(g*E/G)`` and the expert's tokens are split evenly over its replicas.
    """
    e, g = spec.num_experts, cluster.num_gpus
    if e < 1 or spec.top_k < 1:
        raise ValueError(f"model {spec.name!r}: num_experts={e}, top_k={spec.top_k} must be >= 1")
    per_expert = workload.tokens_per_step * spec.top_k / e
    if e >= g:
        r = -(-e // g)
        held = np.clip(e - np.arange(g) * r, 0, r)  # real experts per GPU
        busy = held * -np.expm1(workload.tokens_per_step * np.log1p(-spec.top_k / e))
        busy = np.where(held > 0, np.maximum(np.rint(busy), 1), 0)
        slot = np.arange(r)[None, :]
        share = np.divide(held * per_expert, busy, out=np.zeros(g), where=busy > 0)
        layer = np.where(slot < busy[:, None], share[:, None], 0.0)
    else:
        expert = (np.arange(g) * e) // g
        replicas = np.bincount(expert, minlength=e)
        layer = (per_expert / replicas[expert])[:, None]
    return np.broadcast_to(layer, (num_moe_layers(spec), *layer.shape)).copy()


def uniform_routing(
    spec: MoEModelSpec, cluster: Cluster, workload: Workload
) -> tuple[np.ndarray, np.ndarray]:
    """``(slot_tokens [L_moe, G, R], traffic_bytes [L_moe, G, G])`` for uniform routing.

    ``uniform_slot_tokens`` plus ``traffic_from_slot_tokens`` (data-parallel token sources).
    """
    slots = uniform_slot_tokens(spec, cluster, workload)
    return slots, traffic_from_slot_tokens(slots, spec)
