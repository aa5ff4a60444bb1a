"""The advisor: every strategy on the same held-out batches, a recommendation and guidelines.

``advise(cfg)`` -> the ``results.json`` dict (schema: ``docs/results.md``).
"""

from __future__ import annotations

import math
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gps import cache
from gps.advisor import strategies as st
from gps.advisor.assumptions import (
    Assumptions,
    assumption_ladder,
    from_config,
    load_assumptions,
    price_under,
)
from gps.advisor.data import EvalData, prepare
from gps.advisor.forecast import forecast_results
from gps.advisor.guideline_map import map_results
from gps.advisor.guidelines import frontier, rule
from gps.advisor.paper import SCHEMA_VERSION, paper_figure
from gps.advisor.paper_compare import with_ladder
from gps.advisor.pricing import busiest_layer, summarise
from gps.advisor.published import published_results
from gps.advisor.ties import describe_tie
from gps.cost.memory import memory_breakdown
from gps.cost.parallel import ParallelConfig, resolve_layout
from gps.cost.token_mechanisms import Mechanisms
from gps.hardware import Cluster
from gps.model import MoEModelSpec, moe_layer_indices, spec_for_layers, spec_from_dict
from gps.plans import MIGRATION_SOURCES, REPLICA_MODES
from gps.profiles import load_cluster, load_link
from gps.timing import Phases, show_progress
from gps.traces.synthetic import LoadSeriesConfig
from gps.workload import Workload
from predictors.base import expected_warnings_silenced

# Capacity rules change which experts process a token (drop or reroute): above this fraction of
# token copies changed, a strategy is reported but not recommended (quality cost).
MAX_CHANGED_FRACTION = 0.01
# Strategies within this relative speed-up of the fastest count as tied; the simplest of them
# (fewest changed token copies, then least predictor time) is recommended.
TIE_MARGIN = 0.005


def command_line() -> str | None:
    """The command that reproduces this run, ``gps`` plus the run's overrides; ``None`` when the
    config was not composed by the ``gps`` app (library use, ``gps-tune``, tests)."""
    if not HydraConfig.initialized():
        return None
    return " ".join(["gps", *(shlex.quote(o) for o in HydraConfig.get().overrides.task)])


def check_knobs(cfg: DictConfig) -> None:
    """Reject bad ``strategy.*`` / ``report.*`` values before any work, naming the key."""
    s, r = cfg.strategy, cfg.report
    rules = [
        ("strategy.replica_slots_per_gpu", s.replica_slots_per_gpu >= 0, ">= 0"),
        ("strategy.replan_interval", s.replan_interval >= 1, ">= 1"),
        ("strategy.history_window", s.history_window >= 1, ">= 1"),
        ("strategy.capacity_factors", all(g > 0 for g in s.capacity_factors), "all > 0"),
        ("strategy.ilp_stages", s.ilp_stages in (1, 2), "1 or 2"),
        ("strategy.ilp_time_limit_s", s.ilp_time_limit_s > 0, "> 0"),
        ("strategy.ilp_mip_gap", 0 <= s.ilp_mip_gap < 1, "in [0, 1)"),
        ("strategy.migration_overlap", 0 <= s.migration_overlap <= 1, "in [0, 1]"),
        ("strategy.split", s.split in ("even", "locality"), "even or locality"),
        ("strategy.replicas", s.replicas in REPLICA_MODES, f"one of {list(REPLICA_MODES)}"),
        ("strategy.migration_source", s.migration_source in MIGRATION_SOURCES,
         f"one of {list(MIGRATION_SOURCES)}"),
        ("strategy.horizon", s.horizon >= 1, ">= 1 (steps)"),
        ("report.accuracy_grid", len(r.accuracy_grid) > 0
         and all(0 <= a <= 1 for a in r.accuracy_grid), "non-empty, values in [0, 1]"),
        ("report.overhead_grid_us", len(r.overhead_grid_us) > 0
         and all(o >= 0 for o in r.overhead_grid_us), "non-empty, values >= 0"),
    ]  # fmt: skip
    for key, ok, want in rules:
        if not ok:
            raise ValueError(f"{key}={OmegaConf.select(cfg, key)}: must be {want}")


