"""Load simulation: replay the actual routing against a ``Plan``; output what the cost model prices.

Shapes: ``T`` tokens, ``L`` MoE layers, ``k`` top-k, ``E`` experts, ``G`` GPUs, ``R`` slots
per GPU, ``S = G*R`` flat slots (``s = g*R + r``), ``N`` batches.

Conventions (``docs/plans.md``):

* **Token sources** (data-parallel attention: each GPU runs attention for its own share of the
  tokens and dispatches them). Load arrays carry no token identity, so every GPU sources ``1/G``
  of every expert's copies (fractional expected counts, as ``gps.cost.routing``). Token traces:
  ``source="blocks"`` puts token ``t`` on GPU ``floor(t*G/T)`` (contiguous blocks: whole
  sequences of a prefill batch stay on one GPU), ``"round_robin"`` on ``t % G``, or pass
  ``source_gpu [T]`` explicitly.
* **Replica split**. ``"even"``: an expert's copies are split evenly over its replicas
  (fractions ``1/c_e`` of the expected counts for loads; for traces the ``q``-th copy of the
  expert in token order goes to replica ``q mod c_e``, so integer counts differ by at most
  one). ``"locality"``: copies from GPU ``i`` go to a replica on ``i`` if there is one, else to
  the replicas on ``i``'s node, else to all replicas, split evenly (round-robin for traces)
  among those of the best tier.
* **Traffic**: ``traffic_bytes[l, i, j]`` = copies sent from source GPU ``i`` to GPU ``j``
  times ``token_bytes`` (``hidden_size * element_bytes``); copies served on their own GPU send
  nothing (zero diagonal); a token's ``k`` copies are sent separately. With the even split and
  load arrays this equals ``gps.cost.routing.traffic_from_slot_tokens``.
* **Dropped copies** (expert id ``< 0`` in a trace / ``CapacityResult``) are processed nowhere
  and counted in ``dropped``; every routed copy is either in ``slot_tokens`` or ``dropped``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gps.model import MoEModelSpec, bytes_per_param
from gps.plans.capacity import CapacityResult, rank_in_group
from gps.plans.plan import Plan, expert_gpu_counts
from gps.traces.trace import TokenTrace

SPLITS = ("even", "locality")
SOURCES = ("blocks", "round_robin")


@dataclass(frozen=True)
class SimResult:
    """What one batch (or ``N`` batches) costs to route through a plan.

    Attributes:
        slot_tokens: ``[..., L, G, R]`` float64 token copies each slot processes.
        traffic_bytes: ``[..., L, G, G]`` dispatch bytes from GPU ``i`` to GPU ``j``.
        routed: ``[..., L]`` copies routed (processed + dropped).
        dropped: ``[..., L]`` copies dropped (capacity rule), processed nowhere.
        rerouted: ``[..., L]`` copies moved to another expert (capacity rule).
        token_bytes: bytes of one token copy on the wire.
    """

    slot_tokens: np.ndarray
    traffic_bytes: np.ndarray
    routed: np.ndarray
    dropped: np.ndarray
    rerouted: np.ndarray
    token_bytes: float

    @property
    def gpu_tokens(self) -> np.ndarray:
        """``[..., L, G]`` copies each GPU processes."""
        return self.slot_tokens.sum(axis=-1)

    @property
    def max_gpu_tokens(self) -> np.ndarray:
        """``[..., L]`` copies of the busiest GPU (the straggler)."""
        return self.gpu_tokens.max(axis=-1)


def token_bytes_of(spec: MoEModelSpec) -> float:
    """Bytes of one dispatched token copy: ``hidden_size * element_bytes``."""
    return float(spec.hidden_size * bytes_per_param(spec))


def _token_bytes(spec: MoEModelSpec | None, token_bytes: float | None) -> float:
    if (spec is None) == (token_bytes is None):
        raise ValueError("spec/token_bytes: pass exactly one of them")
    b = token_bytes_of(spec) if spec is not None else float(token_bytes)
    if not np.isfinite(b) or b < 0:
        raise ValueError(f"token_bytes: must be finite and >= 0, got {token_bytes}")
    return b


def _check_split(split: str, plan: Plan, gpus_per_node: int | None) -> int:
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} not in {SPLITS}")
    g = plan.num_gpus
    gpn = g if gpus_per_node is None else gpus_per_node
    if isinstance(gpn, bool) or not isinstance(gpn, int | np.integer) or gpn < 1 or g % gpn:
        raise ValueError(f"gpus_per_node: {gpus_per_node!r} must be an integer dividing G={g}")
    return int(gpn)


def _best_tier_slots(plan: Plan, split: str, gpus_per_node: int) -> tuple[np.ndarray, ...]:
    """Eligible slots per (layer, source GPU, expert) under ``split``.

    Returns:
        ``(eligible [L, G, S] bool, n [L, G, S])``: slot ``s`` serves copies of its expert
        from source ``i``; ``n`` = number of eligible slots of that expert for that source
        (``>= 1`` where eligible).
    """
    se = plan.slot_expert
    nl, g, r = se.shape
    e = plan.num_experts
    flat = se.reshape(nl, g * r)
    valid = flat >= 0
    ex = np.maximum(flat, 0)
    counts = plan.replica_counts()  # [L, E]
    if split == "even":
        eligible = np.broadcast_to(valid[:, None, :], (nl, g, g * r))
        n = np.broadcast_to(counts[np.arange(nl)[:, None], ex][:, None, :], (nl, g, g * r))
        return eligible, n
    nodes = g // gpus_per_node
    per_gpu = expert_gpu_counts(se, e)  # [L, G, E]: tier 0 (own GPU)
    per_node = per_gpu.reshape(nl, nodes, gpus_per_node, e).sum(axis=2)
    node_of = np.arange(g) // gpus_per_node
    n_tier = np.stack(
        [per_gpu, per_node[:, node_of] - per_gpu, counts[:, None, :] - per_node[:, node_of]]
    )  # [3, L, G(source), E]
    best = np.argmax(n_tier > 0, axis=0)  # [L, G, E] first tier with a replica
    slot_gpu = np.arange(g * r) // r
    tier = np.where(
        slot_gpu[None, :] == np.arange(g)[:, None],
        0,
        np.where(node_of[slot_gpu][None, :] == node_of[:, None], 1, 2),
    )  # [G(source), S]
    li = np.arange(nl)[:, None, None]
    gi = np.arange(g)[None, :, None]
    best_s = best[li, gi, ex[:, None, :]]  # [L, G, S]
    eligible = valid[:, None, :] & (tier[None] == best_s)
    n = np.take_along_axis(n_tier, best[None], 0)[0][li, gi, ex[:, None, :]]
    return eligible, n


def simulate_loads(
    plan: Plan,
    loads: np.ndarray,
    *,
    spec: MoEModelSpec | None = None,
    token_bytes: float | None = None,
    split: str = "even",
    gpus_per_node: int | None = None,
) -> SimResult:
    """Route expected loads through ``plan`` (fractional counts; sources uniform over GPUs).

    Args:
        plan: ``Plan`` with ``slot_expert [L, G, R]``.
        loads: ``[L, E]`` or ``[N, L, E]`` token copies per expert (>= 0).
        spec / token_bytes: exactly one; bytes per token copy.
        split: ``"even"`` or ``"locality"``.
        gpus_per_node: node size for ``"locality"`` (``None`` = one node).

    Returns:
        ``SimResult`` with leading dims of ``loads``; ``dropped = rerouted = 0``.
    """
    tb = _token_bytes(spec, token_bytes)
    gpn = _check_split(split, plan, gpus_per_node)
    x = np.asarray(loads, dtype=float)
    nl, g, r = plan.slot_expert.shape
    e = plan.num_experts
    if x.ndim not in (2, 3) or x.shape[-2:] != (nl, e):
        raise ValueError(f"loads: shape {x.shape} must be [L, E] or [N, L, E] with [{nl}, {e}]")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError("loads: must be finite and >= 0")
    lead = x.shape[:-2]
    x = x.reshape(-1, nl, e)
    eligible, n = _best_tier_slots(plan, split, gpn)
    share = np.where(eligible, 1.0 / np.maximum(n, 1), 0.0) / g  # [L, G(src), S]
    ex = np.maximum(plan.slot_expert.reshape(nl, g * r), 0)
    per_slot = np.take_along_axis(x, np.broadcast_to(ex, (x.shape[0], nl, g * r)), 2)
    flows = per_slot[:, :, None, :] * share[None]  # [N, L, G(src), S]
    slot_tokens = flows.sum(axis=2).reshape(*lead, nl, g, r)
    traffic = flows.reshape(-1, nl, g, g, r).sum(axis=-1)
    traffic[:, :, np.arange(g), np.arange(g)] = 0.0
    routed = x.sum(axis=-1).reshape(*lead, nl)
    zeros = np.zeros_like(routed)
    return SimResult(
        slot_tokens=slot_tokens,
        traffic_bytes=(traffic * tb).reshape(*lead, nl, g, g),
        routed=routed,
        dropped=zeros,
        rerouted=zeros.copy(),
        token_bytes=tb,
    )


def source_gpus(num_tokens: int, num_gpus: int, source: str = "blocks") -> np.ndarray:
    """``[T]`` int64 GPU running the attention of each token (data-parallel attention):
    ``"blocks"`` ``floor(t*G/T)``, ``"round_robin"`` ``t % G``."""
    if source not in SOURCES:
        raise ValueError(f"source: {source!r} not in {SOURCES}")
    t = np.arange(num_tokens, dtype=np.int64)
    if source == "blocks":
        return t * num_gpus // max(num_tokens, 1)
    return t % num_gpus


def simulate_tokens(
    plan: Plan,
    experts: np.ndarray,
    *,
    spec: MoEModelSpec | None = None,
    token_bytes: float | None = None,
    split: str = "even",
    source: str = "blocks",
    source_gpu: np.ndarray | None = None,
    gpus_per_node: int | None = None,
    rerouted: np.ndarray | None = None,
) -> SimResult:
    """Route every token copy of a batch through ``plan`` (integer counts).

    Args:
        plan: ``Plan`` with ``slot_expert [L, G, R]``.
        experts: ``[T, L, k]`` expert ids, ``-1`` = dropped.
        spec / token_bytes: exactly one; bytes per token copy.
        split: ``"even"`` or ``"locality"`` (module docstring).
        source: ``"blocks"`` or ``"round_robin"`` (ignored when ``source_gpu`` is given).
        source_gpu: ``[T]`` explicit source GPU per token.
        gpus_per_node: node size for ``"locality"`` (``None`` = one node).
        rerouted: ``[L]`` copies a capacity rule rerouted (reported only).

    Returns:
        ``SimResult`` (``slot_tokens`` and ``traffic_bytes`` integer-valued float64).
    """
    tb = _token_bytes(spec, token_bytes)
    gpn = _check_split(split, plan, gpus_per_node)
    ids = np.asarray(experts)
    nl, g, r = plan.slot_expert.shape
    e, s_all = plan.num_experts, g * r
    if ids.ndim != 3 or ids.shape[1] != nl or ids.dtype.kind not in "iu":
        raise ValueError(f"experts: expected integer [T, L={nl}, k], got {ids.shape} {ids.dtype}")
    if ids.size and ids.max() >= e:
        raise ValueError(f"experts: ids must be < num_experts={e}")
    t, _, k = ids.shape
    src = source_gpus(t, g, source) if source_gpu is None else np.asarray(source_gpu, np.int64)
    if src.shape != (t,) or (t and (src.min() < 0 or src.max() >= g)):
        raise ValueError(f"source_gpu: expected [T={t}] GPU indices in [0, {g})")
    eligible = _best_tier_slots(plan, split, gpn)[0] if split == "locality" else None
    # eligible slots grouped by (layer, expert) / (layer, source, expert), in slot order
    ex_of_slot = plan.slot_expert.reshape(nl, s_all)
    if split == "even":  # the same list for every source
        li, sl = np.nonzero(ex_of_slot >= 0)
        key_slots = li * e + ex_of_slot[li, sl]
    else:
        li, si, sl = np.nonzero(eligible)
        key_slots = (li * g + si) * e + ex_of_slot[li, sl]
    order = np.argsort(key_slots, kind="stable")
    key_sorted, slot_sorted = key_slots[order], sl[order]
    # copies in (layer, token, k) order
    copies = ids.transpose(1, 0, 2).reshape(nl, t * k).astype(np.int64)
    layer = np.repeat(np.arange(nl), t * k)
    cop_src = np.tile(np.repeat(src, k), nl)
    cop_ex = copies.ravel()
    live = cop_ex >= 0
    layer, cop_src, cop_ex = layer[live], cop_src[live], cop_ex[live]
    key = layer * e + cop_ex if split == "even" else (layer * g + cop_src) * e + cop_ex
    rank = rank_in_group(key)
    n_keys = nl * e if split == "even" else nl * g * e
    first = np.searchsorted(key_sorted, np.arange(n_keys + 1))  # per key: its eligible slots
    start, size = first[key], np.diff(first)[key]
    slot = slot_sorted[start + rank % size]
    dst = slot // r
    slot_tokens = np.bincount(layer * s_all + slot, minlength=nl * s_all).astype(float)
    cross = cop_src != dst
    pair = (layer * g + cop_src) * g + dst
    traffic = np.bincount(pair[cross], minlength=nl * g * g).astype(float) * tb
    routed = np.full(nl, t * k, dtype=float)
    dropped = (ids < 0).sum(axis=(0, 2)).astype(float)
    rer = np.zeros(nl) if rerouted is None else np.asarray(rerouted, dtype=float)
    if rer.shape != (nl,):
        raise ValueError(f"rerouted: expected shape [L={nl}], got {rer.shape}")
    return SimResult(
        slot_tokens=slot_tokens.reshape(nl, g, r),
        traffic_bytes=traffic.reshape(nl, g, g),
        routed=routed,
        dropped=dropped,
        rerouted=rer,
        token_bytes=tb,
    )


def simulate(
    plan: Plan,
    routing: np.ndarray | TokenTrace | CapacityResult,
    *,
    spec: MoEModelSpec | None = None,
    token_bytes: float | None = None,
    split: str = "even",
    source: str = "blocks",
    source_gpu: np.ndarray | None = None,
    gpus_per_node: int | None = None,
) -> SimResult:
    """Replay ``routing`` against ``plan``: ``simulate_loads`` for a load array ``[L, E]`` /
    ``[N, L, E]``, ``simulate_tokens`` for a ``TokenTrace`` batch or a ``CapacityResult``
    (its dropped copies counted as dropped, its rerouted counts passed through).

    The result feeds the cost model directly:
    ``batch_cost(spec, cluster, workload, StepRouting.of(sim))`` (``gps.cost.step``).
    """
    common = {"spec": spec, "token_bytes": token_bytes, "split": split}
    if isinstance(routing, CapacityResult):
        if routing.num_experts != plan.num_experts:
            raise ValueError(f"routing: E={routing.num_experts} != plan E={plan.num_experts}")
        return simulate_tokens(
            plan, routing.experts, source=source, source_gpu=source_gpu,
            gpus_per_node=gpus_per_node, rerouted=routing.rerouted, **common,
        )  # fmt: skip
    if isinstance(routing, TokenTrace):
        if routing.num_experts != plan.num_experts:
            raise ValueError(f"routing: E={routing.num_experts} != plan E={plan.num_experts}")
        return simulate_tokens(
            plan, routing.experts, source=source, source_gpu=source_gpu,
            gpus_per_node=gpus_per_node, **common,
        )  # fmt: skip
    return simulate_loads(plan, routing, gpus_per_node=gpus_per_node, **common)
