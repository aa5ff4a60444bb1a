"""The strategies the advisor compares, each turned into what the cost model prices.

A strategy yields a :class:`Routed`: for every held-out batch the ``SimResult`` of the *actual*
routing replayed against the plan the strategy chose (from its prediction, history or a
static rule), plus the replica migration, predictor overhead and accuracy it implies.
Keeping the plan (from the prediction) apart from the simulation (the truth) is what makes a
wrong prediction pay its real price.

Shapes: ``N`` held-out batches, ``L`` MoE layers, ``E`` experts, ``G`` GPUs, ``R`` slots per
GPU, ``T`` tokens per batch, ``k`` top-k.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

import predictors
from gps import cache
from gps.advisor.data import EvalData
from gps.cost.e2e import batch_cost
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.plans import (
    Plan,
    capacity_drop,
    capacity_reroute,
    expert_weight_bytes,
    ilp_placement,
    migration_bytes_per_gpu,
    plan_duplication,
    static_placement,
    transition_counts,
)
from gps.simulate import SimResult, simulate_loads, simulate_tokens
from gps.workload import Workload
from predictors.base import PredictorCost, TokenPredictor
from predictors.metrics import (
    distribution_accuracy,
    exact_set_accuracy,
    expert_histogram,
    topk_hit_rate,
)
from predictors.whatif import WhatIfTokenPredictor


@dataclass
class Routed:
    """One strategy's held-out batches, ready to price.

    Attributes:
        name: strategy name in reports (``distribution:ewma``, ``no_balancing``, ...).
        family: ``baseline``, ``periodic``, ``distribution``, ``token``, ``oracle``,
            ``capacity`` or ``ilp``.
        sim: ``SimResult`` with leading ``[N]``: ``slot_tokens [N, L, G, R]``,
            ``traffic_bytes [N, L, G, G]``, ``dropped``/``rerouted``/``routed`` ``[N, L]``.
        migration_bytes: ``[N, L]`` expert-weight bytes the busiest GPU receives per layer.
        cost: the predictor's ``PredictorCost`` (``None``: no predictor).
        predictor: predictor registry name, if any.
        synthetic: a what-if predictor (labelled in reports).
        accuracy: metric name -> value on the held-out batches.
        wall_s: measured ``fit_s``/``predict_s`` seconds on this machine (when the predictor
            was computed, possibly by an earlier run: ``cached`` says so).
        notes: planner diagnostics (ILP method and gap, ...).
    """

    name: str
    family: str
    sim: SimResult
    migration_bytes: np.ndarray
    cost: PredictorCost | None = None
    predictor: str | None = None
    synthetic: bool = False
    accuracy: dict = field(default_factory=dict)
    wall_s: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What every strategy needs: the model, cluster, step, slots and the data."""

    spec: MoEModelSpec
    cluster: Cluster
    workload: Workload
    data: EvalData
    slots_per_gpu: int
    split: str
    migration_overlap: float

    @property
    def static(self) -> Plan:
        """Contiguous placement, one copy per expert, the same in every layer."""
        d = self.data
        return static_placement(d.test.num_layers, d.test.num_experts, self.cluster.num_gpus,
                                self.slots_per_gpu)  # fmt: skip

    def plan(self, load: np.ndarray, previous: Plan | None) -> Plan:
        """Duplication plan for one batch's predicted ``[L, E]`` load."""
        return plan_duplication(load, self.cluster.num_gpus, self.slots_per_gpu, previous=previous,
                                gpus_per_node=self.cluster.gpus_per_node)  # fmt: skip

    def simulate(self, plan: Plan, loads: np.ndarray) -> SimResult:
        return simulate_loads(plan, loads, spec=self.spec, split=self.split,
                              gpus_per_node=self.cluster.gpus_per_node)  # fmt: skip

    def cheapest(self, candidates: list[Plan], load: np.ndarray, previous: Plan | None) -> Plan:
        """The candidate whose step, priced on the *predicted* ``[L, E]`` load plus the exposed
        expert-weight migration from ``previous`` (none when ``None``), is shortest."""
        sims = [self.simulate(p, load) for p in candidates]
        wbytes = expert_weight_bytes(self.spec)
        mig = [
            np.zeros(load.shape[0]) if previous is None
            else migration_bytes_per_gpu(previous, p, wbytes).max(axis=1)
            for p in candidates
        ]  # fmt: skip
        cost = batch_cost(
            self.spec, self.cluster, self.workload,
            np.stack([s.slot_tokens for s in sims]), np.stack([s.traffic_bytes for s in sims]),
            migration_bytes=np.stack(mig), migration_overlap=self.migration_overlap,
        )  # fmt: skip
        return candidates[int(np.argmin(cost.total_s))]

    def replan(self, previous: Plan, load: np.ndarray) -> Plan:
        """Migration-aware re-planning from a predicted ``[L, E]`` load: keep ``previous``,
        switch to a new duplication plan, or fall back to static placement, whichever is
        cheapest on that load once the replica copies it needs are paid
        (``cheapest``). Replicas are not free: each busy slot streams its expert's weights."""
        return self.cheapest([previous, self.plan(load, previous), self.static], load, previous)

    def start(self) -> Plan:
        """The plan in place before the first held-out batch, the same for every dynamic
        strategy: static or the duplication plan of the last training batch's actual load,
        whichever is cheaper on that load (steady state: no migration charged)."""
        last = self.data.train_loads[-1]
        return self.cheapest([self.static, self.plan(last, None)], last, None)


