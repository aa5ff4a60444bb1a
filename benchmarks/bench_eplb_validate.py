"""Published EPLB on/off measurements beside gps-eplb's pricing: validation rows, nothing fitted.

Each row is a published throughput ratio between two balancing settings on a stated
deployment, and the ratio gps-eplb's machinery gives for the same setting: the loads of
``gps.advisor.eplb.loads`` (the per-batch fluctuation model), the placements and dispatch
rules of ``gps.advisor.eplb.replay`` and the step-time model of the pricing seam
(``gps.advisor.eplb.pricing``: the mechanism ledger and the engine profile). No constant of
the model was fitted on these rows (``docs/calibration.md`` lists the fitted ones).

What the rows cannot take from their sources is stated as an assumption in each row: no
DeepSeek-V3 routing is public, so the aggregate expert proportions ``mu [58, 256]`` are those
of the uncalibrated synthetic preset ``conf/trace/deepseek_like.yaml`` (65,536 tokens,
seeded) and each step's loads are drawn around ``mu`` by the fluctuation model fitted on the
ESFT DeepSeek-V2-Lite routing (``gps.traces.fluctuation.FITTED_RHO["esft"]``: whole requests
share experts). The placement is planned from ``mu`` itself (statistics of the same
distribution: "in-distribution" EPLB), so the residual imbalance is the per-batch
fluctuation's, which EPLB cannot plan away. Beside the model's reading, the same row with
independent tokens (no request correlation) shows how much that assumption carries.

Rows:

* LMSYS, "Deploying DeepSeek with PD Disaggregation and Large-Scale Expert Parallelism on 96
  H100 GPUs" (lmsys.org/blog/2025-05-05-large-scale-ep), prefill EP32 on 4 x 8 H100, 4,096-
  token prompts: 50,302 tok/s/node with default EPLB (32 redundant experts, SGLang's
  instructions, issue #6017) vs 59,337 with simulated perfect EPLB: 1.180x.
* LMSYS, "Improving DeepEP MoE Load Balance in SGLang with Waterfill and LPLB"
  (lmsys.org/blog/2026-06-26-waterfill-lplb), two Hopper nodes (EP16), DeepSeek-V3/R1, with
  redundant EPLB placement (16 or 32 redundant experts): LPLB's per-batch assignment over
  replicas adds +0.84% to +7.34% total throughput (MMLU, GPQA, GSM8K). The model's
  dispatch-time balancing (greedy water-filling, ``dispatch_balanced_ratio``) against the
  same static placement, at prefill chunks of 8,192 tokens per GPU (SGLang's default
  chunked prefill; prompts assumed 512 tokens) and decode batches of 64-256 per GPU (not
  stated by the blog: a range).

Run: ``.venv/bin/python benchmarks/bench_eplb_validate.py`` (about a minute on 2 cores).
Quoted in ``docs/eplb.md``.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
from machine import describe

from gps.advisor.eplb.pricing import step_time_model
from gps.advisor.eplb.replay import dispatch_balanced_ratio, load_ratio
from gps.advisor.ledger import Ledger
from gps.engine import load_engine
from gps.model import load_model_spec
from gps.plans.eplb_placement import eplb_placement
from gps.profiles import load_cluster
from gps.traces.fluctuation import FluctuationModel, fitted_model
from gps.traces.synthetic import generate_token_trace, load_preset
from gps.workload import Workload

STEPS = 24  # evaluation steps drawn per setting
SEED = 0


def h100(gpus: int):
    """``gpus`` H100 SXM in nodes of 8 (NVLink 4 inside, one 400 Gb/s NDR NIC per GPU)."""
    nodes = max(gpus // 8, 1)
    return load_cluster({"name": f"h100_x{gpus}", "gpu": "h100_sxm5_80gb",
                         "intra_node_link": "nvlink4",
                         "inter_node_link": "ib_ndr" if nodes > 1 else None,
                         "num_nodes": nodes, "gpus_per_node": min(gpus, 8)})  # fmt: skip


def deepseek_mu() -> np.ndarray:
    """``[58, 256]`` expert proportions of the synthetic DeepSeek-V3-like preset (seeded)."""
    cfg = dataclasses.replace(load_preset("deepseek_like"), num_tokens=65_536, seed=SEED)
    trace = generate_token_trace(cfg)
    counts = np.stack([np.bincount(trace.experts[:, layer].ravel(), minlength=256)
                       for layer in range(trace.num_layers)]).astype(float)  # fmt: skip
    return counts / counts.sum(axis=-1, keepdims=True)


def step_loads(mu, fluct: FluctuationModel, wl: Workload, top_k: int, seed: int) -> np.ndarray:
    """``[STEPS, L, E]`` copies of the pool's steps around ``mu`` (whole requests of
    ``wl.tokens_per_sequence`` tokens)."""
    copies = wl.tokens_per_step * top_k
    rng = np.random.default_rng(seed)
    return fluct.sample(np.broadcast_to(mu, (STEPS, *mu.shape)), copies, top_k,
                        wl.tokens_per_sequence, rng)  # fmt: skip


def priced_ratio(spec, cl, wl, engine: str, slots: int, x_a, x_b) -> float:
    """Mean step seconds at per-layer ratios ``x_a [S, L]`` over those at ``x_b``."""
    ledger = Ledger(engine=load_engine(engine))
    model = step_time_model(spec, cl, wl, ledger, slots, float(max(x_a.max(), x_b.max())))
    return float(model.step_s(x_a).mean() / model.step_s(x_b).mean())


def perfect_vs_default(mu: np.ndarray) -> list[str]:
    """LMSYS 96-GPU blog, 4K prefill: simulated perfect EPLB over default EPLB."""
    spec, cl = load_model_spec("deepseek_v3"), h100(32)
    wl = Workload("prefill", 4 * 32, 4096, alltoall="deepep", overlap="two_batch")
    plan = eplb_placement(mu, 32, 32)
    measured = 59_337 / 50_302
    cells = []
    for name in ("esft", "independent"):
        loads = step_loads(mu, fitted_model(name), wl, spec.top_k, SEED)
        x = load_ratio(plan, loads)
        ratio = priced_ratio(spec, cl, wl, "sglang", plan.slots_per_gpu, x, np.ones_like(x))
        cells.append(f"{ratio:.3f} (residual max/mean {x.mean():.3f})")
    model = step_time_model(spec, cl, wl, Ledger(engine=load_engine("sglang")),
                            plan.slots_per_gpu, 4.0)  # fmt: skip
    lo, hi = 1.0, 4.0  # the busiest/mean in every layer that gives the measured ratio
    for _ in range(60):
        mid = (lo + hi) / 2
        ratio = float(model.step_s(np.full(58, mid)) / model.balanced_step_s)
        lo, hi = (mid, hi) if ratio < measured else (lo, mid)
    return [
        "LMSYS 96-GPU blog: prefill EP32, 4 x 8 H100, 4,096-token prompts, 16,384 tokens/GPU, "
        "SGLang (DeepEP normal, two-batch overlap), R=32",
        "perfect EPLB / default EPLB",
        f"{measured:.3f} (59,337 / 50,302 tok/s/node; the model needs a busiest/mean of "
        f"{lo:.3f} in every layer to give it)",
        *cells,
    ]


def lplb_over_static(mu: np.ndarray) -> list[str]:
    """LMSYS Waterfill/LPLB blog: per-batch assignment over replicas vs the static split."""
    spec, cl = load_model_spec("deepseek_v3"), h100(16)
    settings = [
        ("prefill", Workload("prefill", 16 * 16, 512, alltoall="deepep")),
        *[(f"decode {b}/GPU", Workload("decode", b * 16, 1, 2048, alltoall="deepep_low_latency"))
          for b in (64, 256)],
    ]  # fmt: skip
    out = {"esft": [], "independent": []}
    for r in (16, 32):
        plan = eplb_placement(mu, 16, r)
        for _, wl in settings:
            for name in out:
                loads = step_loads(mu, fitted_model(name), wl, spec.top_k, SEED + r)
                even, water = load_ratio(plan, loads), dispatch_balanced_ratio(plan, loads)
                gain = priced_ratio(spec, cl, wl, "sglang", plan.slots_per_gpu, even, water)
                out[name].append(gain - 1.0)
    cells = [f"+{min(v):.2%} to +{max(v):.2%}" for v in out.values()]
    return [
        "LMSYS Waterfill/LPLB blog: DeepSeek-V3/R1, 2 x 8 Hopper (EP16), R=16/32; model: "
        "prefill 8,192 tokens/GPU (512-token prompts), decode 64-256/GPU",
        "LPLB (dispatch-time) / static EPLB",
        "+0.84% to +7.34% (MMLU, GPQA, GSM8K)",
        *cells,
    ]


def main() -> int:
    print(describe())
    t0 = time.perf_counter()
    mu = deepseek_mu()
    rows = [perfect_vs_default(mu), lplb_over_static(mu)]
    print(
        "\n| source and setting | ratio | measured | model (fluctuation fitted on ESFT) | "
        "model (independent tokens) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\n({time.perf_counter() - t0:.1f} s; loads around the uncalibrated deepseek_like "
        f"proportions, {STEPS} steps per setting, seed {SEED})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
