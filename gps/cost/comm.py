"""Collective communication time: MoE all-to-all (dispatch/combine) and ring all-reduce.

Links use the alpha-beta model of ``gps.hardware.LinkProfile``; bandwidths are per GPU, per
direction (``LinkProfile.gpu_bandwidth``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from gps.hardware import Cluster, LinkProfile


class AllToAllTime(NamedTuple):
    """Seconds of one all-to-all, each of shape ``[...]``.

    ``total_s = max(intra_s, inter_s)``; ``balanced_s`` is the same all-to-all with each link
    class's bytes spread evenly over the ``G`` GPUs (a lower bound of ``total_s``).
    """

    total_s: np.ndarray
    intra_s: np.ndarray
    inter_s: np.ndarray
    balanced_s: np.ndarray


_MATMUL_MAX_GPUS = 16  # up to this G, one BLAS product gives all per-GPU sums fastest


@lru_cache(maxsize=8)
def _sum_matrix(num_nodes: int, gpus_per_node: int) -> np.ndarray:
    """0/1 matrix ``[K*2*G, G*G]`` mapping flattened traffic ``(i, j)`` to per-GPU byte sums.

    Rows, per link class ``k`` (intra, then inter if ``num_nodes > 1``): send bytes of every
    GPU, then receive bytes of every GPU. The diagonal (local) maps to nothing.
    """
    g = num_nodes * gpus_per_node
    node = np.arange(g) // gpus_per_node
    same = node[:, None] == node[None, :]
    classes = [same & ~np.eye(g, dtype=bool)] + ([~same] if num_nodes > 1 else [])
    i, j = np.indices((g, g))
    w = np.zeros((len(classes), 2, g, g, g))
    for k, mask in enumerate(classes):
        w[k, 0, i[mask], i[mask], j[mask]] = 1.0
        w[k, 1, j[mask], i[mask], j[mask]] = 1.0
    w.setflags(write=False)
    return w.reshape(len(classes) * 2 * g, g * g)


def per_gpu_bytes(traffic: np.ndarray, cluster: Cluster) -> list[tuple[np.ndarray, np.ndarray]]:
    """Send and receive bytes of every GPU per link class, GPU-major.

    Args:
        traffic: ``[M, G, G]`` validated bytes from GPU ``i`` to GPU ``j``.
        cluster: decides which pairs share a node.

    Returns:
        ``[(send [G, M], recv [G, M])]`` for the intra-node class, then the inter-node class
        when the cluster has more than one node. The diagonal is excluded.
    """
    m, g = traffic.shape[0], cluster.num_gpus
    nn, gpn = cluster.num_nodes, cluster.gpus_per_node
    if g <= _MATMUL_MAX_GPUS:
        sums = (_sum_matrix(nn, gpn) @ traffic.reshape(m, g * g).T).reshape(-1, 2, g, m)
        return [(sums[k, 0], sums[k, 1]) for k in range(sums.shape[0])]
    node, gpus = cluster.node_of(), np.arange(g)
    diag = np.diagonal(traffic, axis1=1, axis2=2)
    to_node = traffic.reshape(m, g, nn, gpn).sum(axis=-1)  # [M, G, nodes]
    from_node = traffic.reshape(m, nn, gpn, g).sum(axis=-2)  # [M, nodes, G]
    own_send, own_recv = to_node[:, gpus, node], from_node[:, node, gpus]
    out = [((own_send - diag).T, (own_recv - diag).T)]
    if nn > 1:  # exact zeros stay exact: sum(own, 0, ...) - own == 0
        out.append(((to_node.sum(axis=-1) - own_send).T, (from_node.sum(axis=1) - own_recv).T))
    return out


def check_traffic(traffic_bytes: np.ndarray, cluster: Cluster, name: str = "traffic_bytes") -> None:
    """Raise ``ValueError`` naming ``name`` unless it is finite, >= 0 and ``[..., G, G]``."""
    g = cluster.num_gpus
    if traffic_bytes.ndim < 2 or traffic_bytes.shape[-2:] != (g, g):
        raise ValueError(
            f"{name}: shape {traffic_bytes.shape} must end in [G, G] = [{g}, {g}] "
            f"(cluster {cluster.name!r} has {g} GPUs)"
        )
    if traffic_bytes.size and not (
        traffic_bytes.min() >= 0 and np.isfinite(traffic_bytes.max())
    ):  # min() is NaN when any entry is NaN
        raise ValueError(f"{name}: bytes must be finite and >= 0")
    if cluster.num_nodes > 1 and cluster.inter_link is None:
        raise ValueError(f"cluster {cluster.name!r}: {cluster.num_nodes} nodes, inter_link=None")


def _class_time(peak: np.ndarray, link: LinkProfile) -> np.ndarray:
    """``latency + peak / bandwidth`` where ``peak > 0``, else 0 (seconds, shape of ``peak``)."""
    return np.where(peak > 0, link.latency_s + peak / link.gpu_bandwidth, 0.0)


def alltoall_gpu_major(traffic: np.ndarray, cluster: Cluster) -> tuple[np.ndarray, ...]:
    """``(total, intra, inter, balanced)`` seconds ``[M]`` for validated ``traffic [M, G, G]``."""
    g = cluster.num_gpus
    times, balanced = [], []
    links = [cluster.intra_link, cluster.inter_link]
    for (send, recv), link in zip(per_gpu_bytes(traffic, cluster), links, strict=False):
        times.append(_class_time(np.maximum(send.max(axis=0), recv.max(axis=0)), link))
        balanced.append(_class_time(send.sum(axis=0) / g, link))
    if len(times) == 1:
        times.append(np.zeros_like(times[0]))
        balanced.append(balanced[0])
    return np.maximum(times[0], times[1]), times[0], times[1], np.maximum(*balanced)


def alltoall_time(traffic_bytes: np.ndarray, cluster: Cluster) -> AllToAllTime:
    """Time of one all-to-all given who sends how much to whom.

    Args:
        traffic_bytes: ``[..., G, G]`` bytes GPU ``i`` sends to GPU ``j``; the diagonal is
            local and free.
        cluster: GPUs, nodes and the two link profiles.

    Model: bytes are split into intra-node and inter-node classes with
    ``cluster.same_node()``. Per GPU and class, send and receive bytes are summed; a class
    takes ``latency + max_g(max(send_g, recv_g)) / link.gpu_bandwidth`` (full duplex: sending
    and receiving overlap), latency only where the class carries bytes. NVLink and the NICs
    are separate hardware and run concurrently, so the all-to-all takes the max of the two
    classes. Congestion inside the network fabric is ignored. ``balanced_s`` prices each
    class's total bytes spread evenly (``total/G`` sent and received by every GPU).

    Returns:
        ``AllToAllTime`` of seconds, each ``[...]``.
    """
    traffic = np.asarray(traffic_bytes, dtype=float)
    check_traffic(traffic, cluster)
    g, lead = cluster.num_gpus, traffic.shape[:-2]
    parts = alltoall_gpu_major(traffic.reshape(-1, g, g), cluster)
    return AllToAllTime(*(p.reshape(lead) for p in parts))


def allreduce_time(bytes_: float | np.ndarray, cluster: Cluster) -> np.ndarray:
    """Ring all-reduce of ``bytes_`` (per GPU, same on every GPU) over the ``G`` GPUs, seconds.

    ``2*(G-1)*latency + 2*(G-1)/G * bytes / bandwidth`` (reduce-scatter + all-gather); the ring
    runs on the intra-node link for one node and on the inter-node link (its slowest hop)
    otherwise. 0 for ``G == 1`` or no bytes. Shape of ``bytes_``.
    """
    b = np.asarray(bytes_, dtype=float)
    g = cluster.num_gpus
    link = cluster.intra_link if cluster.num_nodes == 1 else cluster.inter_link
    if g == 1:
        return np.zeros_like(b)
    if link is None:
        raise ValueError(f"cluster {cluster.name!r}: {cluster.num_nodes} nodes but inter_link=None")
    t = 2 * (g - 1) * link.latency_s + 2 * (g - 1) / g * b / link.gpu_bandwidth
    return np.where(b > 0, t, 0.0)
