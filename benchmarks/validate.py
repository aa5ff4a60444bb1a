"""The cost model set beside published measurements of real systems.

For every published figure this prints the reference, the configuration, the measured value,
the model's value, ``ratio = model time / measured time`` (throughputs are compared as the
time per token, so a ratio above 1 means the model is too slow), whether the row is
``independent`` (``yes``: no constant of the model was fitted on its data; ``no: <what>``:
the constant fitted on it) and, for a ratio outside ``[0.8, 1.25]``, the mechanism the model
lacks. Rows are DeepEP kernel timings and whole serving steps (``step``): every whole-step row
names its engine, model, GPUs, layout, batch and lengths, and every assumption about a
published setting is written in its configuration.

    python benchmarks/validate.py                      # print the table and the summary
    python benchmarks/validate.py --write docs/validation.md
    python benchmarks/validate.py --fit-ll             # refit DEEPEP_LL_FIXED_S
    python benchmarks/validate.py --fit-h20            # refit the H20 decode constants

Runs anywhere (no GPU, no network): every measured value is a published number written below
with its source.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from gps.cost.e2e import batch_cost
from gps.cost.parallel import ParallelConfig
from gps.cost.step import StepRouting
from gps.engine import EngineProfile
from gps.hardware import Cluster
from gps.model import MoEModelSpec, TensorDtypes, load_model_spec
from gps.plans.eplb_placement import eplb_placement
from gps.profiles import load_cluster
from gps.serving import ServingWorkload, plan_steps
from gps.simulate import simulate_loads
from gps.traces.batching import batch_loads
from gps.traces.fluctuation import fitted_model
from gps.traces.synthetic import generate_from_preset
from gps.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
BAND = (0.8, 1.25)
HIDDEN = 7168  # DeepSeek-V3 hidden size, the DeepEP tables' setting
FP8_TOKEN = HIDDEN * (1 + 4 / 128)  # FP8 payload + one fp32 scale per 128 (DeepEP's own count)
BF16_TOKEN = HIDDEN * 2
ROUTING_SEED = 0  # the Monte Carlo of DeepEP's test routing

DEEPEP = "DeepEP README, V1 tables (github.com/deepseek-ai/DeepEP, docs/legacy.md, 'Performance')"
DEEPEP_NORMAL_SETUP = "H800 (NVLink ~160 GB/s) + CX7 IB 400 Gb/s per GPU; 4096 tokens/GPU, hidden 7168, top-8 of 256, FP8 dispatch, BF16 combine"  # noqa: E501
DEEPEP_LL_SETUP = "H800 + CX7 IB 400 Gb/s per GPU; 128 tokens/GPU, hidden 7168, top-8 of 256, FP8 dispatch, BF16 combine"  # noqa: E501
SGLANG = "LMSYS blog 'Deploying DeepSeek with PD Disaggregation and Large-scale Expert Parallelism on 96 H100 GPUs' (lmsys.org/blog/2025-05-05-large-scale-ep, 2025-05-05; SGLang main of May 2025, reproduction: github.com/sgl-project/sglang/issues/6017)"  # noqa: E501
QWEN = "Qwen3 docs, 'Speed Benchmark' (qwen.readthedocs.io/en/latest/getting_started/speed_benchmark.html; github.com/QwenLM/Qwen3 docs/source/getting_started/speed_benchmark.md)"  # noqa: E501
ANT = "LMSYS blog 'Together with SGLang: Best Practices for Serving DeepSeek-R1 on H20-96G' (lmsys.org/blog/2025-09-26-sglang-ant-group, SGLang v0.5.2)"  # noqa: E501
BASETEN = "Baseten blog 'Faster Mixtral inference with TensorRT-LLM and quantization' (baseten.co/blog/faster-mixtral-inference-with-tensorrt-llm-and-quantization, 2023-12)"  # noqa: E501

# DeepEP normal kernels: (EP, dispatch GB/s, combine GB/s), bottleneck link bandwidth.
DEEPEP_NORMAL = [(8, 153, 158), (16, 43, 43), (32, 58, 57), (64, 51, 50)]
# DeepEP low-latency kernels: (EP, dispatch us, combine us). EP8-64 are the re-measured
# generation with NVLink inside a node; EP128 and EP256 the original pure-RDMA generation.
DEEPEP_LL = [(8, 77, 114), (16, 118, 195), (32, 155, 273), (64, 173, 314), (128, 192, 369),
             (256, 194, 360)]  # fmt: skip
LL_FIT_EPS = (128, 256)  # DEEPEP_LL_FIXED_S is fitted on the pure-RDMA generation only


@dataclass(frozen=True)
class Row:
    """One published measurement and the model's value for it.

    ``measured_s`` and ``model_s`` are seconds of the same thing (a kernel, a step, or the
    time per token of a throughput); ``shown`` renders a value in the published unit.
    ``fitted``: the model constant fitted on this row's data (``""``: independent).
    ``step``: a whole serving step (or request), not a single kernel.
    """

    reference: str
    configuration: str
    measured_s: float
    model: Callable[[], float]
    shown: Callable[[float], str]
    missing: str | Callable[[], str] = ""
    fitted: str = ""
    step: bool = False

    @property
    def model_s(self) -> float:
        return self.model()

    @property
    def independent(self) -> bool:
        return not self.fitted


def cluster(gpu: str, intra: str, inter: str | None, gpus: int, per_node: int = 8) -> Cluster:
    nodes = max(gpus // per_node, 1)
    return load_cluster({"name": f"{gpu}_x{gpus}", "gpu": gpu, "intra_node_link": intra,
                         "inter_node_link": inter if nodes > 1 else None,
                         "num_nodes": nodes, "gpus_per_node": min(gpus, per_node)})  # fmt: skip


def h800(gpus: int) -> Cluster:
    return cluster("h800_sxm5_80gb", "nvlink4_h800", "ib_ndr", gpus)


def h100(gpus: int) -> Cluster:
    return cluster("h100_sxm5_80gb", "nvlink4", "ib_ndr", gpus)


def h20(gpus: int) -> Cluster:
    return cluster("h20_96gb", "nvlink4", None, gpus)


def deepseek(**kw) -> MoEModelSpec:
    return replace(load_model_spec("deepseek_v3"), **kw)


@cache
def engine(name: str) -> EngineProfile:
    import yaml

    path = ROOT / "conf" / "engine" / f"{name}.yaml"
    return EngineProfile.from_config(yaml.safe_load(path.read_text()))


def step_s(spec: MoEModelSpec, cl: Cluster, wl: Workload, eng: str | EngineProfile,
           parallel: ParallelConfig | None = None,
           routing: StepRouting | None = None) -> float:  # fmt: skip
    """Seconds of one step of ``wl`` on ``cl`` as engine ``eng`` runs it (the mean over the
    sampled steps of ``routing`` when it carries several)."""
    eng = engine(eng) if isinstance(eng, str) else eng
    cost = batch_cost(spec, cl, wl, routing, parallel=parallel, engine=eng)
    return float(np.mean(cost.total_s))


# ---- EPLB's residual imbalance, from moe-gps's own simulation ------------------------------

EPLB_PRESET = "deepseek_like"  # conf/trace/deepseek_like.yaml: synthetic, NOT calibrated
EPLB_STAT_TOKENS = 8192  # tokens of the preset whose mean load EPLB is planned on
EPLB_STEPS = 4  # sampled steps averaged per row
EPLB_SEED = 0
# SGLang --ep-num-redundant-experts 32 (the reproduction's prefill command, github.com/
# sgl-project/sglang/issues/6017); the blog's EP72 decode needs the same 288 physical experts
# ("EPLB's use of 288 experts enables ... parallelism sizes of 12 or 72").
EPLB_REDUNDANT = 32
EPLB_SETUP = (
    "EPLB priced with moe-gps's own simulation, no validation data: mean expert load of the "
    f"synthetic preset {EPLB_PRESET} ({EPLB_STAT_TOKENS:,} tokens, not calibrated on DeepSeek "
    f"routing), {EPLB_REDUNDANT} redundant experts (288 physical) placed by "
    "gps.plans.eplb_placement on that load (in-distribution statistics, as the blog's EPLB), "
    "each step's loads drawn around it with the per-request over-dispersion fitted on "
    f"DeepSeek-V2-Lite routing (FITTED_RHO['esft']), copies split evenly over replicas; mean "
    f"of {EPLB_STEPS} steps, seed {EPLB_SEED}"
)


@cache
def eplb_mean_load() -> np.ndarray:
    """``[L, E]`` proportions of the expert load EPLB is planned on: the mean of
    ``EPLB_STAT_TOKENS`` tokens of the synthetic preset ``EPLB_PRESET`` (its own seed)."""
    trace = generate_from_preset(EPLB_PRESET, num_tokens=EPLB_STAT_TOKENS)
    load = batch_loads(trace, trace.num_tokens)[0].astype(float)
    return load / load.sum(axis=-1, keepdims=True)


def eplb_routing(spec: MoEModelSpec, gpus: int, tokens_per_gpu: int,
                 tokens_per_request: int) -> StepRouting:  # fmt: skip
    """``EPLB_STEPS`` steps of ``tokens_per_gpu`` tokens on each of ``gpus`` GPUs routed
    through an EPLB placement (``eplb_placement`` of ``eplb_mean_load``, ``EPLB_REDUNDANT``
    redundant experts) with the fitted per-step fluctuation (``fitted_model("esft")``,
    requests of ``tokens_per_request`` tokens); slot tokens ``[S, L, G, (E + R)/G]``."""
    mu = eplb_mean_load()
    plan = eplb_placement(mu, gpus, EPLB_REDUNDANT)
    rng = np.random.default_rng(EPLB_SEED)
    k = spec.top_k
    counts = fitted_model("esft").sample(np.broadcast_to(mu, (EPLB_STEPS, *mu.shape)),
                                         tokens_per_gpu * gpus * k, k, tokens_per_request,
                                         rng)  # fmt: skip
    return StepRouting(slot_tokens=simulate_loads(plan, counts, spec=spec).slot_tokens)


def us(x: float) -> str:
    return f"{x * 1e6:,.0f} us"


# ---- DeepEP kernels -------------------------------------------------------------------------


@cache
def deepep_test_routing(ep: int) -> tuple[float, float]:
    """``(distinct GPUs, distinct nodes)`` per token under DeepEP's own test routing.

    ``tests/test_intranode.py``: top-8 of 256 random scores. ``tests/test_internode.py``:
    group-limited, a group per node: the ``min(nodes, 4)`` nodes with the highest best score,
    then the top 8 experts inside them. Monte Carlo over 4096 tokens (seed ``ROUTING_SEED``).
    """
    rng = np.random.default_rng(ROUTING_SEED)
    e, k, t = 256, 8, 4096
    nodes, per_gpu = max(ep // 8, 1), 256 // ep
    scores = np.abs(rng.standard_normal((t, e))) + 1.0
    if nodes > 1:
        groups = np.argsort(-scores.reshape(t, nodes, -1).max(axis=-1), axis=1)[:, : min(nodes, 4)]
        keep = np.zeros((t, nodes), dtype=bool)
        np.put_along_axis(keep, groups, True, axis=1)
        scores = np.where(np.repeat(keep, e // nodes, axis=1), scores, -np.inf)
    top = np.argpartition(-scores, k, axis=1)[:, :k]

    def distinct(bins: np.ndarray) -> float:
        s = np.sort(bins, axis=1)
        return float((1 + (np.diff(s, axis=1) != 0).sum(axis=1)).mean())

    return distinct(top // per_gpu), distinct(top // (e // nodes))


def component(spec: MoEModelSpec, cl: Cluster, wl: Workload, name: str,
              dedup: tuple[float, float] | None = None) -> float:  # fmt: skip
    """Seconds of one MoE layer's ``name`` component (uniform routing)."""
    return float(batch_cost(spec, cl, wl, StepRouting(dispatch_dedup=dedup)).components[name][0])


