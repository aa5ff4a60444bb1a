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
from gps.cost.ledger import port_exposure
from gps.cost.parallel import (
    LayoutError,
    ParallelConfig,
    fixed_components,
    layout_inputs,
    resolve_layout,
)
from gps.cost.roofline import Op, ops_time
from gps.cost.routing import traffic_from_slot_tokens, uniform_slot_tokens
from gps.cost.step import NO_EXTRAS, StepExtras, StepRouting
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


def dispatch_ports(cluster: Cluster) -> tuple[str, ...]:
    """The GPU ports (``gps.cost.step.PORTS``) a dispatch all-to-all crosses on ``cluster``:
    NVLink when a node holds several GPUs, the NICs when there are several nodes."""
    return (("intra",) if cluster.gpus_per_node > 1 else ()) + (
        ("inter",) if cluster.num_nodes > 1 else ()
    )


def batch_cost(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    routing: StepRouting | None = None,
    extras: StepExtras = NO_EXTRAS,
    *,
    parallel: ParallelConfig | None = None,
) -> CostBreakdown:
    """End-to-end seconds of one batch step, vectorised over sweep points.

    Args:
        spec, cluster, workload: model, hardware, step shape.
        routing: where the token copies go (``StepRouting``: ``slot_tokens [..., L_moe, G, R]``,
            ``traffic_bytes [..., L_moe, G, G]``, de-duplication, dropped copies); ``None`` =
            uniform routing on a static contiguous placement.
        extras: what the strategy adds (``StepExtras``, built by the mechanism ledger): predictor
            seconds, replica copies and prefetch on each GPU port, the post-gate chunked dispatch
            and the attention window that hides port work (``gps.cost.ledger.port_exposure``:
            one budget per port), or a dispatch replaced by the paper's assumption.
        parallel: a hybrid layout (``gps.cost.parallel``: expert TP, EP below ``G``,
            attention DP/TP), priced with uniform routing (``routing`` must be ``None``);
            ``None`` = expert parallelism over all GPUs with ``workload.attention_parallel``.
            ``ep = G, tp = 1`` gives the same numbers as ``None``.

    ``workload.overlap="two_batch"``: each MoE layer's time is its share of the critical path of
    two interleaved micro-batches (``two_batch_path``, stages priced at half the batch), plus
    predictor, expert fetch and migration; the micro-batches' own dispatch overlaps, so neither
    the chunked dispatch nor ``extras.dispatch_s`` applies on that path. ``components`` still
    hold the full batch's stage times, so ``per_layer_s`` is then below their sum.

    Returns:
        ``CostBreakdown``.
    """
    workload.validate()
    routing = StepRouting() if routing is None else routing
    slot_tokens, traffic_bytes = routing.slot_tokens, routing.traffic_bytes
    dispatch_dedup = routing.dispatch_dedup
    layer_spec, layer_cluster, fixed = spec, cluster, None
    if parallel is not None:
        if slot_tokens is not None or traffic_bytes is not None:
            raise LayoutError(
                f"parallel={parallel.name!r}: layouts are priced with uniform routing; pass "
                "routing=None"
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
    pred = _nonneg("predictor_s", extras.predictor_s)
    for port, secs in extras.migration_s.items():
        _nonneg(f"migration_s[{port!r}]", secs)
    dropped = _nonneg("dropped_tokens", routing.dropped_tokens)

    half = _half(workload) if workload.overlap == "two_batch" else None
    steps = [(workload, 1.0)]
    if half is not None:
        steps.append((half, half.tokens_per_step / workload.tokens_per_step))
    priced = layer_times(slot_tokens, traffic_bytes, steps)
    comp, balanced = priced[0]
    attn = comp["attention"]
    if not extras.predictor_on_critical_path:
        pred = np.maximum(pred - attn, 0.0)
    comp["predictor"] = pred
    ports = dispatch_ports(layer_cluster)
    port_extras = extras if half is None else replace(extras, dispatch_chunks=1)
    exposed = port_exposure(attn, comp["dispatch"], ports, port_extras)
    bare = StepExtras(window=extras.window, dispatch_chunks=port_extras.dispatch_chunks)
    balanced["dispatch"] = port_exposure(attn, balanced["dispatch"], ports, bare)["dispatch"]
    comp["dispatch"] = exposed["dispatch"]
    if extras.dispatch_s is not None and half is None:  # the balanced bound may skip it too
        comp["dispatch"] = _nonneg("dispatch_s", extras.dispatch_s)
        balanced["dispatch"] = np.minimum(balanced["dispatch"], comp["dispatch"])
    comp["expert_fetch"] = exposed["expert_fetch"]
    comp["migration"] = exposed["migration"]
    try:
        shape = np.broadcast_shapes(*(np.shape(v) for v in comp.values()))
    except ValueError:
        raise ValueError(
            "predictor_s / migration_s / prefetch do not broadcast to the per-layer shape "
            f"{attn.shape}: {', '.join(f'{k} {np.shape(v)}' for k, v in comp.items())}"
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

        per_layer = overlapped(mb) + comp["predictor"] + comp["expert_fetch"] + comp["migration"]
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
