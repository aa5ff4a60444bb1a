"""The stall of one EPLB rebalance, and its cost amortised over a rebalance interval.

A periodic EPLB rebalance (vLLM ``--eplb-config '{"step_interval": I}'``, SGLang
``--eplb-rebalance-num-iterations I``) runs the placement algorithm on the host, then moves
expert weights between GPUs so that the new physical placement holds. It costs:

* **bytes**: each GPU receives one expert's weights for every (GPU, logical expert) replica
  the new placement has and the old one lacks (``gps.plans.plan.migration_bytes_per_gpu``),
  per MoE layer;
* **transfer time** per layer: the slowest GPU's copies over the link they cross, nearest
  holder first (NVLink in a node, InfiniBand across nodes; ``gps.plans.migration``);
* **host (CPU) time** of the algorithm and its bookkeeping, once per rebalance (``cpu_s``);
* a **fixed cost per layer** of the synchronous weight shuffle (buffer set-up, per-layer
  collectives, Python loop; ``per_layer_s``).

**Synchronous** (vLLM ``use_async: false``, SGLang): serving stops for
``stall = cpu_s + sum_l (transfer_l + per_layer_s)``. SGLang's
``--eplb-rebalance-layers-per-chunk c`` spreads the layers over ``ceil(L / c)`` forward passes:
the same total, a smaller worst pass (:attr:`RebalanceStall.max_pass_stall_s`).
**Asynchronous** (vLLM ``use_async: true``, its default since PR #43219): the algorithm and the
transfers run beside serving; the new placement takes effect ``lag_s`` later and the exposed
stall is ``async_exposed_fraction`` of the transfer time (default 0: contention of the copies
with the step's own traffic is not priced -- an assumption, ``docs/eplb.md``).

The constants of each engine are fields of its profile (``conf/engine/*.yaml``,
``gps.engine.EngineEplb``: ``eplb_cpu_s``, ``eplb_per_layer_s``,
``eplb_async_exposed_fraction``, each with its source; :meth:`RebalanceCosts.of` reads them).
The one fitted constant, vLLM's per-layer cost, is fitted on one published row (vLLM PR
#28369, ``docs/calibration.md``); the others are validation rows
(``benchmarks/bench_eplb_stall.py``, ``docs/eplb.md``).

Shapes: ``L`` MoE layers, ``G`` GPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gps.engine import EngineProfile
from gps.hardware import Cluster
from gps.plans.migration import migration_seconds_per_gpu
from gps.plans.plan import Plan, migration_bytes_per_gpu


@dataclass(frozen=True)
class RebalanceCosts:
    """Host and fixed per-layer costs of one engine's rebalance (seconds), with sources.

    Attributes:
        engine: the engine profile's name (``vllm``, ``sglang``, ...).
        cpu_s: host time of the algorithm and bookkeeping, once per rebalance.
        per_layer_s: fixed synchronous cost per MoE layer shuffled.
        async_exposed_fraction: share of the transfer time an asynchronous rebalance exposes.
        sources: field -> where its value comes from.
    """

    engine: str
    cpu_s: float
    per_layer_s: float
    async_exposed_fraction: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("cpu_s", "per_layer_s", "async_exposed_fraction"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}: must be finite and >= 0, got {v}")
        if self.async_exposed_fraction > 1:
            raise ValueError("async_exposed_fraction: must be <= 1")

    @classmethod
    def of(cls, engine: EngineProfile) -> RebalanceCosts:
        """The rebalance costs of an engine profile (``eplb_*`` fields and their sources).

        Raises:
            ValueError: an engine without a load balancer (``EngineProfile.eplb`` is ``None``).
        """
        if engine.eplb is None:
            raise ValueError(
                f"engine {engine.name!r} has no EPLB rebalance costs (engine.eplb_* unset)"
            )
        keys = ("eplb_cpu_s", "eplb_per_layer_s", "eplb_async_exposed_fraction")
        return cls(
            engine=engine.name,
            cpu_s=engine.eplb.cpu_s,
            per_layer_s=engine.eplb.per_layer_s,
            async_exposed_fraction=engine.eplb.async_exposed_fraction,
            sources={k.removeprefix("eplb_"): engine.sources.get(k, "") for k in keys},
        )


@dataclass(frozen=True)
class RebalanceStall:
    """One rebalance from ``old`` to ``new``.

    Attributes:
        bytes_per_gpu: ``[L, G]`` expert-weight bytes each GPU receives.
        transfer_s: ``[L]`` copy time of each layer (slowest GPU, link-priced).
        cpu_s, per_layer_s: the engine's constants used.
        synchronous: serving stops for the rebalance.
        layers_per_chunk: layers moved per forward pass (``None``: all in one).
        async_exposed_fraction: exposed share of the transfer when asynchronous.
    """

    bytes_per_gpu: np.ndarray
    transfer_s: np.ndarray
    cpu_s: float
    per_layer_s: float
    synchronous: bool
    layers_per_chunk: int | None = None
    async_exposed_fraction: float = 0.0

    @property
    def num_layers(self) -> int:
        return int(self.transfer_s.shape[0])

    @property
    def max_bytes_per_gpu(self) -> float:
        """Bytes the busiest GPU receives over all layers."""
        return float(self.bytes_per_gpu.sum(axis=0).max(initial=0.0))

    def _chunks(self) -> list[slice]:
        c = self.layers_per_chunk or self.num_layers
        return [slice(i, i + c) for i in range(0, self.num_layers, max(c, 1))]

    @property
    def stall_s(self) -> float:
        """Serving time lost to one rebalance (seconds)."""
        if self.synchronous:
            return self.cpu_s + float((self.transfer_s + self.per_layer_s).sum())
        return self.async_exposed_fraction * float(self.transfer_s.sum())

    @property
    def max_pass_stall_s(self) -> float:
        """The worst single forward pass's stall (chunked rebalance: the CPU work rides on
        the first chunk)."""
        if not self.synchronous:
            return self.stall_s
        per = [float((self.transfer_s[c] + self.per_layer_s).sum()) for c in self._chunks()]
        per[0] += self.cpu_s
        return max(per)

    @property
    def passes(self) -> int:
        """Forward passes one rebalance spans (``ceil(L / layers_per_chunk)``)."""
        return len(self._chunks())

    @property
    def lag_s(self) -> float:
        """Seconds from the trigger until the new placement serves every layer."""
        return self.cpu_s + float((self.transfer_s + self.per_layer_s).sum())


def rebalance_stall(
    old: Plan,
    new: Plan,
    expert_bytes: float,
    cluster: Cluster,
    costs: RebalanceCosts,
    *,
    synchronous: bool = True,
    layers_per_chunk: int | None = None,
) -> RebalanceStall:
    """The stall of rebalancing ``old`` -> ``new`` (module docstring).

    Raises:
        ValueError: plans of different shape, ``expert_bytes < 0``, a cluster of another GPU
            count, ``layers_per_chunk < 1``.
    """
    if layers_per_chunk is not None and layers_per_chunk < 1:
        raise ValueError(f"layers_per_chunk: must be >= 1, got {layers_per_chunk}")
    per_gpu = migration_bytes_per_gpu(old, new, expert_bytes)
    transfer = migration_seconds_per_gpu(old, new, expert_bytes, cluster, "peer").max(axis=1)
    return RebalanceStall(
        bytes_per_gpu=per_gpu,
        transfer_s=transfer,
        cpu_s=costs.cpu_s,
        per_layer_s=costs.per_layer_s,
        synchronous=synchronous,
        layers_per_chunk=layers_per_chunk,
        async_exposed_fraction=costs.async_exposed_fraction,
    )


def amortised_step_s(
    step_s: float | np.ndarray, stall_s: float | np.ndarray, interval_steps: int | np.ndarray
) -> np.ndarray:
    """Mean seconds per step when every ``interval_steps`` steps cost one ``stall_s``:
    ``step_s + stall_s / interval_steps`` (broadcast).

    Raises:
        ValueError: an interval below 1.
    """
    interval = np.asarray(interval_steps, dtype=float)
    if np.any(interval < 1):
        raise ValueError("interval_steps: must be >= 1")
    return np.asarray(step_s, dtype=float) + np.asarray(stall_s, dtype=float) / interval