NVLINK_FIT = "nvlink4_h800 efficiency: 160 GB/s is the NVLink figure of the DeepEP tables"


def nvlink_fitted(model: Callable[[Cluster], float], cl: Cluster, tol: float = 0.01) -> str:
    """``NVLINK_FIT`` when the row's model value depends on the H800 NVLink efficiency read off
    the DeepEP tables (halving it moves the value by more than ``tol``, relative), else ``""``:
    a DeepEP row is evidence only where that constant does not decide it."""
    slow = replace(cl, intra_link=replace(cl.intra_link,
                                          efficiency=cl.intra_link.efficiency / 2))  # fmt: skip
    base = model(cl)
    return NVLINK_FIT if abs(model(slow) / base - 1.0) > tol else ""


def deepep_normal_rows() -> list[Row]:
    """Normal kernels: the published 'bottleneck bandwidth' is DeepEP's logical bytes per GPU
    (tokens received per rank intranode, tokens sent per RDMA rank incl. its own node
    internode, FP8 with its scales or BF16) over the kernel time; it is turned back into the
    kernel time with the byte count of DeepEP's test routing (``deepep_test_routing``), which
    the model then prices too: these rows test link bandwidths and de-duplication."""
    rows = []
    for ep, disp_bw, comb_bw in DEEPEP_NORMAL:
        cl = h800(ep)
        gpus, nodes = deepep_test_routing(ep)
        internode = cl.num_nodes > 1
        hits, link = (nodes, "RDMA") if internode else (gpus, "NVLink")
        spec = deepseek(num_groups=1, topk_groups=1)
        dedup = (gpus / 8, nodes / 8)
        wl = Workload("prefill", ep, 4096, alltoall="deepep")
        for what, bw, token in (("dispatch", disp_bw, FP8_TOKEN), ("combine", comb_bw, BF16_TOKEN)):
            measured = 4096 * hits * token / (bw * 1e9)
            fitted = nvlink_fitted(
                lambda c, s=spec, w=wl, n=what, d=dedup: component(s, c, w, n, d), cl
            )
            rows.append(Row(
                reference=f"{DEEPEP}: normal {what}, EP{ep} ({'internode' if internode else 'intranode'})",  # noqa: E501
                configuration=(f"{DEEPEP_NORMAL_SETUP}; test routing {hits:.2f} "
                               f"{'nodes' if internode else 'GPUs'} per token; {bw} GB/s "
                               f"({link}) -> {us(measured)}"),
                measured_s=measured,
                model=lambda s=spec, c=cl, w=wl, n=what, d=dedup: component(s, c, w, n, d),
                shown=us,
                missing=NORMAL_MISSING.get((ep, what), ""),
                fitted=fitted,
            ))  # fmt: skip
    return rows