def _stack(results: list[SimResult]) -> SimResult:
    """``N`` per-batch results -> one with leading ``[N]``."""
    first = results[0]
    return SimResult(**{
        name: (np.stack([getattr(r, name) for r in results]) if name != "token_bytes"
               else first.token_bytes)
        for name in first.__dataclass_fields__
    })  # fmt: skip


def replay(ctx: Context, plans: list[Plan], start: Plan, name: str, family: str) -> Routed:
    """Price-ready result of ``plans[n]`` serving held-out batch ``n``; migration counted from
    ``start`` (the plan in place before the first held-out batch)."""
    actual = ctx.data.test_loads
    sims = [ctx.simulate(p, actual[n]) for n, p in enumerate(plans)]
    wbytes = expert_weight_bytes(ctx.spec)
    prev = [start, *plans[:-1]]
    mig = np.stack(
        [
            migration_bytes_per_gpu(a, b, wbytes).max(axis=1)
            for a, b in zip(prev, plans, strict=True)
        ]
    )
    return Routed(name, family, _stack(sims), mig)


def planned(ctx: Context, predicted: np.ndarray, name: str, family: str) -> Routed:
    """Before every held-out batch, re-plan from its predicted ``[N, L, E]`` load when that
    pays (``Context.replan``), starting from ``Context.start`` (the same for every strategy)."""
    start = ctx.start()
    plans, prev = [], start
    for load in predicted:
        prev = ctx.replan(prev, load)
        plans.append(prev)
    return replay(ctx, plans, start, name, family)


# ------------------------------------------------------------------------------ strategies


def no_balancing(ctx: Context) -> Routed:
    """Static contiguous placement, no replicas (the baseline every speed-up is over)."""
    n = ctx.data.test_loads.shape[0]
    return replay(ctx, [ctx.static] * n, ctx.static, "no_balancing", "baseline")


def oracle(ctx: Context) -> Routed:
    """Duplication planned from each batch's *actual* load: perfect knowledge, no overhead."""
    out = planned(ctx, ctx.data.test_loads, "oracle", "oracle")
    out.accuracy = distribution_accuracy(ctx.data.test_loads, ctx.data.test_loads)
    return out


def periodic(ctx: Context, interval: int, window: int) -> Routed:
    """EPLB-style: at every step that is a multiple of ``interval`` (counted from the first
    history batch, so the held-out window sees the re-plan rate, whatever its length) re-plan
    from the mean load of the last ``window`` batches served (history only; the migration is
    always paid, as EPLB applies every new plan)."""
    if interval < 1 or window < 1:
        raise ValueError(f"strategy.replan_interval={interval} / history_window={window}: >= 1")
    d = ctx.data
    seen = np.concatenate([d.train_loads, d.test_loads]).astype(float)
    m = d.train_loads.shape[0]
    start = ctx.start()
    plans, prev = [], start
    for n in range(d.test_loads.shape[0]):
        if (m + n) % interval == 0:
            prev = ctx.plan(seen[max(0, m + n - window) : m + n].mean(axis=0), prev)
        plans.append(prev)
    out = replay(ctx, plans, start, f"eplb_every_{interval}", "periodic")
    out.notes = {"replan_interval": interval, "history_window": window}
    return out


