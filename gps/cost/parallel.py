"""Hybrid parallel layouts of one MoE layer: expert parallelism x expert tensor parallelism.

A layout (``ParallelConfig``, config group ``conf/parallel/``) splits the cluster's ``G`` GPUs
into ``rep = G / (ep * tp)`` replicated expert-parallel groups. Inside a group, the ``E``
experts are spread over ``ep`` ranks (contiguous, ``ceil(E/ep)`` per rank) and every rank is
``tp`` GPUs, each holding a ``1/tp`` slice of its experts' SwiGLU width (column-parallel
gate/up, row-parallel down: a token's partial outputs are summed on the way back). Attention is
data parallel over all ``G`` GPUs (``attention: dp``) or tensor parallel over each group's
``ep*tp`` GPUs (``attention: tp``: heads split, an all-reduce of the block output, then each GPU
keeps ``1/(ep*tp)`` of the tokens, sequence-parallel style). Either way every GPU then sources
``T/G`` tokens; each token bound for a rank goes once to every GPU of that rank (dispatch;
``tp = 1``: each token copy, de-duplicated as the all-to-all mode does) and comes back as
``tp`` partial sums (combine), priced by ``workload.alltoall`` on the group: for pure tensor
parallelism an all-gather and a reduce-scatter, i.e. the layer's all-reduce.
``ep = G, tp = 1`` is pure expert parallelism, which ``batch_cost`` prices without a layout.

Layouts are priced with uniform routing (``routing.uniform_slot_tokens`` on the group's ranks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gps.cost._common import element_bytes
from gps.cost.attention import attention_time
from gps.cost.comm import dedup_factors, distinct_bins
from gps.cost.layer import gate_ops, shared_expert_op
from gps.cost.roofline import ops_time
from gps.cost.routing import uniform_slot_tokens
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import ATTENTION_PARALLEL, Workload


@dataclass
class ParallelConfig:
    """One parallel layout (Hydra group ``parallel``; ``conf/parallel/*.yaml``).

    Attributes:
        name: label, e.g. ``ep4_tp2``.
        ep: expert-parallel degree (ranks per group); ``0`` = all GPUs (pure EP, ``tp`` 1).
        tp: expert tensor-parallel degree (GPUs per rank, each with ``1/tp`` of the width).
        attention: ``dp`` or ``tp`` (see the module docstring); ``None`` = the workload's
            ``attention_parallel``.
    """

    name: str = "ep"
    ep: int = 0
    tp: int = 1
    attention: str | None = None


class LayoutError(ValueError):
    """A parallel layout does not fit the model or cluster; the message names the field."""


def check_tp(tp: object) -> int:
    """``tp`` if it is an integer >= 1 (``parallel.tp``), else ``LayoutError`` naming the key."""
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise LayoutError(f"parallel.tp={tp!r}: expected an integer >= 1")
    return tp


def resolve_layout(
    parallel: ParallelConfig, spec: MoEModelSpec, cluster: Cluster, workload: Workload
) -> tuple[int, int, str]:
    """``(ep, tp, attention)`` of ``parallel`` on this model and cluster, validated.

    Raises:
        LayoutError: naming ``parallel.ep``, ``parallel.tp`` or ``parallel.attention``: a
            degree below 1, ``ep*tp`` not dividing the GPUs, ``tp`` not dividing the expert
            width, or (tensor-parallel attention) the group not dividing the attention heads.
    """
    g = cluster.num_gpus
    tp = parallel.tp
    ep = parallel.ep or g // max(tp, 1)
    attention = parallel.attention or workload.attention_parallel
    check_tp(tp)
    if isinstance(ep, bool) or not isinstance(ep, int) or ep < 1:
        raise LayoutError(f"parallel.ep={parallel.ep!r}: expected an integer >= 0 (0 = all GPUs)")
    if g % (ep * tp):
        raise LayoutError(
            f"parallel.ep={ep}"
            + (f", parallel.tp={tp}" if tp > 1 else "")
            + f": ep*tp = {ep * tp} does not divide the {g} GPUs of cluster {cluster.name!r}"
        )
    f = spec.expert_intermediate_size
    if f % tp:
        raise LayoutError(
            f"parallel.tp={tp} does not divide expert_intermediate_size={f} of {spec.name!r}"
        )
    if attention not in ATTENTION_PARALLEL:
        raise LayoutError(f"parallel.attention={attention!r}: expected one of {ATTENTION_PARALLEL}")
    heads = spec.attention.num_heads
    if attention == "tp" and heads % (ep * tp):
        raise LayoutError(
            f"parallel.tp={tp}: tensor-parallel attention over ep*tp = {ep * tp} GPUs does not "
            f"divide num_heads={heads} of {spec.name!r}"
        )
    return ep, tp, attention


def group_cluster(cluster: Cluster, size: int, name: str) -> Cluster:
    """The first ``size`` GPUs of ``cluster`` as a cluster of their own (same profiles)."""
    gpn = min(cluster.gpus_per_node, size)
    nodes = max(size // cluster.gpus_per_node, 1)
    return replace(cluster, name=f"{cluster.name}/{name}", num_nodes=nodes, gpus_per_node=gpn,
                   inter_link=cluster.inter_link if nodes > 1 else None)  # fmt: skip


def layout_inputs(
    spec: MoEModelSpec, cluster: Cluster, workload: Workload, ep: int, tp: int
) -> tuple[MoEModelSpec, Cluster, np.ndarray, np.ndarray, tuple[float, float]]:
    """What ``moe_layer_times`` prices for one expert-parallel group of a layout.

    Returns:
        ``(spec_tp, group, slot_tokens [L_moe, ep*tp, R], traffic [L_moe, ep*tp, ep*tp],
        dedup)``: the model with ``1/tp`` of the expert width; the group's ``ep*tp`` GPUs
        (rank ``r`` = GPUs ``r*tp .. r*tp+tp-1``); every GPU of a rank holding that rank's
        uniform-routing slots (tokens of the group: ``T/rep``); the dispatch bytes from GPU
        ``i`` to GPU ``j`` of rank ``r``; and the de-duplication factors.

    ``tp == 1`` (expert parallelism): GPU ``i`` sends ``n_r / ep`` token copies to every other
    rank ``r`` (``n_r`` the rank's copies), de-duplicated per destination GPU and node by the
    all-to-all mode (``dedup_factors`` over the ranks and the group's nodes).
    ``tp > 1`` (real tensor parallelism): every GPU of a rank needs each *token* routed to the
    rank once, whatever its number of experts there, and sends back one partial sum per token:
    GPU ``i`` sends ``T_i * h / ep`` tokens to every other GPU of every rank (``h`` the
    expected ranks a token visits, ``distinct_bins``): for ``ep = 1`` the dispatch is an
    all-gather of the group's tokens and the combine a reduce-scatter of the partial sums (an
    all-reduce, as tensor-parallel MoE layers run). The traffic is then already de-duplicated:
    ``dedup = (1, 1)``.
    """
    g, size = cluster.num_gpus, ep * tp
    rep = g // size
    spec_tp = replace(spec, expert_intermediate_size=spec.expert_intermediate_size // tp)
    ranks = group_cluster(cluster, ep, "ranks") if tp == 1 else replace(
        cluster, num_nodes=1, gpus_per_node=ep, inter_link=None
    )  # fmt: skip
    rank_slots = uniform_slot_tokens(spec, ranks, workload) / rep  # [L, ep, R]
    slots = np.repeat(rank_slots, tp, axis=1)
    group = group_cluster(cluster, size, f"ep{ep}_tp{tp}")
    unit = spec.hidden_size * element_bytes(spec) / size
    if tp == 1:
        per_rank = rank_slots.sum(axis=-1) * unit  # copies
        rank_nodes = replace(cluster, num_nodes=group.num_nodes,
                             gpus_per_node=max(ep // group.num_nodes, 1))  # fmt: skip
        dedup = dedup_factors(spec, rank_nodes)
    else:
        tokens = workload.tokens_per_step / rep * distinct_bins(spec, ep) / ep
        per_rank = np.full(rank_slots.shape[:-1], tokens * unit)  # tokens, once per GPU
        dedup = (1.0, 1.0)
    per_gpu = np.repeat(per_rank, tp, axis=1)  # [L, size]: bytes each source sends GPU j
    traffic = per_gpu[:, None, :] * (1.0 - np.eye(size))
    return spec_tp, group, slots, traffic, dedup


def routed_layout_inputs(
    spec: MoEModelSpec,
    cluster: Cluster,
    slot_tokens: np.ndarray,
    traffic_bytes: np.ndarray | None,
    ep: int,
    tp: int,
    dedup: tuple[float, float] | None,
) -> tuple[MoEModelSpec, np.ndarray, np.ndarray | None, tuple[float, float] | None]:
    """A simulated routing over the ``G`` GPUs of a layout, as the layout runs it.

    The advisor places each expert-parallel rank's slots on every GPU of the rank
    (``rank = (g mod ep*tp) // tp``), so the simulation splits a rank's copies over its ``tp``
    GPUs like replicas. ``tp == 1``: nothing to convert. ``tp > 1`` (real tensor parallelism):
    every GPU of a rank runs *all* of the rank's copies through ``1/tp`` of the expert width
    (the slot tokens summed over the rank's GPUs, slot by slot, on each of them), and the
    dispatch moves each token once to every GPU of every rank it visits (``h =
    distinct_bins(spec, ep)`` ranks per token under uniform routing): from every GPU of a
    group to every other GPU ``j`` of it, ``n_r(j) * h / k / size`` tokens, ``n_r`` the copies
    of ``j``'s rank; the combine returns one partial sum per token. Traffic is then
    de-duplicated: ``dedup = (1, 1)``.

    Args:
        slot_tokens: ``[..., L, G, R]`` the simulation's slot copies.
        traffic_bytes: ``[..., L, G, G]`` or ``None`` (kept for ``tp == 1``).

    Returns:
        ``(spec_tp, slot_tokens, traffic_bytes, dedup)``.
    """
    if tp == 1:
        return spec, slot_tokens, traffic_bytes, dedup
    g, size = cluster.num_gpus, ep * tp
    rep = g // size
    n = np.asarray(slot_tokens, dtype=float)
    *lead, layers, _, r = n.shape
    ranks = n.reshape(*lead, layers, rep, ep, tp, r).sum(axis=-2)  # [..., L, rep, ep, R]
    slots = np.repeat(ranks, tp, axis=-2).reshape(*lead, layers, g, r)
    copies = ranks.sum(axis=-1)  # [..., L, rep, ep]
    tokens = copies * (distinct_bins(spec, ep) / spec.top_k)
    unit = spec.hidden_size * element_bytes(spec) / size
    per_gpu = np.repeat(tokens * unit, tp, axis=-1)  # [..., L, rep, size]: to each GPU j
    block = per_gpu[..., None, :] * (1.0 - np.eye(size))  # [..., L, rep, size, size]
    traffic = np.zeros((*lead, layers, g, g))
    for k in range(rep):
        sl = slice(k * size, (k + 1) * size)
        traffic[..., sl, sl] = block[..., k, :, :]
    spec_tp = replace(spec, expert_intermediate_size=spec.expert_intermediate_size // tp)
    return spec_tp, slots, traffic, (1.0, 1.0)


def fixed_components(spec: MoEModelSpec, cluster: Cluster, workload: Workload, ep: int,
                     tp: int, attention: str) -> dict[str, float]:  # fmt: skip
    """``attention``, ``gate`` and ``shared`` seconds of one MoE layer under a layout.

    Gate and shared experts run data parallel on every GPU's ``T/G`` tokens; attention is
    ``attention_time`` on all GPUs (``dp``) or on one group of ``ep*tp`` GPUs running its
    ``B/rep`` sequences with heads split (``tp``; ``B`` must divide by ``rep``).
    """
    g = cluster.num_gpus
    rep = g // (ep * tp)
    if attention == "dp":
        att = attention_time(spec, cluster, replace(workload, attention_parallel="dp"))
    else:
        if workload.batch_size % rep:
            raise LayoutError(
                f"workload.batch_size={workload.batch_size}: tensor-parallel attention over "
                f"{rep} replicated groups needs a batch divisible by {rep}"
            )
        group = group_cluster(cluster, ep * tp, "attention")
        wl = replace(workload, batch_size=workload.batch_size // rep, attention_parallel="tp")
        att = attention_time(spec, group, wl)
    return {
        "attention": att,
        "gate": float(ops_time(gate_ops(spec, workload, g), cluster.gpu)),
        "shared": float(ops_time([shared_expert_op(spec, workload, g)], cluster.gpu)),
    }