_EP16 = (
    "two-node forwarding limit: at 2 nodes DeepEP's internode kernel moves 43 GB/s logical "
    "against 58 GB/s at 4 nodes; the model prices the RDMA and NVLink legs as independent "
    "pipelined links and lacks the per-kernel limit of its NVLink forwarder warps"
)
NORMAL_MISSING: dict[tuple[int, str], str] = {(16, "dispatch"): _EP16, (16, "combine"): _EP16}


def deepep_ll_rows() -> list[Row]:
    rows = []
    for ep, disp_us, comb_us in DEEPEP_LL:
        cl = h800(ep)
        spec = deepseek(num_groups=1, topk_groups=1)
        wl = Workload("decode", 128 * ep, 1, 128, alltoall="deepep_low_latency")
        generation = "pure RDMA (original)" if ep in LL_FIT_EPS else "NVLink + RDMA (re-measured)"
        for what, t in (("dispatch", disp_us), ("combine", comb_us)):
            if ep in LL_FIT_EPS:
                fitted = "DEEPEP_LL_FIXED_S fitted on the pure-RDMA rows"
            else:
                fitted = nvlink_fitted(lambda c, s=spec, w=wl, n=what: component(s, c, w, n), cl)
            rows.append(Row(
                reference=f"{DEEPEP}: low-latency {what}, EP{ep}",
                configuration=f"{DEEPEP_LL_SETUP}; kernel generation: {generation}",
                measured_s=t * 1e-6,
                model=lambda s=spec, c=cl, w=wl, n=what: component(s, c, w, n),
                shown=us,
                fitted=fitted,
            ))  # fmt: skip
    return rows