def _remember(data: EvalData, kind: str, key: dict, compute):
    """``(value, computed)``: ``gps.cache.remember`` under ``data``'s key (uncached when
    ``data`` has none); ``computed`` is false when the value came from the cache."""
    ran = []

    def run():
        ran.append(True)
        return compute()

    value = cache.remember(kind, {"data": data.key, **key}, run) if data.key else run()
    return value, bool(ran)


def distribution(ctx: Context, name: str, params: dict) -> Routed:
    """A Distribution-Only predictor forecasts each held-out batch's ``[L, E]`` load from the
    batches before it (or, for the token-id predictor, from the batch's token ids). The fitted
    predictor and its forecasts are cached (``gps.cache`` kind ``predictors``)."""
    d = ctx.data

    def compute():
        model = predictors.make_predictor(name, **params)
        t0 = time.perf_counter()
        if model.input_kind == "tokens":
            model.fit(d.fit)
            t1 = time.perf_counter()
            pred = model.predict_batches(d.test, d.tokens_per_batch)
        else:
            model.fit(d.train_loads)
            t1 = time.perf_counter()
            seen = np.concatenate([d.train_loads, d.test_loads])
            pred = model.predict_rolling(seen, start=d.train_loads.shape[0])
        t2 = time.perf_counter()
        return model, pred, {"fit_s": t1 - t0, "predict_s": t2 - t1}

    key = {"family": "distribution", "name": name, "params": params}
    (model, pred, wall), computed = _remember(d, "predictors", key, compute)
    load = pred * (d.tokens_per_batch * d.test.top_k)  # proportions -> expected token copies
    out = planned(ctx, load, f"distribution:{name}", "distribution")
    out.cost, out.predictor = model.cost(), name
    out.accuracy = distribution_accuracy(pred, d.test_loads)
    out.wall_s = {**wall, "cached": not computed}
    return out


def token(
    ctx: Context,
    name: str,
    params: dict,
    model: TokenPredictor | None = None,
    histogram: np.ndarray | None = None,
) -> Routed:
    """A Token-to-Expert predictor guesses every held-out token's top-k; the plan uses the
    histogram of its guesses. The fitted predictor, the histogram and the accuracy are cached
    (``gps.cache`` kind ``predictors``).

    ``model``: an already fitted estimator (what-if sweeps; not cached) and ``histogram``:
    the ``[N, L, E]`` histogram of its held-out guesses (``whatif_runs``); then nothing is
    fitted or predicted and no accuracy is measured."""
    d = ctx.data
    if histogram is not None:
        if model is None:
            raise ValueError("token: a histogram needs the model that guessed it")
        out = planned(ctx, histogram, f"token:{name}", "token")
        out.cost, out.predictor, out.synthetic = model.cost(), name, bool(model.synthetic)
        return out

    def compute():
        est = model if model is not None else predictors.make_predictor(name, **params)
        t0 = time.perf_counter()
        est.fit(d.fit)
        t1 = time.perf_counter()
        guess = est.predict(d.test)
        t2 = time.perf_counter()
        e, t = d.test.num_experts, d.tokens_per_batch
        hist = expert_histogram(guess, e, t)  # [N, L, E]
        true = np.asarray(d.test.experts)
        accuracy = {
            "topk_hit_rate": topk_hit_rate(guess, true),
            "exact_set_accuracy": exact_set_accuracy(guess, true),
            **{f"induced_{k}": v for k, v in distribution_accuracy(
                hist, expert_histogram(true, e, t)).items()},
        }  # fmt: skip
        return est, hist, accuracy, {"fit_s": t1 - t0, "predict_s": t2 - t1}

    if model is None:
        key = {"family": "token", "name": name, "params": params}
        (model, hist, accuracy, wall), computed = _remember(d, "predictors", key, compute)
    else:
        (model, hist, accuracy, wall), computed = compute(), True
    out = planned(ctx, hist, f"token:{name}", "token")
    out.cost, out.predictor, out.synthetic = model.cost(), name, bool(model.synthetic)
    out.accuracy = dict(accuracy)
    out.wall_s = {**wall, "cached": not computed}
    return out


