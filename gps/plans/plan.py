"""The ``Plan`` every planner returns: which expert lives in which slot of which GPU.

Shapes: ``L`` MoE layers, ``G`` GPUs of the expert-parallel group, ``R`` expert slots per GPU
(local experts + replicas), ``E`` routed experts per layer. Slot ``(g, r)`` is flat slot
``s = g * R + r``.

**Home and spare slots** (``docs/plans.md``): a plan may mark *home* slots, the resident copy
of every expert (static placement, never moved); the other slots are *spare* slots that only
replicas move through. ``Plan.home is None`` means no slot is resident (a full re-pack).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gps.model import MoEModelSpec, bytes_per_param, expert_params


@dataclass(frozen=True)
class Plan:
    """Expert placement with replicas, one per MoE layer.

    Attributes:
        slot_expert: ``[L, G, R]`` int64 expert id held by each slot, ``-1`` = empty slot.
            Read-only. Every expert ``0..E-1`` has at least one replica in every layer.
        num_experts: ``E``.
        meta: planner name and diagnostics (JSON-friendly where possible).
        home: ``[L, G, R]`` bool, read-only: ``True`` marks a home slot (resident copy, never
            migrated); ``None``: no home slots (every slot may be re-packed). Home slots hold
            an expert, and together they hold every expert of every layer.
    """

    slot_expert: np.ndarray
    num_experts: int
    meta: dict = field(default_factory=dict, compare=False)
    home: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        se = np.array(self.slot_expert, copy=True)
        if se.ndim != 3 or 0 in se.shape:
            raise ValueError(f"slot_expert: expected a non-empty [L, G, R] array, got {se.shape}")
        if se.dtype.kind not in "iu":
            raise ValueError(f"slot_expert: expected integer expert ids, got dtype {se.dtype}")
        e = int(self.num_experts)
        if e < 1:
            raise ValueError(f"num_experts: must be >= 1, got {self.num_experts}")
        if se.min() < -1 or se.max() >= e:
            raise ValueError(f"slot_expert: ids must be in [-1, {e}) (num_experts={e})")
        se = se.astype(np.int64, copy=False)
        se.setflags(write=False)
        object.__setattr__(self, "slot_expert", se)
        object.__setattr__(self, "num_experts", e)
        missing = self.replica_counts().min(axis=1) < 1
        if np.any(missing):
            layer = int(np.flatnonzero(missing)[0])
            raise ValueError(f"slot_expert: layer {layer} leaves an expert without a replica")
        if self.home is not None:
            home = np.array(self.home, dtype=bool, copy=True)
            if home.shape != se.shape:
                raise ValueError(f"home: shape {home.shape} must equal slot_expert's {se.shape}")
            if np.any(home & (se < 0)):
                raise ValueError("home: a home slot must hold an expert (slot_expert >= 0)")
            held = _layer_counts(np.where(home, se, -1), e).min(axis=1) < 1
            if np.any(held):
                layer = int(np.flatnonzero(held)[0])
                raise ValueError(f"home: layer {layer} leaves an expert without a home slot")
            home.setflags(write=False)
            object.__setattr__(self, "home", home)

    @property
    def num_layers(self) -> int:
        """``L``."""
        return int(self.slot_expert.shape[0])

    @property
    def num_gpus(self) -> int:
        """``G``."""
        return int(self.slot_expert.shape[1])

    @property
    def slots_per_gpu(self) -> int:
        """``R``."""
        return int(self.slot_expert.shape[2])

    def spare(self) -> np.ndarray:
        """``[L, G, R]`` bool: slots replicas may move through (every slot when ``home`` is
        ``None``)."""
        if self.home is None:
            return np.ones(self.slot_expert.shape, dtype=bool)
        return ~self.home

    def home_only(self) -> Plan:
        """The plan with every spare slot emptied: each expert served by its home copies only,
        reachable from any plan with the same home slots at zero migration. ``ValueError``
        when the plan has no home slots."""
        if self.home is None:
            raise ValueError("home_only: the plan has no home slots (home is None)")
        se = np.where(self.home, self.slot_expert, -1)
        return Plan(se, self.num_experts, meta={"planner": "home-only"}, home=self.home)

    def replica_counts(self) -> np.ndarray:
        """``[L, E]`` int64 replicas of each expert (slots holding it)."""
        return _layer_counts(self.slot_expert, self.num_experts)

    def gpu_of_slot(self) -> np.ndarray:
        """``[G, R]`` int64 GPU index of each slot (``g`` for every ``r``)."""
        g, r = self.slot_expert.shape[1:]
        return np.repeat(np.arange(g, dtype=np.int64)[:, None], r, axis=1)

    def expert_gpu_counts(self) -> np.ndarray:
        """``[L, G, E]`` int64 replicas of expert ``e`` on GPU ``g``."""
        return expert_gpu_counts(self.slot_expert, self.num_experts)

    def used_slots(self) -> np.ndarray:
        """``[L, G]`` int64 occupied slots per GPU."""
        return (self.slot_expert >= 0).sum(axis=2)

    def gpu_load(self, load: np.ndarray) -> np.ndarray:
        """Per-GPU tokens ``[..., L, G]`` for expert loads ``[..., L, E]``, split evenly over
        each expert's replicas (the planners' prediction model)."""
        load = np.asarray(load, dtype=float)
        if load.shape[-2:] != (self.num_layers, self.num_experts):
            raise ValueError(
                f"load: shape {load.shape} must end in [L, E] = "
                f"[{self.num_layers}, {self.num_experts}]"
            )
        per_replica = load / np.maximum(self.replica_counts(), 1)
        return np.einsum("...le,lge->...lg", per_replica, self.expert_gpu_counts())


def expert_gpu_counts(slot_expert: np.ndarray, num_experts: int) -> np.ndarray:
    """``[L, G, E]`` int64 count of slots of GPU ``g`` holding expert ``e`` (empty slots ignored).

    Args:
        slot_expert: ``[L, G, R]`` expert ids, ``-1`` = empty.
        num_experts: ``E``.
    """
    se = np.asarray(slot_expert)
    nl, g, _ = se.shape
    index = (np.arange(nl * g, dtype=np.int64)[:, None] * (num_experts + 1)).reshape(nl, g, 1) + (
        np.where(se < 0, num_experts, se)
    )
    counts = np.bincount(index.ravel(), minlength=nl * g * (num_experts + 1))
    return counts.reshape(nl, g, num_experts + 1)[..., :num_experts]


def expert_gpu_holds(slot_expert: np.ndarray, num_experts: int) -> np.ndarray:
    """``[L, G, E]`` bool, ``True`` where a slot of GPU ``g`` holds expert ``e``: the same as
    ``expert_gpu_counts(...) > 0`` without building the int64 counts (eight times less memory).

    Args:
        slot_expert: ``[L, G, R]`` expert ids in ``[-1, E)``, ``-1`` = empty.
        num_experts: ``E``.
    """
    se = np.asarray(slot_expert)
    nl, g, _ = se.shape
    size = nl * g * num_experts
    out = np.zeros(size, dtype=bool)
    flat = np.arange(0, size, num_experts).reshape(nl, g, 1) + se  # [L, G, R] flat index
    out[flat[se >= 0]] = True
    return out.reshape(nl, g, num_experts)


def _layer_counts(slot_expert: np.ndarray, num_experts: int) -> np.ndarray:
    """``[L, E]`` int64 slots holding each expert (``expert_gpu_counts(...).sum(axis=1)`` from
    one ``L * (E + 1)`` bincount; ``slot_expert [L, G, R]``, ``-1`` = empty)."""
    se = np.asarray(slot_expert)
    nl = se.shape[0]
    idx = np.where(se < 0, num_experts, se) + (np.arange(nl) * (num_experts + 1))[:, None, None]
    counts = np.bincount(idx.ravel(), minlength=nl * (num_experts + 1)).astype(np.int64, copy=False)
    return counts.reshape(nl, num_experts + 1)[:, :num_experts]


def expert_weight_bytes(spec: MoEModelSpec) -> float:
    """Bytes of one routed expert's weights: ``3*d*f * element_bytes`` (SwiGLU)."""
    return float(expert_params(spec) * bytes_per_param(spec))


