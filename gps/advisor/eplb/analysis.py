"""One serving pool's EPLB analysis: strategies, curves and verdict (``docs/eplb.md``).

For one pool (a workload: prefill or decode) on a model, cluster and engine, from recorded
per-step expert loads (:class:`~gps.traces.engine_stats.EngineLoadStats`):

1. the pool's loads (``gps.advisor.eplb.loads``);
2. the strategies, each a schedule of plans replayed on the same loads
   (``gps.advisor.eplb.replay``): no balancing (the engines' start layout), static placement
   from the history (``gps.plans.eplb_placement``, ``R`` redundant experts), periodic EPLB
   (window ``W``, interval ``I``), predictive re-planning (the same schedule planned from a
   moe-gps Distribution-Only predictor's forecast) and dispatch-time balancing over replicas;
3. every step priced through the pricing seam (``gps.advisor.eplb.pricing``: the mechanism
   ledger and the engine profile), each periodic rebalance's stall from
   ``gps.plans.rebalance`` with the engine profile's costs, amortised over the interval;
4. the curves: speed-up against redundant experts with their memory price
   (``gps.cost.redundancy``), step time against the interval per window
   (``gps.advisor.eplb.schedules``);
5. the verdict (``gps.advisor.eplb.verdict``).

Shapes: ``S`` evaluation steps, ``H`` history steps, ``L`` MoE layers, ``E`` experts, ``G``
GPUs. Units: seconds, token copies, bytes.
"""

from __future__ import annotations

import math

import numpy as np

import predictors
from gps.advisor.eplb.loads import pool_loads
from gps.advisor.eplb.pricing import StepTimeModel, check_ledger, step_time_model
from gps.advisor.eplb.replay import dispatch_balanced_ratio, load_ratio
from gps.advisor.eplb.schedules import (
    interval_study,
    lag_steps,
    mean_stall,
    periodic_schedule,
    transfer_mode,
)
from gps.advisor.eplb.verdict import STRATEGIES, Priced, choose, describe_tie
from gps.advisor.ledger import Ledger
from gps.config import EplbConfig
from gps.cost._common import num_moe_layers
from gps.cost.e2e import step_setting
from gps.cost.redundancy import (
    kv_capacity_tokens,
    kv_tokens_lost,
    max_concurrency,
    redundant_bytes_per_rank,
    valid_redundant,
)
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.plans.eplb_placement import eplb_placement, trivial_placement
from gps.plans.plan import Plan, expert_weight_bytes
from gps.plans.rebalance import RebalanceCosts
from gps.traces.engine_stats import EngineLoadStats
from gps.traces.fluctuation import FluctuationModel
from gps.workload import Workload


def check_settings(s: EplbConfig) -> None:
    """The ``eplb.*`` keys ``analyse`` reads, checked before any work (``history_fraction``:
    ``pool_loads``; ``predictor_params``: ``predictors.make_predictor``).

    Raises:
        ValueError: naming the key and what it must be.
    """
    # synthetic what-if predictors read the true loads: never a deployable forecast
    on_loads = sorted(
        n
        for n, c in predictors.DISTRIBUTION_PREDICTORS.items()
        if c.input_kind == "loads" and not getattr(c, "synthetic", False)
    )
    rules = [
        ("eplb.windows", list(s.windows), bool(s.windows) and min(s.windows) >= 1,
         "a non-empty list of steps >= 1"),
        ("eplb.intervals", list(s.intervals), bool(s.intervals) and min(s.intervals) >= 1,
         "a non-empty list of steps >= 1"),
        ("eplb.max_redundant_per_gpu", s.max_redundant_per_gpu, s.max_redundant_per_gpu >= 0,
         ">= 0"),
        ("eplb.num_redundant", s.num_redundant, s.num_redundant is None or s.num_redundant >= 0,
         ">= 0 or null"),
        ("eplb.layers_per_chunk", s.layers_per_chunk,
         s.layers_per_chunk is None or s.layers_per_chunk >= 1, ">= 1 or null"),
        ("eplb.predictor", repr(s.predictor), not s.predictor or s.predictor in on_loads,
         f"empty or a Distribution-Only predictor of per-step loads, one of {on_loads}"),
        ("eplb.recorded_tolerance", s.recorded_tolerance, s.recorded_tolerance >= 0.0, ">= 0"),
        ("eplb.memory_fraction", s.memory_fraction, 0.0 < s.memory_fraction <= 1.0, "in (0, 1]"),
        ("eplb.bootstrap", s.bootstrap, s.bootstrap >= 1, ">= 1"),
        ("eplb.block_steps", s.block_steps, s.block_steps >= 1, ">= 1"),
        ("eplb.anchors", s.anchors, s.anchors >= 1, ">= 1"),
    ]  # fmt: skip
    for key, value, ok, want in rules:
        if not ok:
            raise ValueError(f"{key}={value}: must be {want}")