def fit_ll_fixed() -> float:
    """Fixed cost of a DeepEP low-latency kernel: the mean over the pure-RDMA rows
    (``LL_FIT_EPS``) of ``measured - model_without_fixed``."""
    from gps.cost import comm

    saved = comm.DEEPEP_LL_FIXED_S
    try:
        comm.DEEPEP_LL_FIXED_S = 0.0
        rows = [r for r in deepep_ll_rows() if "pure RDMA" in r.configuration]
        return float(np.mean([r.measured_s - r.model_s for r in rows]))
    finally:
        comm.DEEPEP_LL_FIXED_S = saved


# ---- whole serving steps --------------------------------------------------------------------


def per_node(tokens: float, seconds: float, nodes: float) -> float:
    """Seconds per token per node (the inverse of tokens/s/node)."""
    return seconds * nodes / tokens


def tok_node(rate_per_token: float) -> str:
    return f"{1.0 / rate_per_token:,.0f} tok/s/node"


def tok_s(rate_per_token: float) -> str:
    return f"{1.0 / rate_per_token:,.0f} tok/s"


def sglang_rows() -> list[Row]:
    """SGLang's DeepSeek-V3 deployment on H100 (Atlas Cloud: 8x H100 per node, one 400 Gb/s
    NIC per GPU), DP attention, DeepEP (normal for prefill, low-latency for decode),
    two-batch overlap, FP8 weights (DeepGEMM), BF16 KV cache. The figures that ran SGLang's
    EPLB (in-distribution statistics, 288 physical experts) are priced with moe-gps's own EPLB
    simulation (``eplb_routing``); the 'simulated perfect EPLB' figure (random routing) and
    DeepSeek's profile (absolutely balanced routing) with uniform routing."""
    spec = load_model_spec("deepseek_v3")
    rows = []
    prefill = [  # (prompt tokens, prompts per GPU, tok/s/node, label)
        (1024, 16, 57_674, "1K prompts, default EPLB"),
        (
            2000,
            8,
            54_543,
            "2K prompts (read as 2,000 tokens, the blog's headline length), default EPLB",
        ),
        (4096, 4, 50_302, "4K prompts, default EPLB"),
        (4096, 4, 59_337, "4K prompts, simulated perfect EPLB"),
    ]
    for length, seqs, rate, label in prefill:
        cl = h100(32)
        wl = Workload("prefill", seqs * 32, length, alltoall="deepep", overlap="two_batch")
        eplb = "default EPLB" in label
        routing = eplb_routing(spec, 32, seqs * length, length) if eplb else None
        rows.append(Row(
            reference=f"{SGLANG}: prefill, {label}",
            configuration=(f"SGLang, DeepSeek-V3 FP8, 4 nodes x 8 H100 (EP32, DP32 attention, "
                           f"DeepEP normal, two-batch overlap), {seqs} x {length:,} = "
                           f"{seqs * length:,} tokens per GPU per step (assumed: the blog's "
                           "16,384-token profile batch, whole prompts); "
                           + (EPLB_SETUP if eplb else "uniform routing (random expert "
                              "selection, the blog's simulated perfect EPLB)")),
            measured_s=1.0 / rate,
            model=lambda c=cl, w=wl, r=routing: per_node(
                w.tokens_per_step, step_s(spec, c, w, "sglang", routing=r), 4),
            shown=tok_node,
            missing=lambda c=cl, w=wl, r=routing: sglang_missing(spec, c, w, "sglang", r),
            step=True,
        ))  # fmt: skip
    decode = [
        (True, 22_282, "two-batch overlap"),
        (False, 22_310 / 1.255, "no overlap (ablation: TBO +25.5% at 256/GPU)"),
    ]
    routing = eplb_routing(spec, 72, 256, 1)
    for tbo, rate, label in decode:
        cl = h100(72)
        wl = Workload("decode", 256 * 72, 1, 2000, alltoall="deepep_low_latency",
                      overlap="two_batch" if tbo else "none")  # fmt: skip
        rows.append(Row(
            reference=f"{SGLANG}: decode, 2,000-token inputs, {label}",
            configuration=("SGLang, DeepSeek-V3 FP8, 9 nodes x 8 H100 (EP72, DP72 attention, "
                           "DeepEP low-latency, CUDA graphs), 256 sequences per GPU, KV length "
                           "2,000" + ("" if tbo else "; measured = 22,310 / 1.255 from the "
                                      "ablation") + "; " + EPLB_SETUP),
            measured_s=1.0 / rate,
            model=lambda c=cl, w=wl: per_node(
                w.tokens_per_step, step_s(spec, c, w, "sglang", routing=routing), 9),
            shown=tok_node,
            missing=lambda c=cl, w=wl: sglang_missing(spec, c, w, "sglang", routing),
            step=True,
        ))  # fmt: skip
    cl = h800(32)
    wl = Workload("prefill", 4 * 32, 4096, alltoall="deepep", overlap="two_batch")
    rows.append(Row(
        reference=(f"{SGLANG}, 'DeepSeek Profile' column (from github.com/deepseek-ai/"
                   "profile-data, prefill.json)"),
        configuration=("DeepSeek's inference system, DeepSeek-V3 FP8 on 4 nodes x 8 H800 (EP32, "
                       "TP1, DeepEP normal, two micro-batches), 16,384 tokens per GPU of 4,096-"
                       "token prompts, absolutely balanced routing (profile-data README), "
                       "communication on 24 of the 132 SMs (profile-data's prefill figure: "
                       "computation 108 SMs, communication 24 SMs); other engine facts as "
                       "SGLang's (DeepEP normal kernels, no scheduler gaps)"),
        measured_s=1.0 / 62_713,
        model=lambda: per_node(wl.tokens_per_step, step_s(spec, cl, wl, deepseek_engine()), 4),
        shown=tok_node,
        missing=lambda: sglang_missing(spec, cl, wl, deepseek_engine()),
        step=True,
    ))  # fmt: skip
    return rows