def recommend(entries: list[dict], baseline: dict) -> dict:
    """Fastest deployable strategy: no oracle, no what-if predictor, no capacity rule that drops
    or reroutes more than ``MAX_CHANGED_FRACTION`` of the token copies. Strategies within
    ``TIE_MARGIN`` of it are reported as a tie (``tie``, and the text's second sentence)."""
    ok = [
        s for s in entries
        if s["family"] != "oracle" and not s["synthetic"]
        and s["dropped_token_fraction"] + s["rerouted_token_fraction"] <= MAX_CHANGED_FRACTION
    ]  # fmt: skip
    top = max(s["speedup_vs_baseline"] for s in ok)
    tied = [s for s in ok if s["speedup_vs_baseline"] >= top / (1.0 + TIE_MARGIN)]
    best = min(tied, key=lambda s: (
        s["dropped_token_fraction"] + s["rerouted_token_fraction"],
        (s["overhead"] or {}).get("seconds_per_batch", 0.0), -s["speedup_vs_baseline"],
    ))  # fmt: skip
    by_family = {}
    for s in ok:
        if s["family"] in ("distribution", "token"):
            cur = by_family.get(s["family"])
            if cur is None or s["speedup_vs_baseline"] > cur["speedup_vs_baseline"]:
                by_family[s["family"]] = s
    oracle = next((s for s in entries if s["family"] == "oracle"), None)
    tie = describe_tie(tied, entries, TIE_MARGIN)
    text = (
        f"Deploy **{best['name']}** ({best['family']}): {best['speedup_vs_baseline']:.3f}x over no "
        f"balancing ({best['e2e_time_s'] * 1e3:.2f} vs {baseline['e2e_time_s'] * 1e3:.2f} ms per "
        f"step), {best['e2e_time_s'] / best['balanced_time_s'] - 1:.1%} above perfect balance."
    )
    if tie:
        text += f" {tie['text']}"
    for fam, label in (("distribution", "Distribution-Only"), ("token", "Token-to-Expert")):
        if fam in by_family and fam != best["family"]:
            s = by_family[fam]
            text += f" Best {label}: {s['name']} {s['speedup_vs_baseline']:.3f}x."
    if oracle:
        text += f" Oracle duplication (perfect knowledge): {oracle['speedup_vs_baseline']:.3f}x."
    changed = [s for s in entries if s["family"] == "capacity" and s not in ok]
    if changed:
        c = max(changed, key=lambda s: s["speedup_vs_baseline"])
        frac = c["dropped_token_fraction"] + c["rerouted_token_fraction"]
        text += (
            f" {c['name']} reaches {c['speedup_vs_baseline']:.3f}x but changes the experts of "
            f"{frac:.1%} of token copies (quality cost; not recommended above "
            f"{MAX_CHANGED_FRACTION:.0%})."
        )
    return {
        "strategy": best["name"],
        "family": best["family"],
        "speedup_vs_baseline": best["speedup_vs_baseline"],
        "tie": tie,
        "text": text,
    }


def mechanisms(strategy: DictConfig) -> Mechanisms:
    """The token-level mechanism switches of ``cfg.strategy`` (``gps.cost.token_mechanisms``)."""
    s = strategy
    link = load_link(s.expert_fetch_link) if s.resident_experts < 1 else None
    return Mechanisms(direct_dispatch=s.direct_dispatch,
                      direct_dispatch_overlap=s.direct_dispatch_overlap,
                      replica_choice=s.replica_choice, prefetch=s.prefetch,
                      resident_experts=s.resident_experts, fetch_link=link)  # fmt: skip


def build(cfg: DictConfig) -> tuple[MoEModelSpec, Cluster, Workload, Any]:
    """``(spec, cluster, workload, trace config)`` of a composed ``gps`` config."""
    cluster = load_cluster(cfg.hardware)
    spec = spec_from_dict(OmegaConf.to_container(cfg.model, resolve=True), origin="model config")
    workload = Workload(**OmegaConf.to_container(cfg.workload, resolve=True))
    return spec, cluster, workload, instantiate(cfg.trace, _convert_="all")


def slots_per_gpu(
    spec: MoEModelSpec, cluster: Cluster, extra: int, ranks: int | None = None
) -> int:
    """``R = ceil(E/ranks) + extra`` expert slots per GPU (``ranks``: expert-parallel ranks,
    default ``G``)."""
    return math.ceil(spec.num_experts / (ranks or cluster.num_gpus)) + extra


def expert_ranks(
    cfg: DictConfig, spec: MoEModelSpec, cluster: Cluster, workload: Workload
) -> np.ndarray | None:
    """``[G]`` expert-parallel rank of every GPU under ``cfg.parallel`` (rank ``(g mod ep*tp)
    // tp``), or ``None`` for pure expert parallelism over all GPUs (one rank per GPU)."""
    layout = ParallelConfig(**OmegaConf.to_container(cfg.parallel, resolve=True))
    ep, tp, _ = resolve_layout(layout, spec, cluster, workload)
    g = cluster.num_gpus
    if ep == g and tp == 1:
        return None
    return (np.arange(g) % (ep * tp)) // tp