def migration_bytes_per_gpu(old: Plan, new: Plan, expert_bytes: float) -> np.ndarray:
    """Expert-weight bytes each GPU must receive to go from ``old`` to ``new``; ``[L, G]``.

    A replica ``(gpu g, expert e)`` present in ``new`` but not in ``old`` costs one expert's
    weights (``expert_bytes``); several replicas of ``e`` on one GPU share one copy, and
    replicas that ``new`` removes cost nothing. ``batch_cost(migration_bytes=...)`` wants the
    busiest GPU per layer: ``.max(axis=-1)``.

    Raises:
        ValueError: the plans differ in ``L``, ``G`` or ``E``, or ``expert_bytes < 0``.
    """
    if old.slot_expert.shape[:2] != new.slot_expert.shape[:2] or old.num_experts != new.num_experts:
        raise ValueError(
            f"old/new: plans differ in [L, G] ({old.slot_expert.shape[:2]} vs "
            f"{new.slot_expert.shape[:2]}) or E ({old.num_experts} vs {new.num_experts})"
        )
    if not np.isfinite(expert_bytes) or expert_bytes < 0:
        raise ValueError(f"expert_bytes: must be finite and >= 0, got {expert_bytes}")
    added = (new.expert_gpu_counts() > 0) & (old.expert_gpu_counts() == 0)
    return added.sum(axis=2) * float(expert_bytes)


def migration_bytes(old: Plan, new: Plan, expert_bytes: float) -> np.ndarray:
    """Total expert-weight bytes copied per layer, ``[L]`` (sum over GPUs of
    ``migration_bytes_per_gpu``)."""
    return migration_bytes_per_gpu(old, new, expert_bytes).sum(axis=1)


def check_choice(value: str, choices: tuple[str, ...], key: str, what: str) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming the config ``key``."""
    if value not in choices:
        raise ValueError(f"{key}={value!r}: unknown {what}; expected one of {list(choices)}")
    return value


def check_load(load: np.ndarray, name: str = "load") -> np.ndarray:
    """``load`` as float64 ``[L, E]``; ``ValueError`` naming ``name`` unless finite and >= 0."""
    arr = np.asarray(load, dtype=float)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{name}: expected a non-empty [L, E] array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: must be finite")
    if np.any(arr < 0):
        raise ValueError(f"{name}: negative loads are not allowed (min {arr.min()})")
    return arr


def check_slots(num_experts: int, num_gpus: int, slots_per_gpu: int) -> None:
    """``ValueError`` naming the argument unless ``G >= 1``, ``R >= 1`` and ``E <= G*R``."""
    for name, value in (("num_gpus", num_gpus), ("slots_per_gpu", slots_per_gpu)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    if num_experts > num_gpus * slots_per_gpu:
        raise ValueError(
            f"slots_per_gpu: {num_experts} experts do not fit in num_gpus * slots_per_gpu = "
            f"{num_gpus} * {slots_per_gpu} = {num_gpus * slots_per_gpu} slots"
        )