# DeepSeek's prefill profile runs its communication on 24 SMs and computation on 108
# (github.com/deepseek-ai/profile-data, assets/prefill.jpg, the figure of its README).
DEEPSEEK_PREFILL_COMM_SMS = 24


@cache
def deepseek_engine() -> EngineProfile:
    """SGLang's engine profile with DeepSeek's prefill split of SMs
    (``DEEPSEEK_PREFILL_COMM_SMS`` for the DeepEP normal kernels)."""
    base = engine("sglang")
    sms = {**base.alltoall_sms, "deepep": DEEPSEEK_PREFILL_COMM_SMS}
    return replace(base, name="deepseek-profile", alltoall_sms=sms)


def sglang_missing(spec: MoEModelSpec, cl: Cluster, wl: Workload, eng: str | EngineProfile,
                   routing: StepRouting | None = None) -> str:  # fmt: skip
    """Why the model misses a DeepEP deployment row, with the same row priced without overlap."""
    serial_s = step_s(spec, cl, replace(wl, overlap="none"), eng, routing=routing)
    serial = per_node(wl.tokens_per_step, serial_s, cl.num_nodes)
    if wl.phase == "decode":
        comm = (
            "DeepEP's low-latency kernels run slower in the deployment than in their unit test "
            "(the blog's decode breakdown: dispatch ~0.17 ms per layer busy-waiting against "
            "0.06 ms occupying SMs in the unit test; combine 2x DeepSeek's, busy-waiting "
            "because SGLang's attention is shorter); the model prices the unit-test latencies "
            "(the DeepEP rows above) and no waiting; the breakdown is published only as a "
            "figure (profile-decode.png), not readable here"
        )
    else:
        comm = (
            "DeepEP's normal kernels run slower beside two-batch-overlapped compute than in "
            "their unit test (the blog's prefill breakdown: 'Both DeepSeek and SGLang have a "
            "communication time slower than unit test results, while the latter is achievable "
            "when disabling TBO'); the model prices the unit-test bandwidth, so its step is "
            "communication-bound at the unit-test time; the slowdown is published only in a "
            "figure (profile-prefill.png) and DeepSeek's trace (profile-data prefill.json), "
            "neither readable here"
        )
    return f"{comm}; without overlap the model gives {1.0 / serial:,.0f} tok/s/node"


def qwen_rows() -> list[Row]:
    """Qwen3 MoE speed at batch 1 on H20 with SGLang 0.4.6.post1: ``speed = (prompt +
    generated) / time`` generating 2,048 tokens (Qwen3 docs). The model: the prompt's prefill
    (SGLang's 8,192-token chunks on a 96 GB GPU) plus 2,047 decode steps at the mean context."""
    out = []
    runs = [  # (model, quantisation, GPUs, layout, {input: tokens/s})
        ("qwen3_30b_a3b", "BF16", 1, None,
         {1: 137.18, 6144: 490.10, 14336: 849.62, 30720: 1283.94}),
        ("qwen3_30b_a3b", "FP8", 1, None,
         {1: 155.55, 6144: 551.34, 14336: 945.13, 30720: 1405.91}),
        ("qwen3_235b_a22b", "BF16", 8, ParallelConfig("tp8", 1, 8, "tp"),
         {1: 74.50, 6144: 289.03, 14336: 546.73, 30720: 979.41}),
        ("qwen3_235b_a22b", "FP8", 4, ParallelConfig("tp4", 1, 4, "tp"),
         {1: 71.65, 6144: 275.16, 14336: 514.23, 30720: 887.90}),
    ]  # fmt: skip
    for name, quant, gpus, layout, speeds in runs:
        spec = load_model_spec(name)
        if quant == "FP8":  # block-wise FP8 checkpoints (Qwen/...-FP8): FP8 weights and GEMMs
            fp8 = TensorDtypes(weights="fp8", activations="bf16", attention="bf16", kv_cache="bf16")
            spec = replace(spec, dtypes=fp8)
        cl = h20(gpus)
        for prompt, speed in speeds.items():
            out.append(Row(
                reference=f"{QWEN}: {spec.name} (SGLang), input {prompt:,}, {quant}",
                configuration=(f"SGLang 0.4.6.post1, {spec.name} {quant}, {gpus} x H20 96GB"
                               f"{'' if layout is None else f' (TP={gpus}: attention and experts tensor parallel)'}"  # noqa: E501
                               f", batch 1, {prompt:,}-token prompt, 2,048 generated tokens, "
                               "CUDA graphs, mixed chunked prefill; independent of the fit in "
                               "data only: the H20's HBM efficiency and per-kernel cost are "
                               "fitted on the dense rows of the same benchmark page (same "
                               "engine version, batch and regime)"),
                measured_s=1.0 / speed,
                model=lambda s=spec, c=cl, p=prompt, lay=layout: request_s(s, c, p, 2048, lay)
                / (p + 2048),
                shown=tok_s,
                missing=QWEN_MISSING[quant],
                step=True,
            ))  # fmt: skip
    return out


