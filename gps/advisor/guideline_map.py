"""The guideline map (MoE-GPS's Figure 1 with numbers): which family wins where.

``gps +experiment=guideline_map`` sweeps, in-process on the vectorised cost model:

* **skew** (busiest-expert tokens / mean, ``guideline_map.skews``): the synthetic trace's Zipf
  exponent (``trace.popularity=zipf``, ``trace.zipf_exponent``) set per target by interpolating
  the skew measured on a calibration trace at a grid of exponents (``calibrate_exponents``);
  the skew each cell actually saw is reported beside the target;
* **interconnect** (``guideline_map.link_gbps``): the cluster's intra-node link at that per-GPU,
  per-direction bandwidth (latency and efficiency of the configured link kept);
* **tokens per step** (``guideline_map.tokens``): prefill steps of ``T / min(T, 2048)`` prompts
  of ``min(T, 2048)`` tokens;
* **Token-to-Expert accuracy and overhead** (``guideline_map.accuracies``,
  ``guideline_map.overheads_us``): a what-if predictor (``predictors.whatif``) priced under the
  run's mechanism ledger (``gps.advisor.ledger``): its guesses' histogram plans duplication and
  orders the prefetch of non-resident experts, the post-gate mechanisms are every strategy's,
  and its hits and misses matter only under ``assumptions=moe_gps_paper`` (skip the scatter,
  misses pay a corrective all-to-all); an overhead of ``o`` per MoE layer on the critical
  path adds ``o * L_moe`` to the step (as in ``gps.advisor.guidelines``).

For every (skew, link, tokens) it prices no balancing, the oracle, one real Distribution-Only
predictor (``guideline_map.distribution``) and the what-if Token-to-Expert predictor at every
accuracy on the same held-out batches, and records per (overhead, accuracy) which family wins
and by how much, the crossover accuracy per overhead, and the break-even overhead of the best
swept accuracy (the per-layer overhead at which it ties Distribution-Only).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from gps.advisor import strategies as st
from gps.advisor.assumptions import from_config, price_under
from gps.advisor.data import prepare
from gps.advisor.guidelines import crossover
from gps.advisor.ledger import Ledger
from gps.advisor.paper import SCHEMA_VERSION
from gps.cost._common import num_moe_layers
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.profiles import load_link
from gps.report.guideline_map import no_win_reason
from gps.traces.batching import batch_loads
from gps.traces.synthetic import SyntheticTraceConfig, generate_token_trace
from gps.workload import Workload
from predictors.base import PredictorCost
from predictors.metrics import expert_histogram
from predictors.splits import CopySplit, expected_split
from predictors.whatif import WhatIfTokenPredictor

MAX_PROMPT = 2048  # tokens per prompt of a map step (the default preset's prompt length)
CALIBRATION_EXPONENTS = np.linspace(0.0, 2.1, 8)
CALIBRATION_TOKENS = 8192


def measured_skew(loads: np.ndarray) -> float:
    """Mean over batches and layers of busiest-expert / mean tokens of ``loads [..., E]``."""
    x = np.asarray(loads, dtype=float)
    return float((x.max(axis=-1) / np.maximum(x.mean(axis=-1), 1e-12)).mean())


def calibrate_exponents(
    trace_cfg: SyntheticTraceConfig, spec: MoEModelSpec, skews: Sequence[float], seed: int
) -> np.ndarray:
    """Zipf exponents giving each target skew: the skew of a ``CALIBRATION_TOKENS``-token trace
    (one step) measured at ``CALIBRATION_EXPONENTS`` and interpolated (monotone in the exponent).

    Raises:
        ValueError: a target outside the range the exponent grid reaches.
    """
    got = []
    for s in CALIBRATION_EXPONENTS:
        cfg = zipf_trace(trace_cfg, spec, float(s), CALIBRATION_TOKENS, MAX_PROMPT, seed)
        got.append(measured_skew(batch_loads(generate_token_trace(cfg), CALIBRATION_TOKENS)))
    got = np.maximum.accumulate(np.asarray(got))
    target = np.asarray(skews, dtype=float)
    if target.min() < got[0] or target.max() > got[-1]:
        raise ValueError(
            f"guideline_map.skews={list(skews)}: this trace preset reaches skew "
            f"{got[0]:.2f}-{got[-1]:.2f} over Zipf exponents 0-{CALIBRATION_EXPONENTS[-1]:g}"
        )
    return np.interp(target, got, CALIBRATION_EXPONENTS)


def zipf_trace(
    trace_cfg: SyntheticTraceConfig, spec: MoEModelSpec, exponent: float, tokens: int,
    prompt: int, seed: int,
) -> SyntheticTraceConfig:  # fmt: skip
    """``trace_cfg`` with Zipf popularity of ``exponent`` (no per-layer spread), shaped for
    ``spec``, ``tokens`` tokens in prompts of ``prompt``."""
    return dataclasses.replace(
        trace_cfg, popularity="zipf", zipf_exponent=exponent, layer_skew_spread=0.0,
        num_layers=num_moe_layers(spec), num_experts=spec.num_experts, top_k=spec.top_k,
        num_tokens=tokens, min_sequence_length=prompt, max_sequence_length=prompt, seed=seed,
    )  # fmt: skip


def with_link(cluster: Cluster, gbps: float) -> Cluster:
    """``cluster`` with its intra-node link at ``gbps`` GB/s per GPU and direction."""
    link = dataclasses.replace(cluster.intra_link, name=f"{gbps:g} GB/s", bandwidth=gbps * 1e9,
                               ports_per_gpu=1.0)  # fmt: skip
    return dataclasses.replace(cluster, intra_link=link, name=f"{cluster.name}@{gbps:g}GB/s")


def step_workload(tokens: int) -> Workload:
    """Prefill step of ``tokens`` tokens: prompts of ``min(tokens, MAX_PROMPT)``."""
    s = min(tokens, MAX_PROMPT)
    if tokens % s:
        raise ValueError(f"guideline_map.tokens: {tokens} is not a multiple of {s}")
    return Workload(phase="prefill", batch_size=tokens // s, seq_len=s, context_len=s)


def whatif_token(ctx: st.Context, copies: CopySplit, cost: PredictorCost, name: str) -> st.Routed:
    """A what-if Token-to-Expert strategy from its (expected) ``copies``: duplication planned
    from the guesses' histogram (also its belief for prefetch order), hits and misses recorded
    for the paper's skip-the-scatter assumption (``st.TokenRouting``)."""
    out = st.from_guesses(ctx, copies, name)
    out.cost, out.synthetic = cost, True
    return out


