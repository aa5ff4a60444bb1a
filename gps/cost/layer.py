"""Per-MoE-layer time components, vectorised over sweep points and layers.

One MoE layer runs, in order: attention, gate (router GEMM + top-k), dispatch all-to-all,
routed-expert FFN (the layer waits for the slowest GPU), combine all-to-all, shared experts.
Shared experts are priced on the critical path (not overlapped with the all-to-alls).
"""

from __future__ import annotations

import numpy as np

from gps.cost._common import (
    act_bytes,
    dtype_bytes,
    element_bytes,
    gemm_dtype,
    num_moe_layers,
    tokens_per_gpu,
)
from gps.cost.attention import attention_time
from gps.cost.comm import alltoall_peaks, check_traffic, dedup_factors, price_peaks
from gps.cost.experts import (
    balanced_time_gpu_major,
    gpu_loads,
    slowest_gpu_time,
    swiglu_op,
)
from gps.cost.roofline import Op, ops_time
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import Workload


def gate_ops(spec: MoEModelSpec, workload: Workload, num_gpus: int) -> list[Op]:
    """Router ops on one GPU's ``n = T/G`` tokens.

    * router GEMM ``d -> E``: ``2*n*d*E`` FLOPs; ``w*d*E + a*(n*d + n*E)`` bytes.
    * top-k: no FLOPs counted; reads the ``n*E`` logits, writes ``n*k`` weights (``a`` bytes)
      and ids (4-byte int32).

    ``w``/``a``: weight/activation element bytes; the router runs at ``gemm_dtype``.
    """
    w, a = element_bytes(spec), act_bytes(spec)
    d, e, k = spec.hidden_size, spec.num_experts, spec.top_k
    n = tokens_per_gpu(workload, num_gpus)
    dt = gemm_dtype(spec)
    return [
        Op("router_gemm", 2 * n * d * e, w * d * e + a * (n * d + n * e), dtype=dt),
        Op("topk", 0.0, a * n * e + n * k * (a + 4)),
    ]


def shared_expert_op(spec: MoEModelSpec, workload: Workload, num_gpus: int) -> Op:
    """All shared experts of one layer as one fused SwiGLU of width ``num_shared * f_shared`` on
    the GPU's own ``T/G`` tokens (data parallel, full weights on every GPU)."""
    width = spec.num_shared_experts * spec.shared_expert_intermediate_size
    return swiglu_op("shared_experts", tokens_per_gpu(workload, num_gpus), width, spec)


def check_slot_tokens(slot_tokens: np.ndarray, spec: MoEModelSpec, cluster: Cluster) -> None:
    """Raise ``ValueError`` naming ``slot_tokens`` unless ``[..., L_moe, G, R]``, finite, >= 0."""
    lm, g = num_moe_layers(spec), cluster.num_gpus
    if slot_tokens.ndim < 3 or slot_tokens.shape[-3:-1] != (lm, g) or slot_tokens.shape[-1] < 1:
        raise ValueError(
            f"slot_tokens: shape {slot_tokens.shape} must end in [L_moe, G, R] = [{lm}, {g}, R>=1] "
            f"(model {spec.name!r}, cluster {cluster.name!r})"
        )
    if slot_tokens.size and not (slot_tokens.min() >= 0 and np.isfinite(slot_tokens.max())):
        raise ValueError("slot_tokens: token counts must be finite and >= 0")


def dispatch_leg_s(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    traffic_bytes: np.ndarray,
    *,
    copies_per_token: int | None = None,
) -> np.ndarray:
    """Seconds ``[...]`` of one dispatch all-to-all carrying ``traffic_bytes [..., G, G]``.

    The same model as every dispatch of the step (``scaled_layer_times``): the workload's
    all-to-all mode (``flat``: one latency per link class; ``deepep``: de-duplication per
    destination GPU and node for ``copies_per_token`` copies per token, default top-k;
    ``deepep_low_latency``: one fixed kernel cost ``DEEPEP_LL_FIXED_S``) and the dispatch
    dtype. A corrective round for mispredicted copies is such a leg: an extra collective that
    pays its mode's fixed cost whenever it carries any byte.
    """
    traffic = np.asarray(traffic_bytes, dtype=float)
    check_traffic(traffic, cluster)
    g, mode = cluster.num_gpus, workload.alltoall
    scale = dtype_bytes(spec, "dispatch") / element_bytes(spec)
    dedup = dedup_factors(spec, cluster, copies_per_token)
    peaks = alltoall_peaks(traffic.reshape(-1, g, g), cluster, mode=mode, dedup=dedup)
    return price_peaks(peaks, cluster, mode, scale)[0].reshape(traffic.shape[:-2])


