"""Typed inputs of ``gps.cost.batch_cost``: where a step's tokens go, and what else it carries.

``StepRouting`` is the load simulation's output (``gps.simulate.SimResult``) as the cost model
reads it. ``StepExtras`` is what the mechanism ledger (``gps.cost.ledger``) hands to pricing
beside the routing: predictor time, replica copies and expert-weight prefetch on each GPU port,
the post-gate chunked dispatch, and the window of attention that hides port work. Every array
may carry leading sweep dimensions ``...`` (held-out batches, sweep points) that broadcast
against the routing's.

Shapes: ``L`` MoE layers, ``G`` GPUs, ``R`` expert slots per GPU. Units: seconds, bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from gps.hardware import LinkProfile
from gps.simulate import SimResult

# The ports of a GPU that port work crosses: NVLink (intra-node), the NICs (inter-node), PCIe
# to host memory. Each is full duplex and independent of the others; work on one port shares
# that port's hidden time (one budget per port, ``gps.cost.ledger.port_exposure``).
PORTS = ("intra", "inter", "host")


def check_port(port: str, name: str) -> str:
    """``port`` if it is one of ``PORTS``, else ``ValueError`` naming ``name``."""
    if port not in PORTS:
        raise ValueError(f"{name}={port!r}: expected one of {PORTS}")
    return port


@dataclass(frozen=True)
class StepRouting:
    """Where one step's token copies go.

    Attributes:
        slot_tokens: ``[..., L, G, R]`` token copies each expert slot processes; ``None``:
            uniform routing on a static contiguous placement (``routing.uniform_slot_tokens``).
        traffic_bytes: ``[..., L, G, G]`` dispatch bytes from GPU ``i`` to ``j`` (one token
            copy = ``hidden_size * element_bytes``); ``None``: derived from ``slot_tokens`` with
            data-parallel token sources (``routing.traffic_from_slot_tokens``).
        dispatch_dedup: ``(gpu_factor, node_factor)`` of ``workload.alltoall="deepep"``;
            ``None``: the uniform-routing expectation (``gps.cost.comm.dedup_factors``);
            ``(1, 1)`` when ``traffic_bytes`` already counts de-duplicated sends.
        dropped_tokens: ``[...]`` copies the plan dropped (reported only; the caller removes
            them from ``slot_tokens``).
    """

    slot_tokens: np.ndarray | None = None
    traffic_bytes: np.ndarray | None = None
    dispatch_dedup: tuple[float, float] | None = None
    dropped_tokens: float | np.ndarray = 0.0

    @classmethod
    def of(cls, sim: SimResult) -> StepRouting:
        """The routing of a load simulation: its slot tokens, traffic and dropped copies."""
        return cls(sim.slot_tokens, sim.traffic_bytes, dropped_tokens=sim.dropped.sum(axis=-1))


@dataclass(frozen=True)
class Prefetch:
    """Expert weights that live off the GPU (``resident`` marks the slots kept in HBM), fetched
    over ``link`` when a slot is busy: before the gate in the order of ``score`` (the
    strategy's belief of which slots this batch uses; equal scores share the port evenly, what
    a strategy without information does), then after the gate every busy slot still missing.

    Attributes:
        busy: ``[..., L, G, R]`` bool: the slot processes tokens in this batch (the truth).
        score: ``[..., L, G, R]`` float, broadcastable to ``busy``: higher is fetched first.
        resident: ``[R]`` bool: slots whose weights stay in HBM (never fetched).
        expert_bytes: bytes of one expert's weights.
        link: the link the weights cross (alpha-beta: ``latency_s``, ``gpu_bandwidth``).
        port: which port of the GPU that link is (``PORTS``): it shares that port's budget.
    """

    busy: np.ndarray
    score: np.ndarray
    resident: np.ndarray
    expert_bytes: float
    link: LinkProfile
    port: str = "host"

    def __post_init__(self) -> None:
        check_port(self.port, "prefetch port")
        if not np.isfinite(self.expert_bytes) or self.expert_bytes < 0:
            raise ValueError(f"expert_bytes={self.expert_bytes}: must be finite and >= 0")


@dataclass(frozen=True)
class StepExtras:
    """What a strategy adds to its routing's step (``gps.cost.ledger`` declares each term).

    Attributes:
        predictor_s: ``[..., L]`` predictor seconds per MoE layer (a once-per-batch predictor
            puts its time on layer 0).
        predictor_on_critical_path: ``True``: the time adds fully; ``False``: it runs beside
            attention and only ``max(0, p - attention)`` shows.
        window: fraction of each layer's attention during which a GPU's ports may carry work
            for the coming MoE block (replica copies, prefetch, chunked dispatch), in [0, 1].
        migration_s: port (``PORTS``) -> ``[..., L, G]`` seconds each GPU's port spends copying
            the replicas the layer's plan adds; they must land before the layer's experts run.
        prefetch: non-resident expert weights (``Prefetch``), or ``None``: all resident.
        dispatch_chunks: the post-gate chunked overlap: attention and gate run in this many
            chunks and each chunk's dispatch, a real all-to-all of its share of the traffic
            paying its mode's fixed cost, starts when the chunk's gate is done (``1``: off;
            ``gps.cost.ledger.port_exposure``). Available to every strategy: it needs no
            prediction; it can cost more than not chunking.
        dispatch_s: ``[..., L]`` exposed dispatch seconds replacing the all-to-all of the
            routing (the MoE-GPS paper's skip-the-scatter assumption: only the corrective round
            of mispredicted copies); ``None``: priced from the routing.
    """

    predictor_s: float | np.ndarray = 0.0
    predictor_on_critical_path: bool = True
    window: float = 1.0
    migration_s: Mapping[str, np.ndarray] = field(default_factory=dict)
    prefetch: Prefetch | None = None
    dispatch_chunks: int = 1
    dispatch_s: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.window <= 1.0:
            raise ValueError(f"strategy.migration_overlap={self.window}: must be in [0, 1]")
        chunks = self.dispatch_chunks
        if isinstance(chunks, bool) or not isinstance(chunks, int | np.integer) or chunks < 1:
            raise ValueError(f"strategy.dispatch_chunks={chunks!r}: expected an integer >= 1")
        for port in self.migration_s:
            check_port(port, "migration_s port")


NO_EXTRAS = StepExtras()


def transfer_seconds(nbytes: float | np.ndarray, link: LinkProfile) -> np.ndarray:
    """``latency + bytes / gpu_bandwidth`` of ``link`` where ``bytes > 0``, else 0 (seconds,
    shape of ``nbytes``): the alpha-beta time of one transfer."""
    b = np.asarray(nbytes, dtype=float)
    return np.where(b > 0, link.latency_s + b / link.gpu_bandwidth, 0.0)