QWEN_MISSING = {
    "FP8": (
        "FP8 MoE kernels on SGLang 0.4.6 (Triton fused MoE with block-wise w8a8: a per-token "
        "activation quantisation before each expert GEMM) gain far less over BF16 than their "
        "halved weight bytes: measured here FP8 is 1.13x BF16 at input 1, the model 1.39x; "
        "kernel benchmarks show the same on other GPUs (vLLM PR #35457, H200, Qwen3 MoE "
        "shapes: FP8 fused MoE 1.10-1.17x BF16 at batch >= 4) but none times this shape on "
        "an H20, so the model streams FP8 expert weights at the HBM efficiency fitted on "
        "dense GEMVs"
    ),
    "BF16": (
        "long-context decode attention: the decode kernel over a 30k-token cache runs below "
        "the roofline's HBM efficiency (the H20 constants were fitted at a 1k-token context)"
    ),
}


# Dense Qwen3 models of the same speed benchmark (SGLang 0.4.6.post1, 1x H20, batch 1, input
# 1, 2,048 generated tokens), the data the H20's decode constants are fitted on (never the MoE
# rows above): name -> (layers, hidden, heads, KV heads, FFN width, BF16 tokens/s, FP8 tokens/s);
# dimensions from each huggingface.co/Qwen/Qwen3-<size> config.json (head_dim 128, vocab 151,936).
DENSE_QWEN3 = {
    "0.6B": (28, 1024, 16, 8, 3072, 414.17, 458.03),
    "1.7B": (28, 2048, 16, 8, 6144, 227.80, 333.90),
    "4B": (36, 2560, 32, 8, 9728, 133.13, 200.61),
    "8B": (36, 4096, 32, 8, 12288, 81.73, 150.25),
    "14B": (40, 5120, 40, 8, 17408, 47.10, 97.11),
    "32B": (64, 5120, 64, 8, 25600, 20.72, 46.17),
}


def dense_qwen3(size: str, fp8: bool) -> MoEModelSpec:
    """A dense Qwen3 as the cost model prices it: one expert of the FFN's width, top-1."""
    from gps.model import AttentionSpec

    layers, d, heads, kv, f, _, _ = DENSE_QWEN3[size]
    spec = MoEModelSpec(name=f"Qwen3-{size}", source=f"huggingface.co/Qwen/Qwen3-{size}",
                        num_layers=layers, hidden_size=d,
                        attention=AttentionSpec("gqa", heads, kv, 128), num_experts=1, top_k=1,
                        expert_intermediate_size=f, num_shared_experts=0,
                        shared_expert_intermediate_size=0, dense_intermediate_size=0,
                        vocab_size=151936, dtype="bf16")  # fmt: skip
    if fp8:
        spec = replace(spec, dtypes=TensorDtypes(weights="fp8", activations="bf16",
                                                 attention="bf16", kv_cache="bf16"))  # fmt: skip
    return spec