def cell(
    ctx: st.Context, price, accuracies: np.ndarray, overheads_s: np.ndarray, distribution: str,
    wrong: np.ndarray, cost: PredictorCost,
) -> dict[str, Any]:  # fmt: skip
    """One (skew, link, tokens, resident experts) cell: speed-ups ``token [O, A]``,
    ``distribution``, ``oracle`` (the fastest plan sequence of the cell served with perfect
    knowledge, ``strategies.perfect_knowledge``: never behind any of them), and
    ``breakeven_s`` (per-layer overhead at which the best swept accuracy ties DO; negative: it
    loses even at zero overhead). ``price(r) -> [N]`` step seconds; ``wrong [N, L, E]``: the
    accuracy-0 guesses (``expected_split``)."""
    none = st.no_balancing(ctx)
    forecast = st.distribution(ctx, distribution, {})
    true = ctx.data.test_loads
    guesses = [whatif_token(ctx, expected_split(true, wrong, float(a)), cost, f"whatif@{a:g}")
               for a in accuracies]  # fmt: skip
    base = float(price(none).mean())
    do = base / float(price(forecast).mean())
    t2e = np.array([float(price(g).mean()) for g in guesses])
    cands = [st.oracle(ctx), *(st.perfect_knowledge(r, r.name) for r in (none, forecast, *guesses))]
    oracle = base / min(float(price(c).mean()) for c in cands)
    layers = true.shape[1]
    speed = base / (t2e[None, :] + overheads_s[:, None] * layers)  # [O, A]
    return {"token": speed, "distribution": do, "oracle": oracle,
            "breakeven_s": (base / do - t2e.min()) / layers}  # fmt: skip


