"""Capacity-aware inference (He et al., arXiv 2503.05066): cap every expert's tokens.

Capacity per expert and layer: ``C = ceil(gamma * T * k / E)`` token copies (``gamma`` the
capacity factor, ``T`` the batch's tokens, ``k`` top-k; the ceiling is taken after subtracting
``1e-9`` so that ``gamma = 1`` on perfectly uniform routing drops nothing).

* **Token drop** (``capacity_drop``): an expert keeps its ``C`` highest-priority copies and
  drops the rest. Priority: higher gate score first (ties: earlier token); without scores,
  lower gate rank first (a token's first choice before its second), then earlier token.
* **Token reroute** (``capacity_reroute``): overflow copies move, highest priority first, to
  another expert with room that the token does not use yet. Traces store only the top-k
  gate scores, so the next-best expert beyond the top-k is unknown; the rule is *least-loaded
  first*: experts ordered by remaining room (most room first, ties to the lower id) are
  filled in turn (water-filling), skipping the token's own experts. Copies still without a
  place after ``max_rounds`` rounds are dropped (a round places at most one copy per
  token). The reroute *rank* of a copy is the 1-based
  rank of the expert it lands on in its preference list: ranks ``1..k`` are its top-k, the
  fallback list continues at ``k+1`` in least-loaded order.

Everything is vectorised over tokens and layers (sorts and cumulative counts, no per-token
loops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gps.traces.trace import TokenTrace


@dataclass(frozen=True)
class CapacityResult:
    """Routing after a capacity rule; shapes ``T`` tokens, ``L`` layers, ``k``, ``E``.

    Attributes:
        experts: ``[T, L, k]`` int64 expert processing each copy, ``-1`` = dropped.
        capacity: ``C`` token copies per expert and layer.
        routed: ``[L]`` copies routed before the rule (``T*k`` minus ids already ``< 0``).
        dropped: ``[L]`` copies dropped.
        rerouted: ``[L]`` copies moved to another expert.
        mean_reroute_rank: ``[L]`` mean 1-based preference rank of the expert a rerouted copy
            lands on (``> k``), NaN where nothing was rerouted.
        loads_before: ``[L, E]`` copies per expert before the rule.
        loads_after: ``[L, E]`` copies per expert after it (each ``<= C``).
        num_experts: ``E``.
    """

    experts: np.ndarray
    capacity: int
    routed: np.ndarray
    dropped: np.ndarray
    rerouted: np.ndarray
    mean_reroute_rank: np.ndarray
    loads_before: np.ndarray
    loads_after: np.ndarray
    num_experts: int

    @property
    def dropped_fraction(self) -> np.ndarray:
        """``[L]`` dropped / routed copies (the quality cost)."""
        return self.dropped / np.maximum(self.routed, 1)

    @property
    def rerouted_fraction(self) -> np.ndarray:
        """``[L]`` rerouted / routed copies."""
        return self.rerouted / np.maximum(self.routed, 1)


def expert_capacity(num_tokens: int, top_k: int, num_experts: int, capacity_factor: float) -> int:
    """``ceil(gamma * T * k / E)`` token copies per expert (``>= 1`` when ``T >= 1``).

    Raises:
        ValueError: ``capacity_factor`` not finite and > 0.
    """
    gamma = float(capacity_factor)
    if not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"capacity_factor: must be finite and > 0, got {capacity_factor!r}")
    return max(math.ceil(gamma * num_tokens * top_k / num_experts - 1e-9), 0)


def _inputs(
    routing: TokenTrace | np.ndarray, scores: np.ndarray | None, num_experts: int | None
) -> tuple[np.ndarray, np.ndarray | None, int]:
    if isinstance(routing, TokenTrace):
        experts, e = np.asarray(routing.experts), routing.num_experts
        scores = routing.scores if scores is None else scores
    else:
        experts = np.asarray(routing)
        if num_experts is None:
            raise ValueError("num_experts: required when routing is an experts array")
        e = int(num_experts)
    if experts.ndim != 3 or experts.dtype.kind not in "iu":
        raise ValueError(f"routing: expected integer experts [T, L, k], got {experts.shape}")
    if e < 1 or (experts.size and experts.max() >= e):
        raise ValueError(f"routing: expert ids must be < num_experts={e}")
    if scores is not None:
        scores = np.asarray(scores, dtype=float)
        if scores.shape != experts.shape:
            raise ValueError(f"scores: shape {scores.shape} != experts shape {experts.shape}")
    return experts.astype(np.int64), scores, e


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` of a 1-D array; integer keys spanning fewer than
    ``2**16`` values are sorted as ``uint16`` offsets (numpy's radix sort: linear time), and
    float keys that are all exact ``float16`` values (gate scores) as their ``uint16``
    order-preserving bit pattern. The permutation is the same."""
    keys = np.asarray(keys)
    if keys.size == 0:
        return np.argsort(keys, kind="stable")
    if keys.dtype.kind in "iu":
        lo = int(keys.min())
        if int(keys.max()) - lo < 1 << 16:
            return np.argsort((keys - lo).astype(np.uint16), kind="stable")
    elif keys.dtype.kind == "f" and keys.dtype.itemsize > 2:
        half = (keys + 0.0).astype(np.float16)  # + 0.0: -0 and +0 compare equal, as in floats
        if np.array_equal(half, keys) and not np.isnan(half).any():
            bits = half.view(np.uint16)
            sign = bits >> np.uint16(15)
            ordered = np.where(sign == 1, ~bits, bits | np.uint16(0x8000))
            return np.argsort(ordered, kind="stable")
    return np.argsort(keys, kind="stable")


