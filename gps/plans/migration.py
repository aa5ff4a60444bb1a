"""Replica migration priced on the link it travels: where a new replica's weights come from.

Going from plan ``old`` to plan ``new``, GPU ``g`` receives one expert's weights for every
expert it holds in ``new`` but not in ``old`` (``plan.migration_bytes_per_gpu``). Where they
come from (``docs/plans.md``, "Migration"):

* ``"peer"``: the nearest GPU that holds the expert in ``old``: a GPU of the same node over
  the intra-node link (NVLink), else a GPU of another node over the inter-node link
  (InfiniBand).
* ``"host"``: host memory over the GPU's own host link (PCIe; ``Cluster.host_link``).

Each receiving GPU is priced with its link's alpha-beta model, ``latency + received /
gpu_bandwidth``; a GPU's NVLink and NIC work concurrently, so its copy time is the slower of
the two. The sending side is not the bottleneck: when one expert goes to several GPUs the
copies are forwarded as a pipelined chain, as NCCL's broadcast does, so every port carries
about one copy (links are full duplex). A layer's copy time is that of its slowest GPU.

Shapes: ``L`` layers, ``G`` GPUs, ``E`` experts, ``N`` nodes (``G = N * gpus_per_node``).
"""

from __future__ import annotations

import numpy as np

from gps.hardware import Cluster, LinkProfile
from gps.plans.plan import Plan, check_choice, expert_gpu_holds

MIGRATION_SOURCES = ("peer", "host")

# fetch tiers of ``fetch_tier``
ON_GPU, SAME_NODE, OTHER_NODE = 0, 1, 2


def check_source(source: str) -> str:
    """``source`` if it is a known migration source, else ``ValueError`` naming the key."""
    return check_choice(source, MIGRATION_SOURCES, "strategy.migration_source", "migration source")


def _check_pair(old: Plan, new: Plan) -> None:
    if old.slot_expert.shape[:2] != new.slot_expert.shape[:2] or old.num_experts != new.num_experts:
        raise ValueError(
            f"old/new: plans differ in [L, G] ({old.slot_expert.shape[:2]} vs "
            f"{new.slot_expert.shape[:2]}) or E ({old.num_experts} vs {new.num_experts})"
        )


def _nodes(num_gpus: int, gpus_per_node: int | None) -> tuple[int, int]:
    gpn = num_gpus if gpus_per_node is None else int(gpus_per_node)
    if gpn < 1 or num_gpus % gpn:
        raise ValueError(f"gpus_per_node: {gpus_per_node} must divide num_gpus={num_gpus}")
    return num_gpus // gpn, gpn