def guideline_map(
    cfg: DictConfig, spec: MoEModelSpec, cluster: Cluster, trace_cfg: SyntheticTraceConfig,
    ledger: Ledger, slots: int,
) -> dict:  # fmt: skip
    """The ``guideline_map`` block of ``results.json``: ``rows`` (one per skew, link, tokens,
    resident experts, overhead, accuracy; ``gps.report.guideline_map.MAP_COLUMNS``), the axes,
    and ``reason`` (why Token-to-Expert never wins, with numbers, or ``None``). ``ledger``: the
    run's mechanism switches (its ``resident_experts`` replaced by the map's axis, weights
    fetched over ``strategy.expert_fetch_link``); ``slots``: expert slots per GPU."""
    m, s = cfg.guideline_map, cfg.strategy
    assume = from_config(cfg.assumptions)
    acc = np.sort(np.asarray(m.accuracies, dtype=float))
    ov_us = np.sort(np.asarray(m.overheads_us, dtype=float))
    ov = ov_us * 1e-6
    if acc.size == 0 or acc[0] < 0 or acc[-1] > 1 or ov.size == 0 or ov[0] < 0:
        raise ValueError("guideline_map.accuracies in [0, 1] and overheads_us >= 0, non-empty")
    if not m.link_gbps or min(m.link_gbps) <= 0 or not m.tokens or not m.skews:
        raise ValueError("guideline_map.link_gbps (> 0), tokens and skews: non-empty")
    residents = sorted({float(r) for r in m.resident_experts}, reverse=True)
    if not residents or residents[-1] < 0 or residents[0] > 1:
        raise ValueError(f"guideline_map.resident_experts={list(m.resident_experts)}: non-empty, "
                         "values in [0, 1]")  # fmt: skip
    fetch = load_link(s.expert_fetch_link)
    port = "intra" if fetch.name == cluster.intra_link.name else "host"
    exps = calibrate_exponents(trace_cfg, spec, m.skews, cfg.seed)
    rows = []
    jobs = [(sk, x, t) for sk, x in zip(m.skews, exps, strict=True) for t in m.tokens]
    for skew, exponent, tokens in tqdm(jobs, desc="guideline map", file=sys.stderr,
                                       disable=None, leave=False):  # fmt: skip
        w = step_workload(int(tokens))
        tc = zipf_trace(trace_cfg, spec, float(exponent), w.tokens_per_step, w.seq_len, cfg.seed)
        data = prepare(tc, spec, w, train_batches=m.train_batches, test_batches=m.test_batches,
                       seed=cfg.seed)  # fmt: skip
        seen = measured_skew(data.test_loads)
        blind = WhatIfTokenPredictor(accuracy=0.0, seed=cfg.seed).fit(data.fit)
        wrong = expert_histogram(blind.predict(data.test), spec.num_experts, w.tokens_per_step)
        for gbps, resident in itertools.product(m.link_gbps, residents):
            cl = with_link(cluster, float(gbps))
            led = dataclasses.replace(ledger, resident_experts=resident,
                                      fetch_link=fetch if resident < 1 else None,
                                      fetch_port=port)  # fmt: skip
            ctx = st.Context(spec, cl, w, data, slots, led, s.replicas, s.migration_source,
                             s.horizon)  # fmt: skip

            def price(r: st.Routed, cl=cl, w=w, data=data, led=led) -> np.ndarray:
                return price_under(r, spec, cl, w, data.test_loads, ledger=led,
                                   assumptions=assume).total_s  # fmt: skip

            c = cell(ctx, price, acc, ov, m.distribution, wrong, blind.cost())
            for i in range(ov.size):
                cross = crossover(acc, c["token"][i], c["distribution"])
                for j, a in enumerate(acc):
                    t2e, do = float(c["token"][i, j]), float(c["distribution"])
                    rows.append({
                        "skew_target": float(skew), "skew_measured": seen,
                        "link_gbps": float(gbps), "tokens_per_step": int(tokens),
                        "resident_experts": resident,
                        "overhead_us": float(ov_us[i]), "accuracy": float(a),
                        "token_speedup": t2e, "distribution_speedup": do,
                        "oracle_speedup": float(c["oracle"]),
                        "winner": winner(t2e, do),
                        "margin": t2e / do - 1.0, "crossover_accuracy": cross,
                        "breakeven_overhead_us": float(c["breakeven_s"] * 1e6),
                    })  # fmt: skip
    return {
        "axes": {"skews": list(m.skews), "zipf_exponents": exps.tolist(),
                 "link_gbps": list(m.link_gbps), "tokens": list(m.tokens),
                 "resident_experts": residents, "accuracies": acc.tolist(),
                 "overheads_us": ov_us.tolist()},
        "distribution": m.distribution,
        "fetch_link": fetch.name,
        "rows": rows,
        "reason": no_win_reason(rows),
    }  # fmt: skip