def moe_layer_times(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    slot_tokens: np.ndarray,
    traffic_bytes: np.ndarray,
    *,
    dedup: tuple[float, float] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Seconds of each component of every MoE layer, and the same with balanced load.

    Args:
        slot_tokens: ``[..., L_moe, G, R]`` token copies per expert slot.
        traffic_bytes: ``[..., L_moe, G, G]`` dispatch bytes per token copy from GPU ``i`` to
            ``j`` at ``element_bytes`` per element; the combine sends the transpose back (same
            per-GPU peaks in this full-duplex model), each direction priced at its own dtype
            (``spec.dtypes.dispatch``/``combine``) and by ``workload.alltoall``
            (``gps.cost.comm.moe_alltoall_times``).
        dedup: ``(gpu_factor, node_factor)`` for ``alltoall="deepep"``; ``None`` = the
            uniform-routing expectation ``gps.cost.comm.dedup_factors``.

    Returns:
        ``(components, balanced)``: dicts name -> seconds ``[..., L_moe]`` (leading dims of the two
        inputs broadcast; read-only views) for ``attention``, ``gate``, ``dispatch``,
        ``experts``, ``combine``, ``shared``; ``balanced`` replaces ``dispatch``/``combine`` with
        their balanced bounds and ``experts`` with ``balanced_expert_time``.
    """
    return scaled_layer_times(
        spec, cluster, [(workload, 1.0)], slot_tokens, traffic_bytes, dedup=dedup
    )[0]


def scaled_layer_times(
    spec: MoEModelSpec,
    cluster: Cluster,
    steps: list[tuple[Workload, float]],
    slot_tokens: np.ndarray,
    traffic_bytes: np.ndarray,
    *,
    dedup: tuple[float, float] | None = None,
) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """``moe_layer_times`` for several steps that share the routing up to a token fraction.

    Each ``(workload, fraction)`` prices ``slot_tokens * fraction`` and ``traffic_bytes *
    fraction`` (a two-batch-overlap micro-batch: the step's workload and ``1/2``) with the
    per-GPU sums computed once: a slot is busy in every fraction where it is busy in the whole.
    The ``alltoall`` mode of the first workload applies to all.
    """
    slot_tokens = np.asarray(slot_tokens, dtype=float)
    traffic = np.asarray(traffic_bytes, dtype=float)
    check_slot_tokens(slot_tokens, spec, cluster)
    check_traffic(traffic, cluster)
    if traffic.ndim < 3 or traffic.shape[-3] != num_moe_layers(spec):
        raise ValueError(
            f"traffic_bytes: shape {traffic.shape} must end in [L_moe, G, G] with "
            f"L_moe={num_moe_layers(spec)} (model {spec.name!r})"
        )
    try:
        shape = np.broadcast_shapes(slot_tokens.shape[:-2], traffic.shape[:-2])
    except ValueError:
        raise ValueError(
            f"slot_tokens {slot_tokens.shape} and traffic_bytes {traffic.shape}: "
            "leading (sweep) dimensions do not broadcast"
        ) from None
    g, gpu = cluster.num_gpus, cluster.gpu
    mode = steps[0][0].alltoall
    w = element_bytes(spec)
    scales = (dtype_bytes(spec, "dispatch") / w, dtype_bytes(spec, "combine") / w)
    peaks = alltoall_peaks(
        traffic.reshape(-1, g, g),
        cluster,
        mode=mode,
        dedup=dedup_factors(spec, cluster) if dedup is None else dedup,
    )
    tokens, busy = gpu_loads(slot_tokens.reshape(-1, g, slot_tokens.shape[-1]))

    def full(x: float | np.ndarray, source_shape: tuple[int, ...] = ()) -> np.ndarray:
        return np.broadcast_to(np.reshape(x, source_shape), shape)

    out = []
    for workload, fraction in steps:
        (dispatch, dispatch_b), (combine, combine_b) = (
            price_peaks(peaks, cluster, mode, scale * fraction) for scale in scales
        )
        part = tokens * fraction if fraction != 1.0 else tokens
        experts = slowest_gpu_time(part, busy, spec, gpu)
        experts_b = balanced_time_gpu_major(part, busy, spec, gpu)
        fixed = {
            "attention": attention_time(spec, cluster, workload),
            "gate": float(ops_time(gate_ops(spec, workload, g), gpu)),
            "shared": float(ops_time([shared_expert_op(spec, workload, g)], gpu)),
        }

        def assemble(d: np.ndarray, e: np.ndarray, c: np.ndarray, f: dict = fixed) -> dict:
            return {
                "attention": full(f["attention"]),
                "gate": full(f["gate"]),
                "dispatch": full(d, traffic.shape[:-2]),
                "experts": full(e, slot_tokens.shape[:-2]),
                "combine": full(c, traffic.shape[:-2]),
                "shared": full(f["shared"]),
            }

        out.append(
            (assemble(dispatch, experts, combine), assemble(dispatch_b, experts_b, combine_b))
        )
    return out