def _holders(old: Plan, gpus_per_node: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(has [L, G, E], node_has [L, N, E], GPUs per node)``: bool, GPU ``g`` (a GPU of node
    ``n``) holds expert ``e`` under ``old``."""
    nl, g, _ = old.slot_expert.shape
    e = old.num_experts
    n, gpn = _nodes(g, gpus_per_node)
    has = expert_gpu_holds(old.slot_expert, e)
    return has, has.reshape(nl, n, gpn, e).any(axis=2), gpn


def fetch_tier(old: Plan, gpus_per_node: int | None = None) -> np.ndarray:
    """``[L, G, E]`` int64 where GPU ``g`` gets expert ``e`` from under ``old`` with peer
    copies: ``0`` it holds it, ``1`` a GPU of its node does, ``2`` only another node does."""
    has, node_has, gpn = _holders(old, gpus_per_node)
    on_node = np.repeat(node_has, gpn, axis=1)  # [L, G, E]
    return np.where(has, ON_GPU, np.where(on_node, SAME_NODE, OTHER_NODE)).astype(np.int64)


def _link(cluster: Cluster, kind: str) -> LinkProfile:
    link = {"intra": cluster.intra_link, "inter": cluster.inter_link, "host": cluster.host_link}
    if link[kind] is None:
        what = "host_link (hardware.host_link)" if kind == "host" else "inter_link"
        raise ValueError(f"cluster {cluster.name!r} has no {what} to copy replicas over")
    return link[kind]


def fetch_seconds(
    old: Plan, expert_bytes: float, cluster: Cluster, source: str = "peer"
) -> np.ndarray:
    """``[L, G, E]`` seconds to bring one copy of expert ``e`` to GPU ``g`` from ``old``
    (``0`` where ``g`` holds it already), one copy alone on its link: what the
    migration-minimal planner ranks targets by."""
    check_source(source)
    has, node_has, gpn = _holders(old, cluster.gpus_per_node)
    if source == "host":
        host = _link(cluster, "host")
        return np.where(has, 0.0, host.latency_s + expert_bytes / host.gpu_bandwidth)
    intra = _link(cluster, "intra")
    costs = [0.0, intra.latency_s + expert_bytes / intra.gpu_bandwidth, np.inf]
    if cluster.inter_link is not None:
        inter = cluster.inter_link
        costs[2] = inter.latency_s + expert_bytes / inter.gpu_bandwidth
    # the tier's cost per node, spread over its GPUs (``fetch_tier`` without the int tiers)
    out = np.repeat(np.where(node_has, costs[SAME_NODE], costs[OTHER_NODE]), gpn, axis=1)
    out[has] = costs[ON_GPU]
    return out


def migration_port_seconds(
    old: Plan, new: Plan, expert_bytes: float, cluster: Cluster, source: str = "peer"
) -> dict[str, np.ndarray]:
    """Port -> ``[L, G]`` seconds each GPU's port spends receiving the replicas ``new`` adds to
    ``old`` (module docstring: nearest holder over ``intra`` (NVLink) or ``inter`` (NIC), or
    host memory over ``host`` (PCIe); alpha-beta per link). Only ports that carry bytes appear;
    the cost model hides each port's seconds in that port's budget
    (``gps.cost.ledger.port_exposure``).

    Raises:
        ValueError: plans of different shape, ``expert_bytes < 0``, an unknown ``source``, a
            GPU count other than ``cluster.num_gpus``, or a link the copies need that the
            cluster lacks.
    """
    check_source(source)
    _check_pair(old, new)
    if not np.isfinite(expert_bytes) or expert_bytes < 0:
        raise ValueError(f"expert_bytes: must be finite and >= 0, got {expert_bytes}")
    g = new.slot_expert.shape[1]
    if g != cluster.num_gpus:
        raise ValueError(f"plans have G={g} GPUs, cluster {cluster.name!r} {cluster.num_gpus}")
    e = new.num_experts
    need = expert_gpu_holds(new.slot_expert, e) & ~expert_gpu_holds(old.slot_expert, e)
    if not need.any():
        return {}
    if source == "host":
        tiers = {"host": need}
    else:
        tier = fetch_tier(old, cluster.gpus_per_node)
        tiers = {"intra": need & (tier == SAME_NODE), "inter": need & (tier == OTHER_NODE)}
    out = {}
    for port, mask in tiers.items():
        recv = mask.sum(axis=2) * float(expert_bytes)  # [L, G]
        if recv.any():
            link = _link(cluster, port)
            out[port] = np.where(recv > 0, link.latency_s + recv / link.gpu_bandwidth, 0.0)
    return out


def migration_seconds_per_gpu(
    old: Plan, new: Plan, expert_bytes: float, cluster: Cluster, source: str = "peer"
) -> np.ndarray:
    """``[L, G]`` seconds each GPU spends copying the replicas ``new`` adds to ``old``: the
    slower of its ports (``migration_port_seconds``; a GPU's NVLink and NIC work
    concurrently)."""
    ports = migration_port_seconds(old, new, expert_bytes, cluster, source)
    out = np.zeros(new.slot_expert.shape[:2])
    for secs in ports.values():
        out = np.maximum(out, secs)
    return out


def migration_seconds(
    old: Plan, new: Plan, expert_bytes: float, cluster: Cluster, source: str = "peer"
) -> np.ndarray:
    """``[L]`` seconds to copy a layer's new replicas: its slowest GPU
    (``migration_seconds_per_gpu(...).max(axis=1)``)."""
    return migration_seconds_per_gpu(old, new, expert_bytes, cluster, source).max(axis=1)
