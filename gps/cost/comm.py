"""Collective communication time: MoE all-to-all (dispatch/combine), reduce-scatter, all-gather
and all-reduce.

Links use the alpha-beta model of ``gps.hardware.LinkProfile``; bandwidths are per GPU, per
direction (``LinkProfile.gpu_bandwidth``).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from gps.hardware import Cluster, LinkProfile
from gps.model import MoEModelSpec


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


def _collective_link(cluster: Cluster) -> LinkProfile:
    """The link a collective over all ``G`` GPUs runs on: NVLink inside one node, otherwise the
    inter-node link (the ring's slowest hop)."""
    link = cluster.intra_link if cluster.num_nodes == 1 else cluster.inter_link
    if link is None:
        raise ValueError(f"cluster {cluster.name!r}: {cluster.num_nodes} nodes but inter_link=None")
    return link


def ring_pass_time(bytes_: float | np.ndarray, cluster: Cluster) -> np.ndarray:
    """One ring reduce-scatter or all-gather of a ``bytes_`` buffer (per GPU) over ``G`` GPUs.

    ``latency + (G-1)*hop_latency + (G-1)/G * bytes / bandwidth``: the collective's fixed cost
    once, then ``G-1`` ring steps each moving ``bytes/G`` (NCCL's ring model). 0 for ``G == 1``
    or no bytes. Seconds, shape of ``bytes_``.
    """
    b = np.asarray(bytes_, dtype=float)
    g = cluster.num_gpus
    if g == 1:
        return np.zeros_like(b)
    link = _collective_link(cluster)
    t = link.latency_s + (g - 1) * link.hop_latency_s + (g - 1) / g * b / link.gpu_bandwidth
    return np.where(b > 0, t, 0.0)


def reduce_scatter_time(bytes_: float | np.ndarray, cluster: Cluster) -> np.ndarray:
    """Ring reduce-scatter of a ``bytes_`` buffer per GPU (each GPU ends with ``1/G`` of the
    sum): ``ring_pass_time``. Seconds, shape of ``bytes_``."""
    return ring_pass_time(bytes_, cluster)


def all_gather_time(bytes_: float | np.ndarray, cluster: Cluster) -> np.ndarray:
    """Ring all-gather into a ``bytes_`` buffer per GPU (each GPU contributes ``1/G``):
    ``ring_pass_time``. Seconds, shape of ``bytes_``."""
    return ring_pass_time(bytes_, cluster)


def allreduce_time(bytes_: float | np.ndarray, cluster: Cluster) -> np.ndarray:
    """All-reduce of ``bytes_`` (per GPU, same on every GPU) over the ``G`` GPUs, seconds.

    The faster of NCCL's two algorithms, chosen by size as NCCL's tuner does:

    * ring = ``reduce_scatter_time + all_gather_time`` = ``2*latency + 2*(G-1)*hop +
      2*(G-1)/G * bytes / bandwidth`` (bandwidth-optimal, large messages);
    * tree (double binary tree: reduce up, broadcast down, pipelined) = ``latency +
      2*ceil(log2 G)*hop + 2 * bytes / bandwidth`` (latency-optimal, small messages).

    ``latency`` is the link's per-collective cost and ``hop`` its per-step latency
    (``LinkProfile.hop_latency_s``); the collective runs on the intra-node link for one node
    and on the inter-node link otherwise. 0 for ``G == 1`` or no bytes. Shape of ``bytes_``.
    """
    b = np.asarray(bytes_, dtype=float)
    g = cluster.num_gpus
    if g == 1:
        return np.zeros_like(b)
    link = _collective_link(cluster)
    ring = reduce_scatter_time(b, cluster) + all_gather_time(b, cluster)
    depth = int(np.ceil(np.log2(g)))
    tree = link.latency_s + 2 * depth * link.hop_latency_s + 2.0 * b / link.gpu_bandwidth
    return np.where(b > 0, np.minimum(ring, tree), 0.0)


# ---- MoE dispatch/combine as expert-parallel kernels move them ------------------------------

ALLTOALL_MODES = ("flat", "deepep", "deepep_low_latency")

# Fixed cost of one DeepEP low-latency kernel (dispatch or combine), seconds: least-squares fit
# of ``fixed + max(nvlink_bytes / bw_nvlink, rdma_bytes / bw_ib)`` to the 4 rows of the pure-RDMA
# kernel generation in DeepEP's published low-latency table (EP128 and EP256; H800 + CX7 400
# Gb/s, 128 tokens/GPU, hidden 7168, top-8, FP8 dispatch / BF16 combine; github.com/deepseek-ai/
# DeepEP docs/legacy.md), links ``nvlink4_h800`` and ``ib_ndr``. The re-measured NVLink
# generation (EP8-EP64) validates it (docs/validation.md). Refit with
# ``benchmarks/validate.py --fit-ll``; ``tests/test_validate.py`` checks it.
DEEPEP_LL_FIXED_S = 31.8e-6


def expected_distinct_bins(num_experts: int, top_k: int, bins: int) -> float:
    """Expected number of distinct bins a token's ``top_k`` distinct experts land in.

    ``num_experts`` experts are spread evenly over ``bins`` bins (GPUs or nodes) and a token
    picks ``top_k`` distinct experts uniformly: a bin of ``b = E/bins`` experts is missed with
    probability ``prod_{i<k} (E - b - i) / (E - i)``. With ``E <= bins`` every expert is its own
    bin (replicas) and the answer is ``k``.
    """
    e, k = float(num_experts), int(top_k)
    if num_experts <= bins:
        return float(k)
    b = e / bins
    miss = 1.0
    for i in range(k):
        miss *= max(e - b - i, 0.0) / (e - i)
    return bins * (1.0 - miss)


def distinct_bins(spec: MoEModelSpec, bins: int) -> float:
    """Expected distinct bins (GPUs or nodes, experts contiguous) a token's experts land in.

    Group-limited routing (``spec.topk_groups`` of ``spec.num_groups``; DeepSeek-V3: 4 of 8)
    confines a token to ``topk_groups/num_groups`` of the bins when the bins split evenly into
    groups (``bins % num_groups == 0``): ``k`` draws from ``E*tg/ng`` experts on ``bins*tg/ng``
    bins. Otherwise (a bin holds several groups) the limit is ignored: an upper bound.
    """
    e, k, ng, tg = spec.num_experts, spec.top_k, spec.num_groups, spec.topk_groups
    if ng > 1 and bins % ng == 0:
        return expected_distinct_bins(e * tg // ng, k, bins * tg // ng)
    return expected_distinct_bins(e, k, bins)


def dedup_factors(
    spec: MoEModelSpec, cluster: Cluster, copies_per_token: int | None = None
) -> tuple[float, float]:
    """``(gpu_factor, node_factor)``: de-duplicated sends per token copy under uniform routing.

    DeepEP's normal kernels send a token once per destination GPU inside a node and once per
    destination *node* over InfiniBand (then fan it out over NVLink). With ``k`` copies per
    token, ``gpu_factor = E[distinct GPUs] / k`` and ``node_factor = E[distinct nodes] / k``
    (``distinct_bins``, which applies group-limited routing); remote fractions cancel by
    symmetry. ``copies_per_token``: ``k`` of a leg that carries fewer copies per token than the
    model's top-k (a corrective round of mispredicted copies); default ``spec.top_k``.
    """
    if copies_per_token is not None:
        if copies_per_token < 1:
            raise ValueError(f"copies_per_token={copies_per_token}: must be >= 1")
        spec = replace(spec, top_k=int(copies_per_token))
    k = spec.top_k
    return distinct_bins(spec, cluster.num_gpus) / k, distinct_bins(spec, cluster.num_nodes) / k


def _peak(send: np.ndarray, recv: np.ndarray) -> np.ndarray:
    return np.maximum(send.max(axis=0), recv.max(axis=0))


def _timed(peak: np.ndarray, link: LinkProfile, scale: float, fixed: float | None) -> np.ndarray:
    """``alpha + peak*scale/bw`` where ``peak > 0`` (``alpha`` = ``fixed`` or link latency)."""
    alpha = link.latency_s if fixed is None else 0.0
    return np.where(peak > 0, alpha + peak * (scale / link.gpu_bandwidth), 0.0)


def moe_alltoall_times(
    traffic: np.ndarray,
    cluster: Cluster,
    *,
    mode: str = "flat",
    scales: tuple[float, float] = (1.0, 1.0),
    dedup: tuple[float, float] = (1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seconds ``[M]`` of dispatch, combine and their balanced bounds, from ``traffic [M, G, G]``.

    Args:
        traffic: validated dispatch bytes per token *copy* from GPU ``i`` to ``j`` at
            ``element_bytes`` per element; the combine sends the transpose back.
        mode: ``flat`` (``alltoall_time``: every copy sent on its own, one alpha per class);
            ``deepep`` (normal kernels: copies de-duplicated per destination GPU on NVLink
            and per destination node on InfiniBand, ``dedup = (gpu_factor, node_factor)``;
            arriving cross-node tokens fan out over NVLink, ``(gpn-1)/gpn`` of them to another
            GPU; the two classes are pipelined, ``max`` of the two); ``deepep_low_latency``
            (every copy sent on its own, NVLink inside a node and RDMA across, plus one fixed
            kernel cost ``DEEPEP_LL_FIXED_S`` instead of the link latencies).
        scales: ``(dispatch, combine)`` bytes per element / ``element_bytes`` (per-direction
            dtypes: e.g. FP8 dispatch, BF16 combine of an FP8 model: ``(1, 2)``).
        dedup: see ``mode="deepep"``; ignored otherwise.

    Returns:
        ``(dispatch, combine, dispatch_balanced, combine_balanced)``, balanced = each class's
        bytes spread evenly over the ``G`` GPUs (a lower bound).
    """
    peaks = alltoall_peaks(traffic, cluster, mode=mode, dedup=dedup)
    (d, db), (c, cb) = (price_peaks(peaks, cluster, mode, scale) for scale in scales)
    return d, c, db, cb


def alltoall_peaks(
    traffic: np.ndarray,
    cluster: Cluster,
    *,
    mode: str = "flat",
    dedup: tuple[float, float] = (1.0, 1.0),
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per link class (intra, then inter): ``(busiest GPU's max(send, recv) bytes [M], mean send
    bytes per GPU [M])`` of ``traffic [M, G, G]`` as ``mode`` moves it (see
    ``moe_alltoall_times``). Bytes scale linearly with the traffic, so a micro-batch or another
    dtype is priced from the same peaks (``price_peaks``)."""
    if mode not in ALLTOALL_MODES:
        raise ValueError(f"workload.alltoall={mode!r}: expected one of {ALLTOALL_MODES}")
    g, gpn = cluster.num_gpus, cluster.gpus_per_node
    classes = per_gpu_bytes(traffic, cluster)
    if mode == "deepep":
        gpu_f, node_f = dedup
        (s_in, r_in), *inter = classes
        if inter:
            (s_x, r_x) = inter[0]
            fwd = r_x * (gpu_f * (gpn - 1) / gpn)
            classes = [(s_in * gpu_f + fwd, r_in * gpu_f + fwd), (s_x * node_f, r_x * node_f)]
        else:
            classes = [(s_in * gpu_f, r_in * gpu_f)]
    return [(_peak(send, recv), send.sum(axis=0) / g) for send, recv in classes]


def price_peaks(
    peaks: list[tuple[np.ndarray, np.ndarray]], cluster: Cluster, mode: str, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(seconds, balanced seconds)`` ``[M]`` of one all-to-all from ``alltoall_peaks`` with
    every byte multiplied by ``scale`` (dtype ratio times micro-batch fraction): per class
    ``alpha + scale*bytes/bandwidth``, the max over classes; ``alpha`` is the link latency, or,
    in ``deepep_low_latency`` mode, one ``DEEPEP_LL_FIXED_S`` per kernel instead."""
    fixed = DEEPEP_LL_FIXED_S if mode == "deepep_low_latency" else None
    t = b = None
    for (peak, mean), link in zip(peaks, [cluster.intra_link, cluster.inter_link], strict=False):
        tc, bc = _timed(peak, link, scale, fixed), _timed(mean, link, scale, fixed)
        t = tc if t is None else np.maximum(t, tc)
        b = bc if b is None else np.maximum(b, bc)
    if fixed is not None:
        t = np.where(t > 0, t + fixed, 0.0)
        b = np.where(b > 0, b + fixed, 0.0)
    return t, b


def hierarchical_dispatch_bytes(
    expert_ids: np.ndarray,
    source_gpu: np.ndarray,
    expert_gpu: np.ndarray,
    cluster: Cluster,
    token_bytes: float,
) -> dict[str, np.ndarray]:
    """Per-GPU bytes of one DeepEP normal dispatch, counted token by token (vectorised).

    A token on GPU ``s`` (node ``A``, local rank ``l``) goes once over InfiniBand to GPU ``l`` of
    every *other* node ``B`` that holds one of its experts (one transfer per (token, node)),
    which forwards it over NVLink once to every other GPU of ``B`` holding one of its experts;
    inside ``A`` it goes over NVLink once per destination GPU other than ``s``.

    Args:
        expert_ids: ``[T, k]`` int experts of each token.
        source_gpu: ``[T]`` int GPU holding each token.
        expert_gpu: ``[E]`` int GPU of each expert (one replica per expert).
        cluster: node layout.
        token_bytes: bytes of one token (``hidden * dispatch element bytes``).

    Returns:
        ``{"ib_send", "ib_recv", "nvlink_send", "nvlink_recv"}``: bytes per GPU, each ``[G]``.
    """
    g, gpn = cluster.num_gpus, cluster.gpus_per_node
    ids = np.asarray(expert_ids)
    src = np.asarray(source_gpu)
    t, _ = ids.shape
    dst = np.asarray(expert_gpu)[ids]  # [T, k] destination GPUs
    hit = np.zeros((t, g), dtype=bool)
    hit[np.arange(t)[:, None], dst] = True  # distinct (token, GPU)
    node_hit = hit.reshape(t, -1, gpn).any(axis=-1)  # distinct (token, node)
    src_node, src_rank = src // gpn, src % gpn
    remote = node_hit.copy()
    remote[np.arange(t), src_node] = False
    forwarder = np.arange(node_hit.shape[1])[None, :] * gpn + src_rank[:, None]  # [T, nodes]
    ib_send = np.bincount(src, weights=remote.sum(axis=1), minlength=g)
    ib_recv = np.bincount(forwarder[remote], minlength=g).astype(float)
    # NVLink: every distinct (token, GPU) pair except the GPU that already holds the token
    # (its source inside the own node, its forwarder in a remote node).
    holder = np.where(
        (np.arange(g)[None, :] // gpn) == src_node[:, None],
        src[:, None],
        src_rank[:, None] + (np.arange(g)[None, :] // gpn) * gpn,
    )  # [T, G]: who holds the token on GPU j's node
    moved = hit & (holder != np.arange(g)[None, :])
    nvl_recv = moved.sum(axis=0).astype(float)
    nvl_send = np.bincount(holder[moved], minlength=g).astype(float)
    return {
        "ib_send": ib_send * token_bytes,
        "ib_recv": ib_recv * token_bytes,
        "nvlink_send": nvl_send * token_bytes,
        "nvlink_recv": nvl_recv * token_bytes,
    }