def eval_data(cfg: DictConfig, trace_cfg: Any, spec: MoEModelSpec, workload: Workload) -> EvalData:
    """The run's history and held-out batches (``cfg.evaluation``, ``cfg.seed``)."""
    ev = cfg.evaluation
    return prepare(trace_cfg, spec, workload, train_batches=ev.train_batches,
                   test_batches=ev.test_batches, trace_path=ev.trace_path,
                   seed=cfg.seed, sample_tokens=ev.sample_tokens_per_step)  # fmt: skip


_BACKGROUND = ("token:mlp_token", "token:lightgbm_token", "ilp", "capacity_")  # longest first


def advise(cfg: DictConfig) -> dict:
    """Run the configured comparison; return the ``results.json`` dict."""
    spec, cluster, workload, trace_cfg = build(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(trace_cfg, LoadSeriesConfig):
        return forecast_results(cfg, trace_cfg, spec, cluster, config, command_line())

    check_knobs(cfg)
    mech, assume = mechanisms(cfg.strategy), from_config(cfg.assumptions)  # fail before work
    phases = Phases(show_progress(cfg.progress))
    cache.configure_from(cfg)
    s = cfg.strategy
    ranks = expert_ranks(cfg, spec, cluster, workload)
    n_ranks = None if ranks is None else int(ranks.max()) + 1
    slots = slots_per_gpu(spec, cluster, s.replica_slots_per_gpu, n_ranks)
    if cfg.guideline_map.enabled:
        return map_results(cfg, spec, cluster, trace_cfg, mech, slots, config,
                           command_line())  # fmt: skip
    memory = memory_breakdown(spec, cluster, workload, slots_per_gpu=slots)
    ev = cfg.evaluation
    with phases.phase("data"):
        data = eval_data(cfg, trace_cfg, spec, workload)
    coverage = None
    if data.moe_layers is not None:  # a trace of some MoE layers: priced on those layers only
        coverage = {"moe_layers": list(data.moe_layers), "of": len(moe_layer_indices(spec))}
        spec = spec_for_layers(spec, data.moe_layers)
    ctx = st.Context(spec, cluster, workload, data, slots, s.split, s.migration_overlap,
                     s.replicas, s.migration_source, s.horizon, ranks)  # fmt: skip
    params = OmegaConf.to_container(cfg.predictor.params, resolve=True)

    def timed(job):
        t0 = time.perf_counter()
        return job(), time.perf_counter() - t0

    jobs = [
        ("no_balancing", lambda: st.no_balancing(ctx)),
        ("eplb", lambda: st.periodic(ctx, s.replan_interval, s.history_window)),
        *[(f"distribution:{n}", lambda n=n: st.distribution(ctx, n, params.get(n, {})))
          for n in cfg.predictor.distribution],
        *[(f"token:{n}", lambda n=n: st.token(ctx, n, params.get(n, {})))
          for n in cfg.predictor.token],
        ("oracle", lambda: st.oracle(ctx)),
        ("oracle_free_migration", lambda: st.oracle_free_migration(ctx)),
        *[(f"capacity_{m}@{g}", lambda g=g, m=m: st.capacity(ctx, g, m))
          for g in s.capacity_factors for m in ("drop", "reroute")],
        *([("ilp", lambda: st.ilp(ctx, s.ilp_time_limit_s, s.ilp_mip_gap, s.ilp_stages))]
          if s.ilp else []),
    ]  # fmt: skip
    # Two background threads compute the long strategies beside the others, longest first:
    # HiGHS, LightGBM and the capacity rules' numpy sorts release the GIL, and the MLP's
    # scikit-learn loop holds it only between small BLAS calls. Each strategy is computed alone
    # as before, so the numbers do not change (measured fit/predict walls include the sharing).
    offload = sorted((n for n, _ in jobs if n.startswith(_BACKGROUND)),
                     key=lambda n: [n.startswith(p) for p in _BACKGROUND].index(True))  # fmt: skip
    guide = cfg.report.guidelines and any(n.startswith("distribution:") for n, _ in jobs)
    grid = cfg.report.accuracy_grid
    # One warning filter around every thread (catch_warnings is not thread-safe; predictors).
    with expected_warnings_silenced(), ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(timed, dict(jobs)[n]) for n in offload}
        # the what-if frontier's predictions (one pass, cached) need only the data: queued last
        whatif = pool.submit(timed, lambda: st.whatif_runs(ctx, grid, cfg.seed)) if guide else None
        walls = {}  # offloaded jobs' own wall time, not the wait for them

        def done(n, job):  # a queued job the pool has not started runs here instead of waiting
            result, walls[n] = timed(job) if futures[n].cancel() else futures[n].result()
            return result

        steps = [(n, (lambda n=n, job=job: done(n, job)) if n in futures else job)
                 for n, job in jobs]  # fmt: skip
        try:
            routed = [
                st.scaled(job(), data.token_scale)
                for job in phases.items("strategies", steps, len(steps))
            ]
        except BaseException:  # fail now: drop the queued jobs, wait only for running ones
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        phases.timings["strategies"].update(walls)
        runs = None
        if whatif is not None and not whatif.cancel():
            runs, phases.timings["whatif_predictions"] = whatif.result()
    phases.timings["predictors"] = {
        r.name: {"fit": 0.0 if r.wall_s["cached"] else r.wall_s["fit_s"],
                 "predict": 0.0 if r.wall_s["cached"] else r.wall_s["predict_s"],
                 "cached": r.wall_s["cached"]}
        for r in routed if r.predictor is not None
    }  # fmt: skip
    t = workload.tokens_per_step

    def priced(r: st.Routed, under: Assumptions = assume):
        return price_under(r, spec, cluster, workload, data.test_loads,
                           migration_overlap=s.migration_overlap, mechanisms=mech,
                           assumptions=under)  # fmt: skip

    with phases.phase("pricing"):
        baseline_s = float(priced(routed[0]).total_s.mean())
        layer = busiest_layer(routed[0])
        entries = [summarise(r, priced(r), baseline_s, cluster, t, layer) for r in routed]
    results = {
        "schema_version": SCHEMA_VERSION,
        "command": command_line(),
        "config": config,
        "setup": {
            "model": spec.name, "hardware": cluster.name, "gpus": cluster.num_gpus,
            "nodes": cluster.num_nodes, "phase": workload.phase, "tokens_per_step": t,
            "trace": data.source, "train_batches": ev.train_batches,
            "test_batches": ev.test_batches, "slots_per_gpu": slots,
            "simulated_tokens_per_step": data.tokens_per_batch,
            "busiest_layer": layer, "memory_bytes_per_gpu": memory,
            "layer_coverage": coverage,
        },
        "baseline": "no_balancing",
        "strategies": entries,
        "recommendation": recommend(entries, entries[0]),
        "guidelines": None,
        "paper": None,
    }  # fmt: skip
    dist = [e for e in entries if e["family"] == "distribution"]
    if guide:
        with phases.phase("guidelines"):
            best = max(dist, key=lambda e: e["speedup_vs_baseline"])
            if runs is None:  # not started in the background: here, inside this phase
                runs = st.whatif_runs(ctx, grid, cfg.seed)

            def step_time(a: float) -> float:
                model, copies = runs[a]
                routed_a = st.token(ctx, f"whatif@{a:g}", {}, model=model, copies=copies)
                return float(priced(st.scaled(routed_a, data.token_scale)).total_s.mean())

            guide = frontier(step_time, cfg.report.accuracy_grid,
                             [u * 1e-6 for u in cfg.report.overhead_grid_us],
                             routed[0].sim.slot_tokens.shape[-3], baseline_s,
                             best["speedup_vs_baseline"])  # fmt: skip
            guide["distribution_name"] = best["name"]
            setting = (f"{spec.name} on {cluster.name}, {workload.phase} {t:,} tokens/step, "
                       f"{slots} slots/GPU")  # fmt: skip
            guide["rule"] = rule(guide, setting)
            results["guidelines"] = guide
    results["published_predictors"] = published_results(
        spec, cluster.gpu, t, results["guidelines"], baseline_s, routed[0].sim.slot_tokens.shape[-3]
    )
    results["timings_s"] = phases.timings
    if cfg.paper.metric:
        results["paper"] = paper_figure(cfg.paper, results)
        if cfg.paper.metric == "do_vs_t2e":
            real = [r for r in routed if not r.synthetic]
            results["paper"]["assumption_ladder"] = assumption_ladder(
                real, priced, load_assumptions("moe_gps_paper")
            )
            results["paper"]["assumptions"] = assume.name
            results["paper"].update(with_ladder(results["paper"]))
    return results
