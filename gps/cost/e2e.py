"""End-to-end time of one batch step (one prefill step or one decode step).

``total = sum over MoE layers of the per-layer components + non-MoE time``, where the
non-MoE time (embedding lookup, dense layers, LM head) does not depend on routing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from gps.cost._common import (
    act_bytes,
    element_bytes,
    gemm_dtype,
    num_moe_layers,
    sequences_per_gpu,
    tokens_per_gpu,
)
from gps.cost.attention import PrefillChunk, attention_time
from gps.cost.experts import swiglu_op
from gps.cost.layer import check_slot_tokens, scaled_layer_times
from gps.cost.ledger import port_exposure, stretched_end
from gps.cost.parallel import (
    LayoutError,
    ParallelConfig,
    fixed_components,
    layout_inputs,
    resolve_layout,
    routed_layout_inputs,
)
from gps.cost.roofline import Op, ops_time
from gps.cost.routing import traffic_from_slot_tokens, uniform_slot_tokens
from gps.cost.step import NO_EXTRAS, StepExtras, StepRouting
from gps.engine import IDEAL, EngineProfile
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
        engine: name (``scheduler``, ``sampling``) -> seconds the serving engine adds to the
            step (``gps.engine``; zeros for the ideal engine).
        engine_s: ``[...]`` sum of ``engine``.
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
    engine: dict[str, float]
    engine_s: np.ndarray
    total_s: np.ndarray
    tokens_per_s: np.ndarray
    balanced_total_s: np.ndarray
    dropped_tokens: np.ndarray

    def layers_only(self) -> CostBreakdown:
        """The same step without its once-per-step parts (embedding, dense layers, LM head,
        the engine's per-step time): only the MoE layers' seconds, e.g. for a trace that covers
        some of the model's MoE layers, priced on those layers alone."""
        lead = self.total_s.shape
        zero = np.zeros(lead)
        return replace(
            self, non_moe={k: 0.0 for k in self.non_moe}, non_moe_s=zero,
            engine={k: 0.0 for k in self.engine}, engine_s=zero,
            total_s=self.total_s - self.non_moe_s - self.engine_s,
            tokens_per_s=self.tokens_per_s * self.total_s / (self.total_s - self.non_moe_s
                                                             - self.engine_s),
            balanced_total_s=self.balanced_total_s - self.non_moe_s - self.engine_s,
        )  # fmt: skip

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
            "engine_s_parts": dict(self.engine),
            "engine_s": self.engine_s.tolist(),
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


def two_batch_schedule(
    compute_a: np.ndarray,
    comm_d: np.ndarray,
    compute_b: np.ndarray,
    comm_c: np.ndarray,
    *,
    second: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    compute_rate: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved micro-batches (two-batch overlap): ``(per_layer_s, comm_in_attention_s)``,
    both ``[..., L_moe]`` seconds.

    Each micro-batch runs, per layer, ``A`` (attention + gate) -> ``D`` (dispatch) -> ``B``
    (experts + shared) -> ``C`` (combine) -> the next layer's ``A``; the inputs are the first
    micro-batch's stage seconds ``[..., L_moe]`` at full resources, ``second`` the second's
    (``None``: the same; an odd batch splits into ``floor`` and ``ceil`` halves). One compute
    stream runs ``A0 A1 B0 B1`` and one communication stream ``D0 D1 C0 C1`` per layer, in that
    order (SGLang's and DeepSeek's schedule). Every stage starts when its stream is free and its
    micro-batch's previous stage is done. While the communication stream is busy its kernels
    hold SMs (DeepEP normal: 20 of 132), so a compute stage runs at ``compute_rate`` (the share
    of SMs left) during the overlap and at full speed otherwise (``stretched_end``);
    communication is not slowed.

    ``per_layer_s``: each layer's share of the critical path (the step's finish time, split at
    layer boundaries). Never faster than the longest stage at full resources (stages only
    stretch); never slower than every stage of both micro-batches one after another (a stage
    stretches by at most the communication time it overlaps).

    ``comm_in_attention_s``: the seconds the communication stream (the NVLink/NIC ports the
    all-to-alls cross) is busy inside the layer's two attention stages: the previous layer's
    ``C1`` beside ``A0`` and ``D0`` beside ``A1`` (``D1`` starts after ``A1``, ``C0`` ends before
    the next ``A0``). That port time is no longer free for replica copies or prefetch
    (``gps.cost.ledger.port_exposure``'s ``taken_s``).
    """
    first = (compute_a, comm_d, compute_b, comm_c)
    second = first if second is None else second
    shape = np.broadcast_shapes(*(np.shape(x) for x in (*first, *second)))
    a0s, d0s, b0s, c0s = (np.broadcast_to(x, shape) for x in first)
    a1s, d1s, b1s, c1s = (np.broadcast_to(x, shape) for x in second)
    lead = shape[:-1]
    rate = float(compute_rate)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"compute_rate={compute_rate}: expected a share of SMs in (0, 1]")

    def overlap(s1, e1, s2, e2):
        return np.maximum(np.minimum(e1, e2) - np.maximum(s1, s2), 0.0)

    zero = np.zeros(lead)
    cpu = net = f0 = f1 = zero
    comm_from = comm_to = zero  # the communication stream's last busy interval
    out = np.empty(shape)
    busy = np.empty(shape)
    end = zero
    for layer in range(shape[-1]):
        a0w, d0w, b0w, c0w = (x[..., layer] for x in (a0s, d0s, b0s, c0s))
        a1w, d1w, b1w, c1w = (x[..., layer] for x in (a1s, d1s, b1s, c1s))
        s = np.maximum(cpu, f0)
        a0 = stretched_end(s, a0w, comm_from, comm_to, rate)  # beside the last combine
        in_attention = overlap(s, a0, comm_from, comm_to)
        d0_from = np.maximum(net, a0)
        d0 = d0_from + d0w
        s = np.maximum(a0, f1)
        a1 = stretched_end(s, a1w, d0_from, d0, rate)
        busy[..., layer] = in_attention + overlap(s, a1, d0_from, d0)
        d1_from = np.maximum(d0, a1)
        d1 = d1_from + d1w
        s = np.maximum(a1, d0)
        b0 = stretched_end(s, b0w, d1_from, d1, rate)
        c0_from = np.maximum(d1, b0)
        f0 = c0_from + c0w
        s = np.maximum(b0, d1)
        b1 = stretched_end(s, b1w, c0_from, f0, rate)
        c1_from = np.maximum(f0, b1)
        f1 = c1_from + c1w
        cpu, net = b1, f1
        comm_from, comm_to = c1_from, f1
        new_end = np.maximum(f1, cpu)
        out[..., layer] = new_end - end
        end = new_end
    return out, busy


def micro_batches(workload: Workload) -> tuple[Workload, Workload] | None:
    """The two micro-batches of ``workload`` for two-batch overlap: ``floor(B/2)`` and
    ``ceil(B/2)`` sequences, or the prompt of a single prefill sequence split into its first
    ``floor(S/2)`` tokens and the ``ceil(S/2)`` after them, which attend causally to the first
    half as well (a ``PrefillChunk`` with ``prefix_len = floor(S/2)``: the two halves' attention
    FLOPs add up to the whole prompt's); ``None`` when it cannot be split (decode, ``B = 1``)."""
    b, s = workload.batch_size, workload.seq_len
    if b > 1:
        return replace(workload, batch_size=b // 2), replace(workload, batch_size=b - b // 2)
    if workload.phase == "prefill" and s > 1:
        head, before = s // 2, getattr(workload, "prefix_len", 0)
        rest = {f.name: getattr(workload, f.name) for f in fields(Workload)}
        return replace(workload, seq_len=head), PrefillChunk(
            **{**rest, "seq_len": s - head, "prefix_len": before + head}
        )
    return None


def engine_times(
    spec: MoEModelSpec, cluster: Cluster, workload: Workload, engine: EngineProfile
) -> dict[str, float]:
    """Seconds the serving engine adds to one step (``gps.engine``).

    * ``scheduler``: the engine's exposed CPU time per step of this phase;
    * ``sampling``: ``sampling_passes`` reads/writes of the fp32 logits ``[m, V]`` of the
      ``m`` sequences whose next token one GPU samples (``B/G`` with data-parallel attention,
      ``B`` with tensor parallel), one kernel per pass, on the roofline.
    """
    m = sequences_per_gpu(workload, cluster.num_gpus)
    passes = engine.sampling_passes
    sampling = 0.0
    if passes:
        op = Op("sampling", 0.0, passes * 4.0 * m * spec.vocab_size, launches=passes)
        sampling = float(ops_time([op], cluster.gpu))
    return {"scheduler": engine.scheduler_s[workload.phase], "sampling": sampling}


def step_setting(
    cluster: Cluster, workload: Workload, engine: EngineProfile, expert_parallel: bool
) -> tuple[Cluster, Workload, float]:
    """The cluster and workload one step runs with under ``engine``, and the share of SMs
    left to compute while an all-to-all runs beside it.

    The engine's all-to-all mode for the phase replaces the workload's when the MoE layer is
    expert parallel over several GPUs (tensor-parallel experts run collectives instead), its
    overlap mode replaces the workload's when set; an eager phase makes every kernel wait for
    the host (``GPUProfile.host_launch_s``)."""
    phase = workload.phase
    if expert_parallel and cluster.num_gpus > 1 and engine.alltoall[phase] is not None:
        workload = replace(workload, alltoall=engine.alltoall[phase])
    if engine.overlap[phase] is not None:
        workload = replace(workload, overlap=engine.overlap[phase])
    gpu = cluster.gpu
    if engine.launch[phase] == "eager":
        gpu = replace(gpu, host_launch_s=gpu.launch_s("eager"))
        cluster = replace(cluster, gpu=gpu)
    held = engine.held_sms(workload.alltoall, gpu.sm_count)
    return cluster, workload, (gpu.sm_count - held) / gpu.sm_count


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
    engine: EngineProfile | None = None,
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
            attention DP/TP): with ``routing`` ``None``, priced with uniform routing
            (``layout_inputs``); with a simulated routing over the layout's GPUs (each rank's
            slots on all its GPUs), as the layout runs it (``routed_layout_inputs``: real
            tensor parallelism for ``tp > 1``); attention, gate and shared experts as the layout
            places them. ``None`` = expert parallelism over all GPUs with
            ``workload.attention_parallel``; ``ep = G, tp = 1`` gives the same numbers.
        engine: the serving engine (``gps.engine``; ``None``: the ideal engine, which adds
            nothing): its all-to-all and overlap modes for the phase (``step_setting``), its
            launch mode, the SMs its all-to-all holds under overlap, and its per-step
            scheduler and sampling time (``engine_times``, the ``engine`` parts of the step).

    ``workload.overlap="two_batch"``: each MoE layer's time is its share of the critical path of
    two interleaved micro-batches (``two_batch_schedule``: stages priced at the ``floor(B/2)`` and
    ``ceil(B/2)`` micro-batches, so their GEMMs run at the micro-batch's shape efficiency;
    compute slowed by the SMs the all-to-all holds), plus
    predictor, expert fetch and migration; the micro-batches' own dispatch overlaps, so neither
    the chunked dispatch nor ``extras.dispatch_s`` applies on that path, and the all-to-alls the
    schedule runs inside the attention stages take the dispatch ports' budget before replica
    copies and prefetch (``two_batch_schedule``, ``port_exposure(taken_s=...)``). One prefill
    prompt splits into halves whose second attends to the first (``micro_batches``).

    ``extras.dispatch_chunks = c > 1`` (without two-batch overlap): one chunk's dispatch is
    priced as a real all-to-all of ``1/c`` of the traffic (an extra ``scaled_layer_times``
    step), pipelined with the attention chunks at the compute rate the held SMs leave.

    Under two-batch overlap ``components`` still hold the full batch's stage times, so
    ``per_layer_s`` is then below their sum.

    Returns:
        ``CostBreakdown``.
    """
    workload.validate()
    engine = IDEAL if engine is None else engine
    routing = StepRouting() if routing is None else routing
    slot_tokens, traffic_bytes = routing.slot_tokens, routing.traffic_bytes
    dispatch_dedup = routing.dispatch_dedup
    tp_layout = 1
    if parallel is not None:
        tp_layout = resolve_layout(parallel, spec, cluster, workload)[1]
    cluster, workload, compute_rate = step_setting(cluster, workload, engine, tp_layout == 1)
    layer_spec, layer_cluster, fixed = spec, cluster, None
    if parallel is not None:
        ep, tp, attention = resolve_layout(parallel, spec, cluster, workload)
        workload = replace(workload, attention_parallel=attention)
        if slot_tokens is None and traffic_bytes is None:
            layer_spec, layer_cluster, slot_tokens, traffic_bytes, dedup = layout_inputs(
                spec, cluster, workload, ep, tp
            )
        else:
            if slot_tokens is None:
                raise LayoutError(
                    f"parallel={parallel.name!r}: a routing over the layout needs slot_tokens"
                )
            check_slot_tokens(np.asarray(slot_tokens, dtype=float), spec, cluster)
            layer_spec, slot_tokens, traffic_bytes, dedup = routed_layout_inputs(
                spec, cluster, slot_tokens, traffic_bytes, ep, tp, dispatch_dedup
            )
        dispatch_dedup = dedup if dispatch_dedup is None or tp > 1 else dispatch_dedup

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

    halves = micro_batches(workload) if workload.overlap == "two_batch" else None
    # under two-batch overlap the micro-batches' own dispatch overlaps: no chunked dispatch
    chunks = extras.dispatch_chunks if halves is None else 1
    steps = [(workload, 1.0)]
    if halves is not None:
        unique = halves[:1] if halves[0] == halves[1] else halves
        steps += [(h, h.tokens_per_step / workload.tokens_per_step) for h in unique]
    if chunks > 1:  # one chunk's dispatch: a real all-to-all of 1/c of the traffic
        steps.append((workload, 1.0 / chunks))
    priced = layer_times(slot_tokens, traffic_bytes, steps)
    if halves is not None and len(priced) == 2:
        priced.append(priced[1])
    comp, balanced = priced[0]
    attn = comp["attention"]
    if not extras.predictor_on_critical_path:
        pred = np.maximum(pred - attn, 0.0)
    comp["predictor"] = pred
    taken = overlapped = balanced_overlapped = None
    if halves is not None:
        (mb0, bal0), (mb1, bal1) = priced[1], priced[2]

        def stages(c: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
            return (
                c["attention"] + c["gate"],
                c["dispatch"],
                c["experts"] + c["shared"],
                c["combine"],
            )

        overlapped, taken = two_batch_schedule(
            *stages(mb0), second=stages(mb1), compute_rate=compute_rate
        )
        balanced_overlapped = two_batch_schedule(
            *stages(bal0), second=stages(bal1), compute_rate=compute_rate
        )[0]
    ports = dispatch_ports(layer_cluster)
    port_extras = replace(extras, dispatch_chunks=chunks)
    chunk, chunk_bal = (None, None) if chunks == 1 else (x["dispatch"] for x in priced[-1])
    exposed = port_exposure(attn, comp["dispatch"], ports, port_extras, chunk_dispatch_s=chunk,
                            compute_rate=compute_rate, taken_s=taken)  # fmt: skip
    bare = StepExtras(window=extras.window, dispatch_chunks=chunks)
    balanced["dispatch"] = port_exposure(attn, balanced["dispatch"], ports, bare,
                                         chunk_dispatch_s=chunk_bal,
                                         compute_rate=compute_rate)["dispatch"]  # fmt: skip
    comp["dispatch"] = exposed["dispatch"]
    if extras.dispatch_s is not None and halves is None:  # the balanced bound may skip it too
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
    added = engine_times(spec, cluster, workload, engine)
    engine_s = np.full(shape[:-1], sum(added.values()))
    per_layer = sum(comp.values())
    balanced_layer = sum(balanced.values())
    if overlapped is not None:
        per_layer = overlapped + comp["predictor"] + comp["expert_fetch"] + comp["migration"]
        balanced_layer = balanced_overlapped
        per_layer = np.broadcast_to(per_layer, shape)
    total = per_layer.sum(axis=-1) + non_moe_s + engine_s
    balanced_total = balanced_layer.sum(axis=-1) + non_moe_s + engine_s
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
        engine=added,
        engine_s=engine_s,
        total_s=total,
        tokens_per_s=workload.tokens_per_step / total,
        balanced_total_s=balanced_total,
        dropped_tokens=dropped,
    )