# Speed-ups within this relative distance are a tie (the same plan priced twice differs only
# by float rounding; a map cell where every strategy waits for the same weights is a tie, not a
# Distribution-Only win).
MAP_TIE = 1e-6


def winner(token: float, distribution: float) -> str:
    """``token``, ``distribution`` or ``tie`` for two speed-ups of one map point."""
    if abs(token / distribution - 1.0) <= MAP_TIE:
        return "tie"
    return "token" if token > distribution else "distribution"


def map_results(
    cfg: DictConfig, spec: MoEModelSpec, cluster: Cluster, trace_cfg: Any, ledger: Ledger,
    slots: int, config: dict, command: str | None,
) -> dict:  # fmt: skip
    """``results.json`` of a guideline-map run (``strategies`` empty, ``guideline_map`` set)."""
    if not isinstance(trace_cfg, SyntheticTraceConfig):
        raise ValueError("guideline_map needs a synthetic token-trace preset (trace=...)")
    gm = guideline_map(cfg, spec, cluster, trace_cfg, ledger, slots)
    zero = [r for r in gm["rows"] if r["overhead_us"] == min(gm["axes"]["overheads_us"])]
    count = {w: sum(r["winner"] == w for r in zero) for w in ("token", "distribution", "tie")}
    text = (
        f"Guideline map over {len(gm['axes']['skews'])} skews x {len(gm['axes']['link_gbps'])} "
        f"links x {len(gm['axes']['tokens'])} step sizes x "
        f"{len(gm['axes']['resident_experts'])} expert-memory settings: at the lowest overhead "
        f"Token-to-Expert wins {count['token']} of {len(zero)} (cell, accuracy) points against "
        f"distribution:{gm['distribution']}, Distribution-Only {count['distribution']}, and "
        f"{count['tie']} are ties (the same step time)."
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "config": config,
        "setup": {
            "model": spec.name, "hardware": cluster.name, "gpus": cluster.num_gpus,
            "nodes": cluster.num_nodes, "phase": "prefill",
            "tokens_per_step": max(gm["axes"]["tokens"]), "trace": trace_cfg.model or "synthetic",
            "train_batches": cfg.guideline_map.train_batches,
            "test_batches": cfg.guideline_map.test_batches,
        },
        "baseline": "no_balancing",
        "strategies": [],
        "recommendation": {"strategy": None, "family": None, "speedup_vs_baseline": None,
                           "text": text},
        "guidelines": None,
        "paper": None,
        "guideline_map": gm,
    }  # fmt: skip
