"""The advisor: every strategy on the same held-out batches, a recommendation and guidelines.

``advise(cfg)`` -> the ``results.json`` dict (schema: ``docs/results.md``).
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import predictors
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
from gps.advisor.ledger import Ledger
from gps.advisor.paper import SCHEMA_VERSION, paper_figure
from gps.advisor.paper_compare import with_ladder
from gps.advisor.pricing import busiest_layer, summarise
from gps.advisor.published import published_results
from gps.advisor.ties import describe_tie
from gps.advisor.uncertainty import overlaps, speedup_interval, tied_with_leader
from gps.cost.e2e import CostBreakdown
from gps.cost.memory import memory_breakdown
from gps.cost.parallel import ParallelConfig, resolve_layout
from gps.engine import IDEAL, EngineProfile
from gps.hardware import Cluster
from gps.model import MoEModelSpec, moe_layer_indices, spec_for_layers, spec_from_dict
from gps.plans import MIGRATION_SOURCES, REPLICA_MODES
from gps.plans.rebalance import RebalanceCosts
from gps.profiles import load_cluster, load_link
from gps.serving import ServingWorkload, StepPlan, plan_steps
from gps.timing import Phases, show_progress
from gps.traces.synthetic import LoadSeriesConfig
from gps.workload import Workload, WorkloadError
from predictors.base import expected_warnings_silenced
from predictors.metrics import distribution_accuracy

# Capacity rules change which experts process a token (drop or reroute): above this fraction of
# token copies changed, a strategy is reported but not recommended (quality cost).
MAX_CHANGED_FRACTION = 0.01
# Predictor time below this share of the step does not separate tied strategies.
NEGLIGIBLE_SHARE = 1e-3


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
        ("strategy.periodic", set(s.periodic) <= {"eplb", "every_n"},
         "a list of eplb / every_n"),
        ("strategy.eplb_window", s.eplb_window is None or s.eplb_window >= 1, ">= 1 or null"),
        ("strategy.eplb_interval", s.eplb_interval is None or s.eplb_interval >= 1,
         ">= 1 or null"),
        ("strategy.replan_interval", s.replan_interval >= 1, ">= 1"),
        ("strategy.history_window", s.history_window >= 1, ">= 1"),
        ("strategy.capacity_factors", all(g > 0 for g in s.capacity_factors), "all > 0"),
        ("strategy.ilp_stages", s.ilp_stages in (1, 2), "1 or 2"),
        ("strategy.ilp_time_limit_s", s.ilp_time_limit_s > 0, "> 0"),
        ("strategy.ilp_mip_gap", 0 <= s.ilp_mip_gap < 1, "in [0, 1)"),
        ("strategy.migration_overlap", 0 <= s.migration_overlap <= 1, "in [0, 1]"),
        ("strategy.split", s.split in ("even", "locality"), "even or locality"),
        ("strategy.dispatch_chunks", s.dispatch_chunks >= 1, ">= 1"),
        ("strategy.resident_experts", 0 <= s.resident_experts <= 1, "in [0, 1]"),
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


def predictor_share(entry: dict) -> float:
    """A strategy's predictor seconds per batch as a share of its step, ``0`` below
    ``NEGLIGIBLE_SHARE`` (a tie-break should not turn on nanoseconds)."""
    share = (entry["overhead"] or {}).get("seconds_per_batch", 0.0) / entry["e2e_time_s"]
    return share if share >= NEGLIGIBLE_SHARE else 0.0


def recommend(entries: list[dict], baseline: dict) -> dict:
    """Fastest deployable strategy: no oracle, no what-if predictor, no capacity rule that drops
    or reroutes more than ``MAX_CHANGED_FRACTION`` of the token copies. Every deployable
    strategy whose ``speedup_ci95`` overlaps the fastest one's ties with it (``tie``, and the
    text's second sentence); among the tied, the simplest is recommended: fewest changed token
    copies, then no token-level prediction, then least predictor time (``predictor_share``),
    then the highest speed-up. So a Token-to-Expert
    strategy is recommended only when its interval clears every strategy without token-level
    knowledge."""
    ok = [
        s for s in entries
        if s["family"] != "oracle" and not s["synthetic"]
        and s["dropped_token_fraction"] + s["rerouted_token_fraction"] <= MAX_CHANGED_FRACTION
    ]  # fmt: skip
    tied = [ok[i] for i in tied_with_leader([s["speedup_vs_baseline"] for s in ok],
                                            [s["speedup_ci95"] for s in ok])]  # fmt: skip
    best = min(tied, key=lambda s: (
        s["dropped_token_fraction"] + s["rerouted_token_fraction"], s["family"] == "token",
        predictor_share(s), -s["speedup_vs_baseline"],
    ))  # fmt: skip
    if best["family"] == "token":  # token-level knowledge must clear every strategy without it
        clash = [s for s in ok if s["family"] != "token"
                 and overlaps(s["speedup_ci95"], best["speedup_ci95"])]  # fmt: skip
        if clash:
            best = max(clash, key=lambda s: s["speedup_vs_baseline"])
            tied = [*tied, *(s for s in clash if s not in tied)]
    by_family = {}
    for s in ok:
        if s["family"] in ("distribution", "token"):
            cur = by_family.get(s["family"])
            if cur is None or s["speedup_vs_baseline"] > cur["speedup_vs_baseline"]:
                by_family[s["family"]] = s
    oracle = next((s for s in entries if s["name"] == "oracle"), None)
    tie = describe_tie(tied, entries)
    lo, hi = best["speedup_ci95"]
    text = (
        f"Deploy **{best['name']}** ({best['family']}): {best['speedup_vs_baseline']:.3f}x over no "
        f"balancing (95% interval {lo:.3f}-{hi:.3f}x over held-out batches; "
        f"{best['e2e_time_s'] * 1e3:.2f} vs {baseline['e2e_time_s'] * 1e3:.2f} ms per step), "
        f"{best['e2e_time_s'] / best['balanced_time_s'] - 1:.1%} above perfect balance."
    )
    if tie:
        text += f" {tie['text']}"
    for fam, label in (("distribution", "Distribution-Only"), ("token", "Token-to-Expert")):
        if fam in by_family and fam != best["family"]:
            s = by_family[fam]
            text += f" Best {label}: {s['name']} {s['speedup_vs_baseline']:.3f}x."
    if oracle:
        text += (f" Oracle (perfect knowledge of every batch, migration paid): "
                 f"{oracle['speedup_vs_baseline']:.3f}x.")  # fmt: skip
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
        "speedup_ci95": best["speedup_ci95"],
        "tie": tie,
        "text": text,
    }


def engine_of(cfg: DictConfig) -> EngineProfile:
    """The run's serving engine (``cfg.engine``; ``gps.engine``), validated; a config without
    one (older results' configs) runs on the ideal engine."""
    if cfg.get("engine") is None:
        return IDEAL
    return EngineProfile.from_config(OmegaConf.to_container(cfg.engine, resolve=True))


def ledger_of(
    strategy: DictConfig,
    cluster: Cluster,
    engine: EngineProfile = IDEAL,
    parallel: ParallelConfig | None = None,
) -> Ledger:
    """The run's mechanism switches from ``cfg.strategy`` (``gps.advisor.ledger.Ledger``), its
    ``engine`` and its ``parallel`` layout; the fetch link's port is NVLink when it is the
    cluster's intra-node link, else PCIe (host)."""
    s = strategy
    link = load_link(s.expert_fetch_link) if s.resident_experts < 1 else None
    port = "intra" if link is not None and link.name == cluster.intra_link.name else "host"
    return Ledger(replica_choice=s.replica_choice, split=s.split,
                  dispatch_chunks=s.dispatch_chunks, prefetch=s.prefetch,
                  resident_experts=s.resident_experts, fetch_link=link, fetch_port=port,
                  window=s.migration_overlap, engine=engine, parallel=parallel)  # fmt: skip


def build(cfg: DictConfig) -> tuple[MoEModelSpec, Cluster, Workload, Any]:
    """``(spec, cluster, workload, trace config)`` of a composed ``gps`` config.

    With ``cfg.serving`` (a load in a user's terms, ``gps.serving``) the step is the one the
    engine runs for it in ``workload.phase`` (``serving_plan``); otherwise ``cfg.workload``."""
    cluster = load_cluster(cfg.hardware)
    spec = spec_from_dict(OmegaConf.to_container(cfg.model, resolve=True), origin="model config")
    workload = Workload(**OmegaConf.to_container(cfg.workload, resolve=True))
    plan = serving_plan(cfg, workload)
    if plan is not None:
        step = plan.prefill if workload.phase == "prefill" else plan.decode
        if step is None:
            raise WorkloadError("serving.output_len=1: no decode step to price (workload=decode)")
        workload = step
    return spec, cluster, workload, instantiate(cfg.trace, _convert_="all")


def serving_summary(cfg: DictConfig, workload: Workload) -> dict | None:
    """``results.json`` ``setup.serving``: the load as given and the steps of one round."""
    plan = serving_plan(cfg, workload)
    if plan is None:
        return None
    return {
        **OmegaConf.to_container(cfg.serving, resolve=True),
        "running_requests": plan.running,
        "prefill_steps_per_round": plan.prefill_steps,
        "prefill_step": {"batch_size": plan.prefill.batch_size, "seq_len": plan.prefill.seq_len},
        "decode_steps_per_round": plan.decode_steps,
        "decode_batch": None if plan.decode is None else plan.decode.batch_size,
    }


def serving_plan(cfg: DictConfig, workload: Workload) -> StepPlan | None:
    """The engine's steps for ``cfg.serving`` (``None`` without one)."""
    if cfg.get("serving") is None or cfg.serving.get("concurrency") is None:
        return None
    serving = ServingWorkload(**OmegaConf.to_container(cfg.serving, resolve=True))
    return plan_steps(serving, engine_of(cfg), workload)


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
    layout, tp = run_layout(cfg, spec, cluster, workload)
    if layout is None:
        return None
    ep = resolve_layout(layout, spec, cluster, workload)[0]
    return (np.arange(cluster.num_gpus) % (ep * tp)) // tp


def run_layout(
    cfg: DictConfig, spec: MoEModelSpec, cluster: Cluster, workload: Workload
) -> tuple[ParallelConfig | None, int]:
    """``(layout, tp)``: ``cfg.parallel`` checked, or ``None`` under pure expert parallelism
    over all GPUs (``ep = G``, ``tp = 1``), and its expert tensor-parallel degree."""
    if cfg.get("parallel") is None:
        return None, 1
    layout = ParallelConfig(**OmegaConf.to_container(cfg.parallel, resolve=True))
    ep, tp, _ = resolve_layout(layout, spec, cluster, workload)
    if ep == cluster.num_gpus and tp == 1:
        return None, 1
    return layout, tp


def eval_data(
    cfg: DictConfig, trace_cfg: Any, spec: MoEModelSpec, workload: Workload, seed: int | None = None
) -> EvalData:
    """The run's history and held-out batches (``cfg.evaluation``; ``seed``, default
    ``cfg.seed``)."""
    ev = cfg.evaluation
    return prepare(trace_cfg, spec, workload, train_batches=ev.train_batches,
                   test_batches=ev.test_batches, trace_path=ev.trace_path,
                   seed=cfg.seed if seed is None else seed,
                   sample_tokens=ev.sample_tokens_per_step,
                   fluctuation=str(cfg.eplb.fluctuation))  # fmt: skip


def run_seeds(cfg: DictConfig) -> list[int]:
    """The seeds a run is measured on: ``evaluation.seeds`` (distinct integers, the trace
    regenerated and every strategy re-run for each; a trace file has nothing to regenerate),
    else ``[seed]``."""
    seeds = cfg.evaluation.seeds
    if seeds is None:
        return [int(cfg.seed)]
    seeds = [int(x) for x in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"evaluation.seeds={seeds}: must be a non-empty list of distinct ints")
    if cfg.evaluation.trace_path:
        raise ValueError(
            "evaluation.seeds: a trace file (evaluation.trace_path) is fixed routing; seeds "
            "regenerate synthetic traces only -- drop evaluation.seeds"
        )
    return seeds


_BACKGROUND = ("token:mlp_token", "token:lightgbm_token", "ilp", "capacity_")  # longest first


@dataclass
class SeedRun:
    """One seed's strategies, priced (``advise`` pools several seeds' runs).

    Attributes:
        seed: the run's seed (trace generation, what-if draws).
        spec: the model as priced (only the MoE layers a trace file covers, when it covers
            a subset: ``gps.model.spec_for_layers``).
        data, ctx: the held-out data and the strategies' context.
        routed: every strategy in report order (``oracle`` and ``oracle_free_migration`` built
            from the others, ``gps.advisor.strategies``).
        costs: name -> ``CostBreakdown`` over the ``N`` held-out batches.
        whatif: accuracy -> mean step seconds of the what-if Token-to-Expert predictor (the
            guideline frontier), empty without guidelines.
        walls: offloaded strategies' own wall seconds; ``whatif_s``: the what-if predictions'.
    """

    seed: int
    spec: MoEModelSpec
    data: EvalData
    ctx: st.Context
    routed: list[st.Routed]
    costs: dict[str, CostBreakdown]
    whatif: dict[float, float]
    walls: dict[str, float]
    whatif_s: float | None


def eplb_cadence(strategy: DictConfig, engine: EngineProfile) -> st.EplbCadence | None:
    """How the ``eplb`` periodic strategy runs: ``strategy.eplb_window`` / ``eplb_interval`` /
    ``eplb_async``, each ``None`` taking the engine profile's default (``engine.eplb_*``), with
    the engine's rebalance costs; ``None`` when the engine has no load balancer of that kind
    (TensorRT-LLM's re-plans continuously: ``eplb`` is then not priced, and
    ``setup.eplb_cadence`` says why)."""
    d = engine.eplb
    if d is None:
        return None
    s = strategy
    return st.EplbCadence(
        window=d.window_steps if s.eplb_window is None else int(s.eplb_window),
        interval=d.interval_steps if s.eplb_interval is None else int(s.eplb_interval),
        asynchronous=d.asynchronous if s.eplb_async is None else bool(s.eplb_async),
        costs=RebalanceCosts.of(engine),
    )


def cadence_summary(strategy: DictConfig, engine: EngineProfile) -> dict:
    """``results.json`` ``setup.eplb_cadence``: the ``eplb`` strategy's window, interval,
    transfer mode and rebalance costs, or why it was not priced."""
    if "eplb" not in strategy.periodic:
        return {"priced": False, "reason": "strategy.periodic does not list eplb"}
    c = eplb_cadence(strategy, engine)
    if c is None:
        why = engine.sources.get("eplb_window_steps", "")
        reason = f"engine {engine.name!r} has no EPLB window/interval ({why})"
        return {"priced": False, "reason": reason}
    return {"priced": True, "window_steps": c.window, "interval_steps": c.interval,
            "asynchronous": c.asynchronous, "cpu_s": c.costs.cpu_s,
            "per_layer_s": c.costs.per_layer_s,
            "async_exposed_fraction": c.costs.async_exposed_fraction,
            "engine": c.costs.engine}  # fmt: skip


def strategy_jobs(cfg: DictConfig, ctx: st.Context) -> list[tuple[str, Any]]:
    """``(name, job)`` of every configured strategy, in report order (the oracle family last
    but capacity and ILP: its entries are built from the others). Aggregate statistics
    (``EvalData.has_tokens`` false) run no strategy that needs tokens: Token-to-Expert
    predictors, token-id Distribution-Only predictors, capacity rules, the ILP."""
    s = cfg.strategy
    tokens = ctx.data.has_tokens
    params = OmegaConf.to_container(cfg.predictor.params, resolve=True)
    cadence = eplb_cadence(s, ctx.ledger.engine)
    return [
        ("no_balancing", lambda: st.no_balancing(ctx)),
        *[(f"static_eplb_r{r}", lambda r=r: st.static_eplb(ctx, r))
          for r in (st.eplb_redundant(ctx) if s.static_eplb else [])],
        *([("eplb", lambda: st.engine_eplb(ctx, cadence))]
          if "eplb" in s.periodic and cadence is not None else []),
        *([("eplb_every_n", lambda: st.periodic(ctx, s.replan_interval, s.history_window))]
          if "every_n" in s.periodic else []),
        *[(f"distribution:{n}", lambda n=n: st.distribution(ctx, n, params.get(n, {})))
          for n in cfg.predictor.distribution if tokens or not needs_tokens(n)],
        *[(f"token:{n}", lambda n=n: st.token(ctx, n, params.get(n, {})))
          for n in (cfg.predictor.token if tokens else [])],
        ("oracle", lambda: st.oracle(ctx)),
        *[(f"capacity_{m}@{g}", lambda g=g, m=m: st.capacity(ctx, g, m))
          for g in (s.capacity_factors if tokens else []) for m in ("drop", "reroute")],
        *([("ilp", lambda: st.ilp(ctx, s.ilp_time_limit_s, s.ilp_mip_gap, s.ilp_stages))]
          if s.ilp and tokens else []),
    ]  # fmt: skip


def needs_tokens(predictor: str) -> bool:
    """Whether a Distribution-Only predictor reads token ids (``input_kind == "tokens"``):
    it cannot run on aggregate statistics."""
    cls = predictors.PREDICTORS.get(predictor)
    return cls is not None and cls.input_kind == "tokens"


def covered(cost: CostBreakdown, data: EvalData) -> CostBreakdown:
    """``cost`` as a run prices it: a trace covering some of the model's MoE layers is priced
    on those layers alone (``CostBreakdown.layers_only``: no once-per-step parts, so the
    speed-up is the covered layers', not a blend with whole-step costs)."""
    return cost if data.moe_layers is None else cost.layers_only()


def run_seed(cfg: DictConfig, seed: int, setup: tuple, phases: Phases, guide: bool) -> SeedRun:
    """Every strategy on one seed's held-out batches, priced under the run's ledger and
    assumptions; the oracle entries built by construction (``gps.advisor.strategies``)."""
    spec, cluster, workload, trace_cfg, ledger, assume, slots, ranks = setup
    s = cfg.strategy
    with phases.phase("data"):
        data = eval_data(cfg, trace_cfg, spec, workload, seed)
    if data.moe_layers is not None:  # a trace of some MoE layers: priced on those layers only
        spec = spec_for_layers(spec, data.moe_layers)
    tp = 1 if ledger.parallel is None else ledger.parallel.tp
    ctx = st.Context(spec, cluster, workload, data, slots, ledger, s.replicas,
                     s.migration_source, s.horizon, ranks, tp)  # fmt: skip
    jobs = strategy_jobs(cfg, ctx)
    guide = guide and data.has_tokens  # the what-if frontier guesses tokens

    def timed(job):
        t0 = time.perf_counter()
        return job(), time.perf_counter() - t0

    # Two background threads compute the long strategies beside the others, longest first:
    # HiGHS, LightGBM and the capacity rules' numpy sorts release the GIL, and the MLP's
    # scikit-learn loop holds it only between small BLAS calls. Each strategy is computed alone
    # as before, so the numbers do not change (measured fit/predict walls include the sharing).
    offload = sorted((n for n, _ in jobs if n.startswith(_BACKGROUND)),
                     key=lambda n: [n.startswith(p) for p in _BACKGROUND].index(True))  # fmt: skip
    grid = cfg.report.accuracy_grid
    whatif_s = None
    # One warning filter around every thread (catch_warnings is not thread-safe; predictors).
    with expected_warnings_silenced(), ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(timed, dict(jobs)[n]) for n in offload}
        # the what-if frontier's predictions (one pass, cached) need only the data: queued last
        whatif = pool.submit(timed, lambda: st.whatif_runs(ctx, grid, seed)) if guide else None
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
        runs = None
        if whatif is not None and not whatif.cancel():
            runs, whatif_s = whatif.result()

    def priced(r: st.Routed) -> CostBreakdown:
        return covered(price_under(r, spec, cluster, workload, data.test_loads, ledger=ledger,
                                   assumptions=assume), data)  # fmt: skip

    with phases.phase("pricing"):
        costs = {r.name: priced(r) for r in routed}
        # the oracle: the fastest plan sequence any deployable strategy (or its own lookahead
        # planning) served, with perfect knowledge: never behind any of them by construction
        own = next(r for r in routed if r.name == "oracle")
        followed = [
            st.perfect_knowledge(r, f"oracle<-{r.name}")
            for r in routed
            if r.family in st.FOLLOWABLE and r.family != "oracle" and not r.synthetic
        ]
        cands = [own, *followed]
        totals = np.stack([costs["oracle"].total_s, *(priced(c).total_s for c in followed)])
        oracle = st.fastest(cands, totals, "oracle")
        oracle.accuracy = distribution_accuracy(data.test_loads, data.test_loads)
        costs["oracle"] = priced(oracle)
    whatif_routed: dict[float, st.Routed] = {}
    if runs is not None:
        with phases.phase("guidelines"):
            for a, (model, copies) in runs.items():
                whatif_routed[a] = st.scaled(
                    st.token(ctx, f"whatif@{a:g}", {}, model=model, copies=copies),
                    data.token_scale,
                )  # fmt: skip
    with phases.phase("pricing"):
        # the ceiling: batch by batch the fastest plan anyone served (what-if predictors
        # included) or the actual load's best plan, with perfect knowledge and free copies
        everyone = [oracle if r.name == "oracle" else r for r in routed]
        free = st.free_migration_candidates(ctx, [*everyone, *whatif_routed.values()])
        free_costs = [priced(c) for c in free]
        ceiling = st.per_batch_fastest(free, np.stack([c.total_s for c in free_costs]),
                                       "oracle_free_migration")  # fmt: skip
        ceiling.accuracy = dict(oracle.accuracy)
        costs["oracle_free_migration"] = priced(ceiling)
        whatif_times = {a: float(priced(r).total_s.mean()) for a, r in whatif_routed.items()}
    final = []
    for r in routed:
        final.append(oracle if r.name == "oracle" else r)
        if r.name == "oracle":
            final.append(ceiling)
    return SeedRun(seed, spec, data, ctx, final, costs, whatif_times, walls, whatif_s)