def whatif_runs(
    ctx: Context, accuracies: list[float], seed: int
) -> dict[float, tuple[WhatIfTokenPredictor, np.ndarray]]:
    """``accuracy -> (fitted what-if predictor, [N, L, E] histogram of its held-out guesses)``
    for ``token(..., model=, histogram=)``; one pass over the trace for the whole grid
    (``WhatIfTokenPredictor.predict_histograms``), cached (``gps.cache`` kind ``whatif``)."""
    d, grid = ctx.data, [float(a) for a in accuracies]

    def compute():
        base = WhatIfTokenPredictor(seed=seed).fit(d.fit)
        return base, base.predict_histograms(d.test, grid, d.tokens_per_batch)

    (base, hists), _ = _remember(d, "whatif", {"accuracies": grid, "seed": seed}, compute)
    return {a: (_with_params(base, accuracy=a), h) for a, h in zip(grid, hists, strict=True)}


def _with_params(model, **params):
    """A shallow copy of a fitted estimator with ``params`` changed (fitted state kept)."""
    new = copy.copy(model)
    for k, v in params.items():
        setattr(new, k, v)
    return new


def capacity(ctx: Context, factor: float, mode: str) -> Routed:
    """Capacity-aware token ``drop`` or ``reroute`` at ``gamma = factor`` on the static
    placement (He et al.): each held-out batch's copies beyond an expert's capacity are
    dropped, or moved to an expert with room. The simulated routing is cached (``gps.cache``
    kind ``capacity``)."""
    if mode not in ("drop", "reroute"):
        raise ValueError(f"capacity mode {mode!r}: expected drop or reroute")
    rule = capacity_drop if mode == "drop" else capacity_reroute
    d, plan = ctx.data, ctx.static
    t, e = d.tokens_per_batch, d.test.num_experts

    def compute() -> SimResult:
        sims = []
        for n in range(d.test_loads.shape[0]):  # per batch, only the arrays the rule reads
            rows = slice(n * t, (n + 1) * t)
            scores = None if d.test.scores is None else d.test.scores[rows]
            res = rule(d.test.experts[rows], factor, scores=scores, num_experts=e)
            sims.append(simulate_tokens(plan, res.experts, spec=ctx.spec, split=ctx.split,
                                        gpus_per_node=ctx.cluster.gpus_per_node,
                                        rerouted=res.rerouted))  # fmt: skip
        return _stack(sims)

    # Keyed by what the routing depends on: the batch, the rule, the placement and the token
    # size; another GPU model with the same topology hits.
    key = {"family": "capacity", "factor": float(factor), "mode": mode, "split": ctx.split,
           "placement": cache.key_hash(plan.slot_expert), "spec": dataclasses.asdict(ctx.spec),
           "gpus_per_node": ctx.cluster.gpus_per_node}  # fmt: skip
    sim, _ = _remember(d, "capacity", key, compute)
    out = Routed(f"capacity_{mode}@{factor:g}", "capacity", sim, np.zeros(sim.dropped.shape))
    out.notes = {"capacity_factor": factor, "mode": mode}
    return out


def ilp(ctx: Context, time_limit_s: float, mip_gap: float) -> Routed:
    """MoETuner: one static placement (one copy per expert, ``ceil(E/G)`` slots per GPU) from
    the training trace's loads and layer-to-layer transition counts, solved as an ILP (HiGHS)
    or by the documented fallback (``notes['method']`` and ``notes['gap']`` say which).

    With fewer experts than GPUs (``E < G``, e.g. Mixtral's 8 experts on 16 GPUs) one copy per
    expert would leave GPUs idle; the ILP then places experts on ``E`` groups of ``G/E``
    consecutive GPUs and every GPU of a group holds its expert, as static placement does.

    Raises:
        ValueError: ``E < G`` with ``G`` not a multiple of ``E``.
    """
    d, g, e = ctx.data, ctx.cluster.num_gpus, ctx.data.test.num_experts
    groups = min(g, e)
    if g % groups:
        raise ValueError(f"ilp: {e} experts on {g} GPUs: G must be a multiple of E when E < G")
    res = ilp_placement(d.train_loads.sum(axis=0), transition_counts(np.asarray(d.fit.experts), e),
                        groups, time_limit_s=time_limit_s, mip_gap=mip_gap)  # fmt: skip
    plan = res.plan
    if groups < g:  # [L, E, R] -> [L, G, R]: each group's slots on all of its GPUs
        plan = Plan(np.repeat(plan.slot_expert, g // groups, axis=1), e, meta=plan.meta)
    n = d.test_loads.shape[0]
    out = replay(ctx, [plan] * n, plan, "ilp_moetuner", "ilp")
    out.notes = {"method": res.method, "gap": res.gap, "solve_time_s": res.solve_time_s,
                 "message": res.message, "gpu_groups": groups}  # fmt: skip
    return out