def dense_speeds(memory_efficiency: float, launch_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(modelled, measured)`` tokens/s of the 12 dense Qwen3 rows with the H20's memory
    efficiency and per-kernel launch cost set to the given values."""
    model, measured = [], []
    for size, row in DENSE_QWEN3.items():
        for fp8 in (False, True):
            cl = h20(1)
            cl = replace(cl, gpu=replace(cl.gpu, memory_efficiency=memory_efficiency,
                                         launch_overhead_s=launch_s))  # fmt: skip
            with np.errstate(divide="ignore"):  # one expert of top-1: every token uses it
                model.append(2049 / request_s(dense_qwen3(size, fp8), cl, 1, 2048, None))
            measured.append(row[6 if fp8 else 5])
    return np.array(model), np.array(measured)


def fit_h20_decode() -> tuple[float, float, np.ndarray]:
    """``(memory_efficiency, launch_s, ratios)``: least squares in log error of the H20's HBM
    efficiency and per-kernel launch cost over the 12 dense Qwen3 rows (``DENSE_QWEN3``),
    with the ratios model/measured speed at the fit."""
    from scipy.optimize import least_squares

    def residual(x: np.ndarray) -> np.ndarray:
        model, measured = dense_speeds(x[0], x[1] * 1e-6)
        return np.log(model) - np.log(measured)

    fit = least_squares(residual, x0=[0.5, 5.0], bounds=([0.05, 0.1], [1.0, 100.0]))
    return float(fit.x[0]), float(fit.x[1] * 1e-6), np.exp(residual(fit.x))


def request_s(spec: MoEModelSpec, cl: Cluster, prompt: int, output: int,
              layout: ParallelConfig | None) -> float:  # fmt: skip
    """Seconds of one request alone on ``cl`` with SGLang: prefill chunks plus decode steps."""
    base = Workload("prefill", 1, 1, attention_parallel="dp" if layout is None else "tp",
                    alltoall="flat")  # fmt: skip
    plan = plan_steps(ServingWorkload(1, prompt, output), engine("sglang"), base)
    pre = step_s(spec, cl, plan.prefill, "sglang", layout)
    dec = step_s(spec, cl, plan.decode, "sglang", layout)
    return plan.round_s(pre, dec)


# The blog's reproduction (github.com/antgroup/sglang/pull/4, 'Deploying DeepSeek-R1 on
# H20-96G with SGLang: Best Practices'): prefill launched with --tp-size 8 --chunked-prefill-size
# 16384 --kv-cache-dtype fp8_e4m3 --attention-backend fa3 --quantization fp8.
ANT_CHUNK = 16384


def ant_rows() -> list[Row]:
    """DeepSeek-R1 prefill on one 8x H20 node, SGLang v0.5.2, TP8 (attention and experts
    tensor parallel), FP8 attention and KV cache: 16.5k input tokens/s per node on 4,096-token
    prompts; a step holds ``ANT_CHUNK`` tokens (the reproduction's chunked-prefill size)."""
    fp8 = replace(load_model_spec("deepseek_v3").dtypes, attention="fp8", kv_cache="fp8")
    spec = deepseek(dtypes=fp8)
    cl = h20(8)
    layout = ParallelConfig("tp8", 1, 8, "tp")
    prompts = ANT_CHUNK // 4096
    wl = Workload("prefill", prompts, 4096, attention_parallel="tp", alltoall="flat")
    return [Row(
        reference=f"{ANT}: prefill headline",
        configuration=("SGLang v0.5.2, DeepSeek-R1 FP8 (DeepSeek-V3 architecture), 1 node x 8 "
                       "H20 96GB, --tp-size 8 (attention and experts tensor parallel), FP8 "
                       "attention (fa3-fp8) and KV cache, bench_serving random 4,096-token "
                       "prompts, 1 output token; a step holds the reproduction's "
                       f"--chunked-prefill-size {ANT_CHUNK:,} = {prompts} prompts "
                       "(github.com/antgroup/sglang/pull/4)"),
        measured_s=1.0 / 16_500,
        model=lambda: per_node(wl.tokens_per_step, step_s(spec, cl, wl, "sglang", layout), 1),
        shown=tok_node,
        missing=("H20-tuned kernels without published kernel timings: the tensor-parallel "
                 "experts (width f/8 = 256, 46% of the modelled step) run Triton fused-MoE "
                 "kernels the blog tuned for H20 (sgl-project/sglang PR #10567: b_scale, TMA "
                 "input access of the down projection, configurations from real expert "
                 "distributions), priced as DeepGEMM's FP8 GEMMs with the K = 256 down GEMM at "
                 "0.28 of peak (the DeepGEMM fit extrapolated below its smallest K = 512); the "
                 "FP8 attention (FlashMLA/fa3 FP8, 42%) at FlashAttention-3's BF16 efficiency "
                 "on the FP8 peak; the QKV de-duplication (reduce-scatter + all-gather) is not "
                 "modelled"),
        step=True,
    )]  # fmt: skip


def mixtral_rows() -> list[Row]:
    """Mixtral-8x7B, TensorRT-LLM, int8 weight-only, one A100 80GB, one request, 512-token
    prompt, 128 new tokens: time to first token 127 ms, 81 tokens/s."""
    spec = load_model_spec("mixtral_8x7b")
    spec = replace(spec, dtype="fp16", dtypes=TensorDtypes(weights="int8", compute="fp16"))
    cl = cluster("a100_sxm4_80gb", "nvlink3", None, 1, 1)
    prefill = Workload("prefill", 1, 512, alltoall="flat")
    decode = Workload("decode", 1, 1, 512 + 64, alltoall="flat")
    setup = ("TensorRT-LLM (Dec 2023), Mixtral-8x7B int8 weight-only (fp16 math), 1x A100 "
             "80GB, batch 1, 512-token prompt")  # fmt: skip
    return [
        Row(f"{BASETEN}: time to first token", f"{setup}, prefill step",
            0.127, lambda: step_s(spec, cl, prefill, "trtllm"),
            lambda s: f"{s * 1e3:,.0f} ms", MIXTRAL_MISSING["ttft"], step=True),
        Row(f"{BASETEN}: decode speed", f"{setup}, decode step at context 576 (mid-generation)",
            1 / 81, lambda: step_s(spec, cl, decode, "trtllm"),
            lambda s: f"{1 / s:,.0f} tok/s", MIXTRAL_MISSING["decode"], step=True),
    ]  # fmt: skip


MIXTRAL_MISSING = {
    "ttft": (
        "client-side time to first token: request handling, tokenisation, scheduling and "
        "network are not modelled; int8 weight-only GEMMs dequantise in the kernel (prefill "
        "below the fp16 roofline)"
    ),
    "decode": (
        "client-perceived streaming rate of one request: per-step runtime overhead (sampling, "
        "scheduling, streaming) and the int8 weight-only GEMV's dequantisation (below the "
        "HBM copy rate the profile's memory efficiency comes from) are not modelled"
    ),
}


def all_rows() -> list[Row]:
    return (deepep_normal_rows() + deepep_ll_rows() + sglang_rows() + qwen_rows() + ant_rows()
            + mixtral_rows())  # fmt: skip


# ---- the 16-GPU DeepSeek-V3 prefill run (issue 25's quality bar) ----------------------------

SIXTEEN_SETUP = ("DeepSeek-V3 FP8 prefill on 2 nodes x 8 H100 (EP16, DP attention, DeepEP normal, "
                 "two-batch overlap, engine sglang), uniform routing")  # fmt: skip


def sixteen_gpu_rows() -> list[list[str]]:
    """The model's DeepSeek-V3 prefill at 16 GPUs, 1k and 16k tokens per GPU: tokens/s per GPU,
    the share of the step imbalance can touch (dispatch, experts and combine, whose busiest
    GPU sets the layer's time, over the serial step), and the published SGLang figure nearest
    that setting: SGLang publishes no 2-node prefill throughput; its 96-GPU blog gives EP32
    (4 nodes) at 16,384 tokens per GPU, and a user's 2-node log in its reproduction issue
    gives one low-load batch of 1,024 tokens per GPU."""
    spec = load_model_spec("deepseek_v3")
    cl = h100(16)
    published = {
        1024: ("1,004 tok/s/GPU: github.com/sgl-project/sglang/issues/6017, a user's 2P2D "
               "prefill log, '#new-token: 1024, gap_latency: 1.020' (one DP rank, not "
               "saturated)"),
        16384: ("7,209 tok/s/GPU: the LMSYS 96-GPU blog's EP32 (4 nodes) prefill, 1K prompts, "
                "16,384 tokens per GPU (57,674 tok/s/node); no 2-node figure is published"),
    }  # fmt: skip
    out = []
    for per_gpu in (1024, 16384):
        wl = Workload("prefill", per_gpu // 1024 * 16, 1024, alltoall="deepep",
                      overlap="two_batch")  # fmt: skip
        cost = batch_cost(spec, cl, wl, engine=engine("sglang"))
        serial = batch_cost(spec, cl, replace(wl, overlap="none"), engine=engine("sglang"))
        moe = sum(float(serial.components[k].sum()) for k in ("dispatch", "experts", "combine"))
        out.append([f"{per_gpu:,}", f"{per_gpu / float(cost.total_s):,.0f}",
                    f"{per_gpu / float(serial.total_s):,.0f}",
                    f"{moe / float(serial.total_s):.0%}", published[per_gpu]])  # fmt: skip
    return out


SIXTEEN_HEADER = [
    "tokens per GPU", "model tok/s/GPU (overlap)", "model tok/s/GPU (serial)",
    "share imbalance can touch", "published SGLang figure nearest this setting",
]  # fmt: skip


# ---- the table ------------------------------------------------------------------------------

HEADER = ["reference", "configuration", "measured", "model", "ratio", "independent",
          "missing mechanism"]  # fmt: skip


@dataclass(frozen=True)
class Summary:
    """Counts over the table: rows, independent rows, whole-step independent rows, and how
    many of each lie within ``BAND``."""

    rows: int
    in_band: int
    independent: int
    independent_in_band: int
    independent_steps: int
    independent_steps_in_band: int

    def lines(self) -> list[str]:
        share = self.independent_in_band / max(self.independent, 1)
        return [
            f"{self.in_band}/{self.rows} rows within {BAND}",
            f"{self.independent_in_band}/{self.independent} independent rows within {BAND} "
            f"({share:.0%})",
            f"{self.independent_steps_in_band}/{self.independent_steps} independent whole-step "
            f"rows within {BAND}",
        ]


def table(rows: list[Row]) -> tuple[list[str], list[list[str]], Summary]:
    body = []
    counts = np.zeros(6, dtype=int)
    for r in rows:
        ratio = r.model_s / r.measured_s
        inside = BAND[0] <= ratio <= BAND[1]
        missing = r.missing() if callable(r.missing) else r.missing
        note = "" if inside else (missing or "UNEXPLAINED")
        independent = "yes" if r.independent else f"no: {r.fitted}"
        body.append([r.reference, r.configuration, r.shown(r.measured_s), r.shown(r.model_s),
                     f"{ratio:.2f}", independent, note])  # fmt: skip
        counts += [1, inside, r.independent, r.independent and inside,
                   r.independent and r.step, r.independent and r.step and inside]  # fmt: skip
    return HEADER, body, Summary(*(int(c) for c in counts))


def markdown(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, body)])