def rank_in_group(keys: np.ndarray) -> np.ndarray:
    """For a key array (already in priority order): 0-based rank of each element among the
    elements with the same key that come before it."""
    order = stable_argsort(keys)
    sorted_keys = keys[order]
    start = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
    first = np.repeat(start, np.diff(np.r_[start, keys.size]))
    rank = np.empty(keys.size, dtype=np.int64)
    rank[order] = np.arange(keys.size) - first
    return rank


def _loads(experts_lt: np.ndarray, e: int) -> np.ndarray:
    """``[L, E]`` copies per expert from ``[L, T, k]`` ids (``-1`` ignored)."""
    lay = experts_lt.shape[0]
    idx = np.where(experts_lt >= 0, experts_lt + np.arange(lay)[:, None, None] * e, lay * e)
    return np.bincount(idx.ravel(), minlength=lay * e + 1)[:-1].reshape(lay, e)


def _drop(experts: np.ndarray, scores: np.ndarray | None, e: int, capacity: int):
    """``(ids [L, T, k] after drop, overflow)``: ``-1`` for dropped copies; ``overflow`` holds
    the flat ``[L, T, k]`` indices of the dropped copies in layer-major priority order.

    Priority inside an expert's group: higher score (or lower gate rank) first, then earlier
    token. Two stable sorts (priority, then group) replace a three-key ``lexsort`` over every
    copy: ties keep flat ``[L, T, k]`` order, which is token order inside a layer."""
    t, lay, k = experts.shape
    ids = experts.transpose(1, 0, 2).copy()  # [L, T, k]
    flat = ids.ravel()
    per_layer = t * k
    if scores is not None:
        primary = -scores.transpose(1, 0, 2).ravel()
        by_priority = stable_argsort(primary)
    else:  # gate rank: slot 0 of every token first, then slot 1, ... (token order inside)
        primary = None
        by_priority = np.arange(flat.size).reshape(lay * t, k).T.ravel()
    layer = np.arange(flat.size) // per_layer
    key = np.where(flat >= 0, layer * e + flat, -1)
    order = by_priority[stable_argsort(key[by_priority])]
    sorted_key = key[order]
    start = np.r_[0, np.flatnonzero(np.diff(sorted_key)) + 1]
    rank = np.arange(flat.size) - np.repeat(start, np.diff(np.r_[start, flat.size]))
    over = order[(sorted_key >= 0) & (rank >= capacity)]
    flat[over] = -1
    # layer-major priority order (the reroute rule places copies in this order)
    slot_or_score = primary[over] if primary is not None else over % k
    overflow = over[np.lexsort((over, slot_or_score, over // per_layer))]
    return ids, overflow


def _result(experts, ids, capacity, e, rerouted, rank_sum) -> CapacityResult:
    before = _loads(experts.transpose(1, 0, 2), e)
    after = _loads(ids, e)
    routed = before.sum(axis=1)
    dropped = routed - after.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_rank = np.where(rerouted > 0, rank_sum / np.maximum(rerouted, 1), np.nan)
    return CapacityResult(
        experts=ids.transpose(1, 0, 2).copy(),
        capacity=capacity,
        routed=routed,
        dropped=dropped,
        rerouted=rerouted,
        mean_reroute_rank=mean_rank,
        loads_before=before,
        loads_after=after,
        num_experts=e,
    )


def capacity_drop(
    routing: TokenTrace | np.ndarray,
    capacity_factor: float,
    *,
    scores: np.ndarray | None = None,
    num_experts: int | None = None,
) -> CapacityResult:
    """Capacity-Aware Token Drop: copies beyond ``C`` per expert are dropped, lowest priority
    (gate score) first.

    Args:
        routing: ``TokenTrace`` (a batch) or experts ``[T, L, k]`` (ids ``< 0`` = not routed).
        capacity_factor: ``gamma > 0``.
        scores: ``[T, L, k]`` gate scores (default: the trace's, if any).
        num_experts: ``E`` (required for an array).

    Returns:
        ``CapacityResult`` (``rerouted`` all zero).
    """
    experts, scores, e = _inputs(routing, scores, num_experts)
    t, lay, k = experts.shape
    cap = expert_capacity(t, k, e, capacity_factor)
    ids, _ = _drop(experts, scores, e, cap)
    zeros = np.zeros(lay, dtype=np.int64)
    return _result(experts, ids, cap, e, zeros, zeros.astype(float))


def capacity_reroute(
    routing: TokenTrace | np.ndarray,
    capacity_factor: float,
    *,
    scores: np.ndarray | None = None,
    num_experts: int | None = None,
    max_rounds: int | None = None,
) -> CapacityResult:
    """Capacity-Aware Token Reroute: overflow copies go to the least-loaded expert with room
    that the token does not use yet (module docstring); copies left after ``max_rounds``
    rounds are dropped.

    Args: as ``capacity_drop``, plus ``max_rounds >= 1`` (default ``2*k + 2``; a round places
        at most one copy per token).

    Returns:
        ``CapacityResult`` with ``rerouted`` and ``mean_reroute_rank`` per layer.
    """
    experts, scores, e = _inputs(routing, scores, num_experts)
    t, lay, k = experts.shape
    max_rounds = 2 * k + 2 if max_rounds is None else max_rounds
    if max_rounds < 1:
        raise ValueError(f"max_rounds: must be >= 1, got {max_rounds}")
    cap = expert_capacity(t, k, e, capacity_factor)
    ids, pending = _drop(experts, scores, e, cap)  # flat [L, T, k], layer-major priority
    flat = ids.ravel()
    rerouted = np.zeros(lay, dtype=np.int64)
    rank_sum = np.zeros(lay)
    big = cap * e + t * k + 1  # > any cumulative room
    for _ in range(max_rounds):
        if pending.size == 0:
            break
        room = cap - _loads(ids, e)  # [L, E] >= 0
        by_room = np.argsort(-room, axis=1, kind="stable")  # least loaded first
        pos_of = np.argsort(by_room, axis=1)  # expert -> position
        cum = np.cumsum(np.take_along_axis(room, by_room, 1), axis=1)  # [L, E]
        layer = pending // (t * k)
        token_row = pending // k  # row of [L*T, k]
        q = rank_in_group(layer)  # rank among this layer's pending copies
        cum_flat = (cum + np.arange(lay)[:, None] * big).ravel()
        j = np.searchsorted(cum_flat, q + layer * big, side="right") - layer * e
        own = ids.reshape(lay * t, k)[token_row]
        own_pos = np.where(own >= 0, pos_of[layer[:, None], np.maximum(own, 0)], e + 1)
        # first position >= j (water-filling target) that is not one of the token's experts
        for _shift in range(k):
            j = j + np.any(own_pos == j[:, None], axis=1)
        j = np.where(np.any(own_pos == j[:, None], axis=1), e, j)  # still blocked: no place
        placeable = j < e
        target = np.where(placeable, by_room[layer, np.minimum(j, e - 1)], -1)
        # accept, per expert and in priority order, up to its room
        # one copy per token and round (two copies of a token must not pick the same expert)
        first = placeable & (rank_in_group(np.where(placeable, token_row, -1)) == 0)
        key = np.where(first, layer * e + target, -1)
        accepted = first & (rank_in_group(key) < room[layer, np.maximum(target, 0)])
        idx = pending[accepted]
        flat[idx] = target[accepted]
        lay_acc = layer[accepted]
        before = (own_pos[accepted] < j[accepted, None]).sum(axis=1)
        np.add.at(rerouted, lay_acc, 1)
        np.add.at(rank_sum, lay_acc, k + 1 + j[accepted] - before)
        pending = pending[~accepted & placeable]
    return _result(experts, ids, cap, e, rerouted, rank_sum)