def priced_with(cluster: Cluster, workload: Workload, ledger: Ledger) -> dict:
    """What every strategy's steps were priced with: the engine profile, the all-to-all and
    overlap modes it runs for the pool's phase, the chunked dispatch and attention window."""
    step = step_setting(cluster, workload, ledger.engine, True)[1]
    return {
        "engine": ledger.engine.name,
        "engine_version": ledger.engine.version,
        "alltoall": step.alltoall,
        "overlap": step.overlap,
        "dispatch_chunks": ledger.dispatch_chunks,
        "migration_overlap": ledger.window,
    }


def analyse(
    stats: EngineLoadStats,
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    fluctuation: FluctuationModel,
    settings: EplbConfig,
    ledger: Ledger,
    *,
    seed: int = 0,
) -> dict:
    """One pool's EPLB analysis (module docstring); a JSON-serialisable dict (``docs/eplb.md``,
    ``results.json`` ``eplb.pools.<phase>``).

    Args:
        settings: the ``eplb.*`` config (``gps.config.EplbConfig`` documents each key and its
            default).
        ledger: the run's mechanism switches and engine profile (``ledger.engine``: its
            per-step costs, EPLB defaults and rebalance costs).
        seed: the run's ``seed`` (the fluctuation draws and the bootstrap).

    Raises:
        ValueError: statistics that do not fit the model, an engine without a load balancer,
            an ``R`` the engines refuse, a ledger ``gps-eplb`` cannot price.
    """
    s = settings
    engine = ledger.engine
    if engine.eplb is None:
        raise ValueError(f"engine {engine.name!r} has no EPLB defaults (engine.eplb_* unset)")
    check_settings(s)
    check_ledger(ledger)
    costs = RebalanceCosts.of(engine)
    override = None if s.synchronous is None else not s.synchronous
    asynchronous, transfer = transfer_mode(
        engine, override, f"eplb.synchronous={str(s.synchronous).lower()}"
    )
    sync = not asynchronous
    g, e, lm = cluster.num_gpus, spec.num_experts, num_moe_layers(spec)
    pool = pool_loads(stats, spec, workload, fluctuation, history_fraction=s.history_fraction,
                      recorded_tolerance=s.recorded_tolerance, seed=seed)  # fmt: skip
    loads, history = pool.loads, pool.history
    n_eval, n_hist = loads.shape[0], history.shape[0]
    if s.num_redundant is not None:
        redundant = [s.num_redundant]
    else:
        redundant = valid_redundant(e, g, s.max_redundant_per_gpu)
    if not redundant:
        raise ValueError(
            f"eplb.max_redundant_per_gpu: no valid num_redundant_experts for E={e} on {g} GPUs"
        )
    wbytes = expert_weight_bytes(spec)

    def stall(plans: list[Plan]):
        return mean_stall(plans, wbytes, cluster, costs, synchronous=sync,
                          layers_per_chunk=s.layers_per_chunk)  # fmt: skip

    # no balancing: the engines' start layout with the fewest redundant experts they accept
    # (0 when E divides over the GPUs; DeepSeek-V3 at EP320 needs 64)
    none_r = valid_redundant(e, g, max(s.max_redundant_per_gpu, 1))[0]
    none_plan = trivial_placement(lm, e, g, none_r)
    x_none = load_ratio(none_plan, loads)
    hist_mean = history.mean(axis=0)
    static_plans = {r: eplb_placement(hist_mean, g, r) for r in redundant}
    ratios: dict[tuple[str, int], np.ndarray] = {}
    for r in redundant:
        ratios[("static", r)] = load_ratio(static_plans[r], loads)
        ratios[("dispatch", r)] = (
            dispatch_balanced_ratio(static_plans[r], loads) if r > 0 else ratios[("static", r)]
        )
    top = max(float(x_none.max()), *(float(v.max()) for v in ratios.values()))
    base_model = step_time_model(spec, cluster, workload, ledger, none_plan.slots_per_gpu, top)
    models: dict[int, StepTimeModel] = {
        r: step_time_model(spec, cluster, workload, ledger, (e + r) // g, top) for r in redundant
    }
    t_none = base_model.step_s(x_none)
    step_ref = float(t_none.mean())

    # window x interval curves, at one R (the first valid R > 0 when the curve chooses)
    defaults = engine.eplb
    windows = [w for w in s.windows if w <= n_hist] or [n_hist]
    intervals = sorted({*s.intervals, defaults.interval_steps})
    r_mid = redundant[0] if s.num_redundant is not None else redundant[min(1, len(redundant) - 1)]
    study = interval_study(history, loads, models[r_mid], windows, intervals, num_gpus=g,
                           num_redundant=r_mid, anchors=s.anchors, stall=stall,
                           step_ref_s=step_ref, synchronous=sync)  # fmt: skip
    if study.best is not None:
        w_star, i_star = study.best
    else:
        w_star, i_star = min(defaults.window_steps, n_hist), defaults.interval_steps

    # every strategy at every R, on the same loads
    forecast = None
    if s.predictor:
        model = predictors.make_predictor(s.predictor, **s.predictor_params)
        model.fit(history)
        fc = model.predict_rolling(np.concatenate([history, loads]), start=n_hist)  # [S, L, E]

        def forecast(t: int, fc: np.ndarray = fc) -> np.ndarray:
            return fc[t] * pool.copies_per_step

    priced: dict[tuple[str, int], Priced] = {}
    for r in redundant:
        m = models[r]
        for name in ("static", "dispatch"):
            priced[(name, r)] = Priced(name, r, m.step_s(ratios[(name, r)]))
        # a representative rebalance (history plan -> last window's plan): its lag in steps
        probe = [static_plans[r], eplb_placement(loads[-min(w_star, n_eval) :].mean(0), g, r)]
        lag = lag_steps(stall(probe).lag_s, step_ref, sync)
        for name, fc in (("periodic", None), ("predictive", forecast)):
            if name == "predictive" and fc is None:
                continue
            sched = periodic_schedule(history, loads, w_star, i_star, g, r, forecast=fc,
                                      lag_steps=lag)  # fmt: skip
            plans = list(sched.plans)
            if len(plans) < 2:  # no rebalance in the span: price a representative one
                plans = probe
            st = stall(plans)
            t = m.step_s(sched.ratios(loads))
            priced[(name, r)] = Priced(name, r, t, st.stall_s / i_star, st, lag)

    def summary(p: Priced) -> dict:
        return p.summary(t_none, block=s.block_steps, resamples=s.bootstrap, seed=seed)

    rows = {key: summary(p) for key, p in priced.items()}
    # the redundancy curve with its memory price
    kv_base = kv_capacity_tokens(spec, cluster, workload, none_r, memory_fraction=s.memory_fraction)
    curve_rows = []
    for r in redundant:
        row = {
            "num_redundant_experts": r,
            "hbm_bytes_per_gpu": redundant_bytes_per_rank(spec, g, r),
            "kv_cache_tokens_lost_per_gpu": kv_tokens_lost(spec, g, r),
            "kv_cache_tokens_per_gpu": kv_capacity_tokens(
                spec, cluster, workload, r, memory_fraction=s.memory_fraction
            ),
            "max_concurrency": max_concurrency(
                spec, cluster, workload, r, memory_fraction=s.memory_fraction
            ),
        }
        for name in ("static", "periodic", "dispatch", "predictive"):
            if (name, r) in rows:
                row[name] = rows[(name, r)]["speedup"]
        curve_rows.append(row)
    need = math.ceil(workload.batch_size / g) * workload.kv_len  # the pool's KV tokens per GPU
    fits = {row["num_redundant_experts"] for row in curve_rows
            if row["kv_cache_tokens_per_gpu"] >= need}  # fmt: skip
    none_row = summary(Priced("no_balancing", none_r, t_none))
    candidates = [row for (_, r), row in rows.items() if r in fits] + [none_row]
    verdict, tied = choose(candidates)
    per_strategy = {}
    for name in STRATEGIES[1:]:
        options = [c for c in candidates if c["strategy"] == name]
        if options:
            per_strategy[name] = max(options, key=lambda c: c["speedup"])
    per_strategy["no_balancing"] = none_row
    chosen_r = verdict["num_redundant_experts"]
    periodic_at = ("periodic", chosen_r) if ("periodic", chosen_r) in priced else (
        "periodic", redundant[0])  # fmt: skip
    return {
        "phase": workload.phase,
        "tokens_per_step": workload.tokens_per_step,
        "loads": {
            "source": pool.source,
            "history_steps": n_hist,
            "evaluation_steps": n_eval,
            "copies_per_step": pool.copies_per_step,
            "recorded_copies_per_step": pool.recorded_copies,
            "smoothing_steps": pool.smoothing_steps,
        },
        "verdict": verdict["strategy"],
        "speedup": verdict["speedup"],
        "speedup_ci95": verdict["speedup_ci95"],
        "tie": describe_tie(verdict, tied),
        "num_redundant_experts": chosen_r,
        "window_steps": int(w_star),
        "rebalance_interval_steps": int(i_star),
        "stall_s_per_rebalance": float(priced[periodic_at].stall.stall_s),
        "kv_cache_tokens_lost": float(kv_tokens_lost(spec, g, chosen_r)),
        "imbalance_share_of_step": float(1.0 - base_model.balanced_step_s / t_none.mean()),
        "no_balancing_step_s": float(t_none.mean()),
        "balanced_step_s": base_model.balanced_step_s,
        "engine_s_per_step": base_model.engine_s,
        "priced_with": priced_with(cluster, workload, ledger),
        "strategies": per_strategy,
        "redundancy_curve": curve_rows,
        "interval_curve": {
            "intervals": intervals,
            "rows": [
                {
                    "window_steps": w,
                    "step_s": [float(v) if math.isfinite(v) else None for v in study.step_s[w]],
                    "extrapolated": [bool(v) for v in study.extrapolated[w]],
                }
                for w in windows
            ],
            "num_redundant_experts": r_mid,
            "stall_s_per_rebalance": {str(w): study.stalls[w].stall_s for w in windows},
            "max_measured_age_steps": {str(w): study.measured_ages[w] for w in windows},
        },
        "drift": {
            "horizons_steps": intervals,
            "window_mean_mae": {str(w): study.drift[w] for w in windows},
        },
        "synchronous": sync,
        "transfer_mode": transfer,
        "engine_defaults": defaults.summary(),
        "kv_capacity_tokens_per_gpu_no_balancing": kv_base,
        "kv_tokens_needed_per_gpu": need,
    }
