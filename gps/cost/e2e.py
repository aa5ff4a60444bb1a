"""End-to-end time of one batch step (one prefill step or one decode step).

``total = sum over MoE layers of the per-layer components + non-MoE time``, where the
non-MoE time (embedding lookup, dense layers, LM head) does not depend on routing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gps.cost._common import act_bytes, element_bytes, gemm_dtype, num_moe_layers, tokens_per_gpu
from gps.cost.attention import attention_time
from gps.cost.experts import swiglu_op
from gps.cost.layer import check_slot_tokens, scaled_layer_times
from gps.cost.parallel import (
    LayoutError,
    ParallelConfig,
    fixed_components,
    layout_inputs,
    resolve_layout,
)
from gps.cost.roofline import Op, ops_time
from gps.cost.routing import traffic_from_slot_tokens, uniform_slot_tokens
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import Workload

LAYER_COMPONENTS = (
    "attention", "gate", "dispatch", "experts", "combine", "shared", "predictor", "migration",
    "expert_fetch",
)  # fmt: skip


@dataclass(frozen=True)
class CostBreakdown:
    """Seconds of one batch step; ``...`` are the sweep dimensions of the inputs.

    Attributes:
        components: name (``LAYER_COMPONENTS``) -> seconds ``[..., L_moe]``.
        per_layer_s: ``[..., L_moe]`` sum of ``components`` (less with two-batch overlap).
        non_moe: name (``embedding``, ``dense_layers``, ``lm_head``) -> seconds (scalars).
        non_moe_s: ``[...]`` sum of ``non_moe``.
        total_s: ``[...]`` end-to-end seconds of the step.
        tokens_per_s: ``[...]`` new tokens of the step / ``total_s``.
        balanced_total_s: ``[...]`` the same step with perfectly balanced expert load and
            traffic and no predictor or migration cost (an oracle lower bound).
        dropped_tokens: ``[...]`` tokens the plan dropped (reported only; priced nowhere).
    """

    components: dict[str, np.ndarray]
    per_layer_s: np.ndarray
    non_moe: dict[str, float]
    non_moe_s: np.ndarray
    total_s: np.ndarray
    tokens_per_s: np.ndarray
    balanced_total_s: np.ndarray
    dropped_tokens: np.ndarray

    def imbalance_overhead(self) -> np.ndarray:
        """``total_s / balanced_total_s - 1`` (>= 0), shape ``[...]``."""
        return self.total_s / self.balanced_total_s - 1.0

    def to_dict(self) -> dict:
        """JSON-serialisable dict (nested lists of floats; seconds, tokens/s, tokens)."""
        return {
            "components_s": {k: v.tolist() for k, v in self.components.items()},
            "per_layer_s": self.per_layer_s.tolist(),
            "non_moe_s_parts": dict(self.non_moe),
            "non_moe_s": self.non_moe_s.tolist(),
            "total_s": self.total_s.tolist(),
            "tokens_per_s": self.tokens_per_s.tolist(),
            "balanced_total_s": self.balanced_total_s.tolist(),
            "imbalance_overhead": self.imbalance_overhead().tolist(),
            "dropped_tokens": self.dropped_tokens.tolist(),
        }


def non_moe_times(spec: MoEModelSpec, cluster: Cluster, workload: Workload) -> dict[str, float]:
    """Seconds of the parts run once per step, on one GPU's share (``n = T/G`` tokens).

    * ``embedding``: lookup, ``w*n*d + a*n*d`` bytes (gather rows, write activations), no FLOPs.
    * ``dense_layers``: ``(num_layers - L_moe) * (attention_time + dense SwiGLU FFN on n)``
      (DeepSeek's first-k dense layers).
    * ``lm_head``: logits for the last token of each sequence only (serving convention; the
      prompt's other positions need no logits), ``m = B/G`` per GPU: ``2*m*d*V`` FLOPs,
      ``w*V*d + a*(m*d + m*V)`` bytes. Final norm and sampling are ignored.

    ``w``/``a``: weight/activation element bytes (``spec.dtypes``); GEMMs at ``gemm_dtype``.
    """
    g, gpu, dt = cluster.num_gpus, cluster.gpu, gemm_dtype(spec)
    w, a, d, v = element_bytes(spec), act_bytes(spec), spec.hidden_size, spec.vocab_size
    n = tokens_per_gpu(workload, g)
    m = workload.batch_size / g
    n_dense = spec.num_layers - num_moe_layers(spec)
    dense_ffn = swiglu_op("dense_ffn", n, spec.dense_intermediate_size, spec)
    dense = 0.0
    if n_dense:
        dense = n_dense * (
            attention_time(spec, cluster, workload) + float(ops_time([dense_ffn], gpu, dt))
        )
    return {
        "embedding": float(ops_time([Op("embedding", 0.0, (w + a) * n * d)], gpu, dt)),
        "dense_layers": dense,
        "lm_head": float(
            ops_time([Op("lm_head", 2 * m * d * v, w * v * d + a * (m * d + m * v))], gpu, dt)
        ),
    }


def two_batch_path(
    compute_a: np.ndarray, comm_d: np.ndarray, compute_b: np.ndarray, comm_c: np.ndarray
) -> np.ndarray:
    """Seconds per MoE layer ``[..., L_moe]`` of two interleaved micro-batches (two-batch overlap).

    Each micro-batch runs, per layer, ``A`` (attention + gate) -> ``D`` (dispatch) -> ``B``
    (experts + shared) -> ``C`` (combine) -> the next layer's ``A``; the inputs are one
    micro-batch's stage seconds ``[..., L_moe]`` (both micro-batches alike). One compute stream
    runs ``A0 A1 B0 B1`` and one communication stream ``D0 D1 C0 C1`` per layer, in that
    order (SGLang's and DeepSeek's schedule; DeepEP's communication uses no compute SMs in its
    low-latency mode and few in normal mode, ignored). Every stage starts when its stream is
    free and its micro-batch's previous stage is done; the result is each layer's share of the
    critical path (the step's finish time, split at layer boundaries).

    By construction the step is never slower than running every stage of both micro-batches
    one after another, and never faster than its longest stage.
    """
    shape = np.broadcast_shapes(compute_a.shape, comm_d.shape, compute_b.shape, comm_c.shape)
    a, d, b, c = (np.broadcast_to(x, shape) for x in (compute_a, comm_d, compute_b, comm_c))
    lead = shape[:-1]
    cpu = net = f0 = f1 = np.zeros(lead)
    out = np.empty(shape)
    end = np.zeros(lead)
    for layer in range(shape[-1]):
        al, dl, bl, cl = a[..., layer], d[..., layer], b[..., layer], c[..., layer]
        a0 = np.maximum(cpu, f0) + al
        a1 = np.maximum(a0, f1) + al
        d0 = np.maximum(net, a0) + dl
        d1 = np.maximum(d0, a1) + dl
        b0 = np.maximum(a1, d0) + bl
        b1 = np.maximum(b0, d1) + bl
        f0 = np.maximum(d1, b0) + cl
        f1 = np.maximum(f0, b1) + cl
        cpu, net = b1, f1
        new_end = np.maximum(f1, cpu)
        out[..., layer] = new_end - end
        end = new_end
    return out


def _half(workload: Workload) -> Workload | None:
    """One micro-batch of ``workload`` for two-batch overlap: ``ceil(B/2)`` sequences, or half
    the prompt of a single prefill sequence; ``None`` when it cannot be split (decode, B=1)."""
    if workload.batch_size > 1:
        return replace(workload, batch_size=-(-workload.batch_size // 2))
    if workload.phase == "prefill" and workload.seq_len > 1:
        return replace(workload, seq_len=-(-workload.seq_len // 2))
    return None


def _nonneg(name: str, x: float | np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}: must be finite and >= 0")
    return arr


def batch_cost(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    slot_tokens: np.ndarray | None = None,
    traffic_bytes: np.ndarray | None = None,
    *,
    predictor_overhead_s: float | np.ndarray = 0.0,
    predictor_on_critical_path: bool = True,
    migration_bytes: float | np.ndarray = 0.0,
    migration_overlap: float = 1.0,
    migration_link: str = "intra",
    migration_s: float | np.ndarray | None = None,
    dropped_tokens: float | np.ndarray = 0,
    dispatch_dedup: tuple[float, float] | None = None,
    parallel: ParallelConfig | None = None,
    dispatch_s: np.ndarray | None = None,
    expert_fetch_s: float | np.ndarray = 0.0,
) -> CostBreakdown:
    """End-to-end seconds of one batch step, vectorised over sweep points.

    Args:
        spec, cluster, workload: model, hardware, step shape.
        slot_tokens: ``[..., L_moe, G, R]`` token copies per expert slot; ``None`` = uniform
            routing on a static contiguous placement (``routing.uniform_slot_tokens``).
        traffic_bytes: ``[..., L_moe, G, G]`` dispatch bytes; ``None`` = derived from
            ``slot_tokens`` with data-parallel token sources (``traffic_from_slot_tokens``).
        predictor_overhead_s: seconds per MoE layer, broadcastable to ``[..., L_moe]`` (a
            once-per-batch predictor: put its time on layer 0 and zeros elsewhere). On the
            critical path it adds fully; otherwise it runs beside attention and only
            ``max(0, p - attention)`` shows.
        predictor_on_critical_path: see above.
        migration_bytes: expert-weight bytes received by the busiest GPU in each MoE layer,
            broadcastable to ``[..., L_moe]``; moved in ``latency + bytes / gpu_bandwidth`` of
            ``migration_link`` and hidden behind attention up to ``migration_overlap *
            attention`` (exposed: ``max(0, t_mig - migration_overlap * attention)``).
        migration_overlap: fraction of the attention time usable to hide migration, in [0, 1].
        migration_link: ``"intra"`` (default: replicas copied from a GPU of the same node) or
            ``"inter"``.
        migration_s: seconds to copy each MoE layer's replicas, already priced per link
            (``gps.plans.migration.migration_seconds``), broadcastable to ``[..., L_moe]``;
            when given it replaces ``migration_bytes``/``migration_link`` (same overlap rule).
        dropped_tokens: tokens dropped by the plan, broadcastable to ``[...]`` (reported only).
        dispatch_dedup: ``(gpu_factor, node_factor)`` of ``workload.alltoall="deepep"`` (sends
            per token copy after de-duplication per destination GPU / node); ``None`` = the
            uniform-routing expectation (``gps.cost.comm.dedup_factors``); ``(1, 1)`` when
            ``traffic_bytes`` already counts de-duplicated sends.
        parallel: a hybrid layout (``gps.cost.parallel``: expert TP, EP below ``G``,
            attention DP/TP), priced with uniform routing (``slot_tokens`` and
            ``traffic_bytes`` must be ``None``); ``None`` = expert parallelism over all GPUs
            with ``workload.attention_parallel`` (today's model). ``ep = G, tp = 1`` gives the
            same numbers as ``None``.
        dispatch_s: exposed dispatch seconds ``[..., L_moe]`` replacing the all-to-all of
            ``traffic_bytes`` (direct dispatch, ``gps.cost.token_mechanisms``); the combine is
            still priced from ``traffic_bytes``. ``None``: dispatch = combine time.
        expert_fetch_s: exposed seconds ``[..., L_moe]`` fetching non-resident expert weights
            (``token_mechanisms.expert_fetch_s``), the ``expert_fetch`` component.

    ``workload.overlap="two_batch"``: each MoE layer's time is its share of the critical path of
    two interleaved micro-batches (``two_batch_path``, stages priced at half the batch), plus
    predictor and migration; ``components`` still hold the full batch's stage times, so
    ``per_layer_s`` is then below their sum.

    Returns:
        ``CostBreakdown``.
    """
    workload.validate()
    layer_spec, layer_cluster, fixed = spec, cluster, None
    if parallel is not None:
        if slot_tokens is not None or traffic_bytes is not None:
            raise LayoutError(
                f"parallel={parallel.name!r}: layouts are priced with uniform routing; pass "
                "slot_tokens=None and traffic_bytes=None"
            )
        ep, tp, attention = resolve_layout(parallel, spec, cluster, workload)
        workload = replace(workload, attention_parallel=attention)
        layer_spec, layer_cluster, slot_tokens, traffic_bytes, dedup = layout_inputs(
            spec, cluster, workload, ep, tp
        )
        dispatch_dedup = dedup if dispatch_dedup is None else dispatch_dedup

        def fixed(wl: Workload) -> dict[str, float]:
            return fixed_components(spec, cluster, wl, ep, tp, attention)

    def layer_times(st: np.ndarray, tb: np.ndarray, steps: list) -> list[tuple[dict, dict]]:
        out = scaled_layer_times(layer_spec, layer_cluster, steps, st, tb, dedup=dispatch_dedup)
        if fixed is not None:
            for (wl, _), (comp, bal) in zip(steps, out, strict=True):
                for name, value in fixed(wl).items():
                    comp[name] = bal[name] = np.broadcast_to(value, comp[name].shape)
        return out

    if slot_tokens is None:
        slot_tokens = uniform_slot_tokens(spec, cluster, workload)
    if traffic_bytes is None:
        slot_tokens = np.asarray(slot_tokens, dtype=float)
        check_slot_tokens(slot_tokens, spec, cluster)
        traffic_bytes = traffic_from_slot_tokens(slot_tokens, spec)
    if not 0.0 <= migration_overlap <= 1.0:
        raise ValueError(f"migration_overlap={migration_overlap}: must be in [0, 1]")
    pred = _nonneg("predictor_overhead_s", predictor_overhead_s)
    mig_bytes = _nonneg("migration_bytes", migration_bytes)
    dropped = _nonneg("dropped_tokens", dropped_tokens)

    half = _half(workload) if workload.overlap == "two_batch" else None
    steps = [(workload, 1.0)]
    if half is not None:
        steps.append((half, half.tokens_per_step / workload.tokens_per_step))
    priced = layer_times(slot_tokens, traffic_bytes, steps)
    comp, balanced = priced[0]
    attn = comp["attention"]
    if not predictor_on_critical_path:
        pred = np.maximum(pred - attn, 0.0)
    if migration_link not in ("intra", "inter"):
        raise ValueError(f"migration_link={migration_link!r}: expected 'intra' or 'inter'")
    link = cluster.intra_link if migration_link == "intra" else cluster.inter_link
    if link is None:
        raise ValueError(f"migration_link='inter' but cluster {cluster.name!r} has no inter_link")
    mig_s = np.where(mig_bytes > 0, link.latency_s + mig_bytes / link.gpu_bandwidth, 0.0)
    if migration_s is not None:
        mig_s = _nonneg("migration_s", migration_s)
    comp["predictor"] = pred
    if dispatch_s is not None:  # the balanced bound may hide its dispatch as well
        comp["dispatch"] = _nonneg("dispatch_s", dispatch_s)
        balanced["dispatch"] = np.minimum(balanced["dispatch"], comp["dispatch"])
    comp["expert_fetch"] = _nonneg("expert_fetch_s", expert_fetch_s)
    comp["migration"] = np.maximum(mig_s - migration_overlap * attn, 0.0)
    try:
        shape = np.broadcast_shapes(*(v.shape for v in comp.values()))
    except ValueError:
        raise ValueError(
            f"predictor_overhead_s {pred.shape} / migration_bytes {mig_bytes.shape} do not "
            f"broadcast to the per-layer shape {attn.shape}"
        ) from None
    comp = {k: np.broadcast_to(comp[k], shape) for k in LAYER_COMPONENTS}

    non_moe = non_moe_times(spec, cluster, workload)
    non_moe_s = np.full(shape[:-1], sum(non_moe.values()))
    per_layer = sum(comp.values())
    balanced_layer = sum(balanced.values())
    if half is not None:
        mb, mb_bal = priced[1]

        def overlapped(c: dict[str, np.ndarray]) -> np.ndarray:
            return two_batch_path(
                c["attention"] + c["gate"], c["dispatch"], c["experts"] + c["shared"], c["combine"]
            )

        per_layer = overlapped(mb) + comp["predictor"] + comp["migration"] + comp["expert_fetch"]
        balanced_layer = overlapped(mb_bal)
        per_layer = np.broadcast_to(per_layer, shape)
    total = per_layer.sum(axis=-1) + non_moe_s
    balanced_total = balanced_layer.sum(axis=-1) + non_moe_s
    balanced_total = np.broadcast_to(balanced_total, total.shape)
    try:
        dropped = np.broadcast_to(dropped, total.shape)
    except ValueError:
        raise ValueError(
            f"dropped_tokens {dropped.shape} does not broadcast to the sweep shape {total.shape}"
        ) from None
    return CostBreakdown(
        components=comp,
        per_layer_s=per_layer,
        non_moe=non_moe,
        non_moe_s=non_moe_s,
        total_s=total,
        tokens_per_s=workload.tokens_per_step / total,
        balanced_total_s=balanced_total,
        dropped_tokens=dropped,
    )