def pooled_entry(entry: dict, runs: list[SeedRun], baseline: str, seed: int) -> dict:
    """``entry`` (the first seed's) with its times pooled over every seed's held-out batches
    and ``speedup_ci95`` (``gps.advisor.uncertainty``: paired bootstrap over seeds and
    batches)."""
    name = entry["name"]
    base = np.stack([r.costs[baseline].total_s for r in runs])  # [S, N]
    mine = np.stack([r.costs[name].total_s for r in runs])
    bal = np.stack([r.costs[name].balanced_total_s for r in runs])
    out = dict(entry, seeds=[r.seed for r in runs])
    if len(runs) > 1:
        e2e = float(mine.mean())
        out.update(e2e_time_s=e2e, tokens_per_s=entry["tokens_per_s"] * entry["e2e_time_s"] / e2e,
                   speedup_vs_baseline=float(base.mean() / e2e),
                   balanced_time_s=float(bal.mean()),
                   straggler_s=float((mine - bal).mean()))  # fmt: skip
    out["speedup_ci95"] = list(speedup_interval(base, mine, seed=seed))
    return out


def advise(cfg: DictConfig) -> dict:
    """Run the configured comparison; return the ``results.json`` dict."""
    spec, cluster, workload, trace_cfg = build(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(trace_cfg, LoadSeriesConfig):
        return forecast_results(cfg, trace_cfg, spec, cluster, config, command_line())

    check_knobs(cfg)
    engine = engine_of(cfg)
    layout, expert_tp = run_layout(cfg, spec, cluster, workload)
    ledger = ledger_of(cfg.strategy, cluster, engine, layout)
    assume = from_config(cfg.assumptions)
    phases = Phases(show_progress(cfg.progress))
    cache.configure_from(cfg)
    s, ev = cfg.strategy, cfg.evaluation
    ranks = expert_ranks(cfg, spec, cluster, workload)
    n_ranks = None if ranks is None else int(ranks.max()) + 1
    slots = slots_per_gpu(spec, cluster, s.replica_slots_per_gpu, n_ranks)
    if cfg.guideline_map.enabled:
        return map_results(cfg, spec, cluster, trace_cfg, ledger, slots, config,
                           command_line())  # fmt: skip
    spec_tp = dataclasses.replace(
        spec, expert_intermediate_size=spec.expert_intermediate_size // expert_tp
    )  # each GPU of a tensor-parallel rank holds 1/tp of every expert
    memory = memory_breakdown(spec_tp, cluster, workload, slots_per_gpu=slots)
    seeds = run_seeds(cfg)
    guide = cfg.report.guidelines and bool(cfg.predictor.distribution)
    setup = (spec, cluster, workload, trace_cfg, ledger, assume, slots, ranks)
    runs = [run_seed(cfg, seed, setup, phases, guide) for seed in seeds]
    first = runs[0]
    phases.timings["strategies"].update(first.walls)
    if first.whatif_s is not None:
        phases.timings["whatif_predictions"] = first.whatif_s
    routed, data, spec = first.routed, first.data, first.spec
    coverage = None
    if data.moe_layers is not None:
        full = len(moe_layer_indices(build(cfg)[0]))
        coverage = {"moe_layers": list(data.moe_layers), "of": full}
    phases.timings["predictors"] = {
        r.name: {"fit": 0.0 if r.wall_s["cached"] else r.wall_s["fit_s"],
                 "predict": 0.0 if r.wall_s["cached"] else r.wall_s["predict_s"],
                 "cached": r.wall_s["cached"]}
        for r in routed if r.predictor is not None
    }  # fmt: skip
    t = workload.tokens_per_step
    baseline_s = float(np.mean([r.costs["no_balancing"].total_s.mean() for r in runs]))
    layer = busiest_layer(routed[0])
    entries = [
        pooled_entry(summarise(r, first.costs[r.name], float(first.costs["no_balancing"]
                                                             .total_s.mean()), cluster, t, layer),
                     runs, "no_balancing", cfg.seed)
        for r in routed
    ]  # fmt: skip
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
            "busiest_layer": layer, "memory_bytes_per_gpu": memory, "seeds": seeds,
            "layer_coverage": coverage,
            "loads": data.loads,
            "engine": engine.summary(),
            "eplb_cadence": cadence_summary(cfg.strategy, engine),
            "serving": serving_summary(cfg, workload),
            "mechanisms": {**{f.name: getattr(ledger, f.name)
                              for f in dataclasses.fields(ledger)
                              if f.name not in ("fetch_link", "engine", "parallel")},
                           "fetch_link": getattr(ledger.fetch_link, "name", None)},
        },
        "baseline": "no_balancing",
        "strategies": entries,
        "recommendation": recommend(entries, entries[0]),
        "guidelines": None,
        "paper": None,
    }  # fmt: skip
    dist = [e for e in entries if e["family"] == "distribution"]
    if guide and first.whatif:
        best = max(dist, key=lambda e: e["speedup_vs_baseline"])
        guide_out = frontier(lambda a: first.whatif[a], cfg.report.accuracy_grid,
                             [u * 1e-6 for u in cfg.report.overhead_grid_us],
                             routed[0].sim.slot_tokens.shape[-3], baseline_s,
                             best["speedup_vs_baseline"])  # fmt: skip
        guide_out["distribution_name"] = best["name"]
        setting = (f"{spec.name} on {cluster.name}, {workload.phase} {t:,} tokens/step, "
                   f"{slots} slots/GPU")  # fmt: skip
        guide_out["rule"] = rule(guide_out, setting)
        results["guidelines"] = guide_out
    results["published_predictors"] = published_results(
        spec, cluster.gpu, t, results["guidelines"], baseline_s, routed[0].sim.slot_tokens.shape[-3]
    )
    results["timings_s"] = phases.timings
    if cfg.paper.metric:
        results["paper"] = paper_figure(cfg.paper, results)
        if cfg.paper.metric == "do_vs_t2e":
            real = [r for r in routed if not r.synthetic]

            def priced(r: st.Routed, under: Assumptions) -> CostBreakdown:
                return covered(price_under(r, spec, cluster, workload, data.test_loads,
                                           ledger=ledger, assumptions=under), data)  # fmt: skip

            results["paper"]["assumption_ladder"] = assumption_ladder(
                real, priced, load_assumptions("moe_gps_paper")
            )
            results["paper"]["assumptions"] = assume.name
            results["paper"].update(with_ladder(results["paper"]))
    return results