PREAMBLE = """# Validation against published measurements

Generated by `python benchmarks/validate.py --write docs/validation.md`; do not edit by hand.
`ratio` = model time / measured time (throughputs compared as time per token): above 1 the
model is too slow, below 1 too fast. `independent` is `yes` when no constant of the model was
fitted on the row's data, otherwise `no` and the constant (`docs/calibration.md` lists every
fitted constant and its data). Rows outside [0.8, 1.25] name the mechanism the model lacks.
Every measured value is the published number; every assumption about the published setup is
written in its configuration. Rows that ran SGLang's EPLB are priced with moe-gps's own EPLB
simulation (their configuration says how); the others with uniform routing (random or balanced
routing, or no expert parallelism).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the Markdown table to this file")
    parser.add_argument("--fit-ll", action="store_true", help="print the fitted LL fixed cost")
    parser.add_argument("--fit-h20", action="store_true", help="print the fitted H20 constants")
    args = parser.parse_args(argv)
    if args.fit_ll:
        print(f"DEEPEP_LL_FIXED_S = {fit_ll_fixed() * 1e6:.1f}e-6")
        return 0
    if args.fit_h20:
        m, launch, ratios = fit_h20_decode()
        print(f"h20_96gb: efficiency.memory = {m:.3f}, launch_overhead = {launch * 1e6:.1f} us "
              f"(12 dense Qwen3 rows, SGLang 0.4.6.post1, batch 1)")  # fmt: skip
        for (size, fp8), ratio in zip(
            [(s, q) for s in DENSE_QWEN3 for q in ("BF16", "FP8")], ratios, strict=True
        ):
            print(f"  Qwen3-{size:5s} {fp8:5s} model/measured speed {ratio:.3f}")
        return 0
    header, body, summary = table(all_rows())
    text = markdown(header, body)
    sixteen = markdown(SIXTEEN_HEADER, sixteen_gpu_rows())
    print(text)
    print()
    print("\n".join(summary.lines()))
    print()
    print(f"{SIXTEEN_SETUP}:")
    print(sixteen)
    if args.write:
        args.write.write_text(
            PREAMBLE + "\n" + text + "\n\n" + "\n".join(f"- {line}" for line in summary.lines())
            + f"\n\n## DeepSeek-V3 prefill on 16 GPUs\n\n{SIXTEEN_SETUP}.\n\n{sixteen}\n"
        )  # fmt: skip
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
