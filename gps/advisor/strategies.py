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
import math
import time
from dataclasses import dataclass, field

import numpy as np

import predictors
from gps import cache
from gps.advisor.data import EvalData
from gps.cost.e2e import batch_cost
from gps.cost.token_mechanisms import CopySplit, split_copies
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.plans import (
    Plan,
    bandwidth_matrix,
    capacity_drop,
    capacity_reroute,
    expert_weight_bytes,
    ilp_placement,
    migration_bytes_per_gpu,
    placement_cost,
    plan_duplication,
    plan_spare_slacks,
    static_placement,
    transition_counts,
    two_stage_placement,
)
from gps.plans.migration import check_source, fetch_seconds, migration_seconds
from gps.plans.spare import check_replicas, spare_slots_per_gpu
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
        migration_s: ``[N, L]`` seconds the slowest GPU spends copying the layer's new
            replicas, priced on the link they travel (``gps.plans.migration``); what the cost
            model charges (``None``: ``migration_bytes`` over the intra-node link).
        migration_bytes_per_gpu: ``[N, L, G]`` expert-weight bytes each GPU receives
            (``None``: not recorded).
        plans: the plan that served each held-out batch (``None`` when not kept).
        token_routing: Token-to-Expert only: the batches' copies split by the prediction
            (``TokenRouting``), what the token-level mechanisms are priced from.
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
    migration_s: np.ndarray | None = None
    migration_bytes_per_gpu: np.ndarray | None = None
    plans: list[Plan] | None = None
    token_routing: TokenRouting | None = None


@dataclass(frozen=True)
class TokenRouting:
    """A Token-to-Expert strategy's held-out copies replayed against its plans, by outcome.

    Every field is a ``SimResult`` with leading ``[N]`` (``gps.simulate.simulate_loads`` of the
    ``CopySplit`` loads, linear in the loads): ``hit_local`` / ``hit_split`` the correctly
    predicted copies routed with the locality split (token-level replica choice) or the run's
    ``split``; ``miss`` the mispredicted copies (run's split, after the gate); ``wrong_local`` /
    ``wrong_split`` the wrong guesses (sent early and discarded under direct dispatch).
    ``predicted_busy [N, L, G, R]``: slots the guesses send copies to (what prefetch fetches).
    """

    hit_local: SimResult
    hit_split: SimResult
    miss: SimResult
    wrong_local: SimResult
    wrong_split: SimResult
    predicted_busy: np.ndarray


def token_routing(ctx: Context, plans: list[Plan], split: CopySplit) -> TokenRouting:
    """``TokenRouting`` of ``split`` (``[N, L, E]`` loads) against the per-batch ``plans``."""
    wrong = split.guessed - split.hit

    def sim(loads: np.ndarray, how: str) -> SimResult:
        return _stack([simulate_loads(p, x, spec=ctx.spec, split=how,
                                      gpus_per_node=ctx.cluster.gpus_per_node)
                       for p, x in zip(plans, loads, strict=True)])  # fmt: skip

    guessed = sim(split.guessed, "locality")
    return TokenRouting(
        hit_local=sim(split.hit, "locality"), hit_split=sim(split.hit, ctx.split),
        miss=sim(split.miss, ctx.split), wrong_local=sim(wrong, "locality"),
        wrong_split=sim(wrong, ctx.split), predicted_busy=guessed.slot_tokens > 0,
    )  # fmt: skip


@dataclass(frozen=True)
class Context:
    """What every strategy needs: the model, cluster, step, slots and the data.

    Attributes:
        replicas: ``spare`` (home copies stay, replicas move through spare slots) or
            ``repack`` (every re-plan re-packs all slots; what periodic re-layout does).
        migration_source: ``peer`` (nearest GPU holding the expert) or ``host`` (host memory
            over PCIe), the link new replicas are priced on.
        horizon: steps a new plan is expected to serve; a switch is weighed against its
            migration divided by this (``choose``). ``1`` = myopic; default 4, as
            ``StrategyConfig.horizon``.
    """

    spec: MoEModelSpec
    cluster: Cluster
    workload: Workload
    data: EvalData
    slots_per_gpu: int
    split: str
    migration_overlap: float
    replicas: str = "spare"
    migration_source: str = "peer"
    horizon: float = 4.0
    rank_of_gpu: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_replicas(self.replicas)
        check_source(self.migration_source)
        spare_slots_per_gpu(self.data.test.num_experts, self.cluster.num_gpus,
                            self.slots_per_gpu)  # fmt: skip
        if not self.horizon >= 1:
            raise ValueError(f"strategy.horizon={self.horizon}: must be >= 1 (steps)")
        if self.migration_source == "host" and self.cluster.host_link is None:
            raise ValueError(
                f"strategy.migration_source=host: cluster {self.cluster.name!r} has no "
                "host_link (set hardware.host_link to a PCIe link profile)"
            )

    @property
    def ranks(self) -> np.ndarray:
        """``[G]`` expert-parallel rank of every GPU: the ``parallel`` layout's (``(g mod
        ep*tp) // tp``), or one rank per GPU (pure expert parallelism)."""
        g = self.cluster.num_gpus
        return np.arange(g) if self.rank_of_gpu is None else np.asarray(self.rank_of_gpu)

    def on_gpus(self, plan: Plan) -> Plan:
        """A plan over the expert-parallel ranks (``[L, ranks, R]``) on the ``G`` GPUs: each
        GPU holds its rank's slots (expert tensor parallelism priced as the rank's ``tp`` GPUs
        splitting its tokens evenly: the same FLOPs, full expert weights on each)."""
        if plan.num_gpus == self.cluster.num_gpus and self.rank_of_gpu is None:
            return plan
        r = self.ranks
        home = None if plan.home is None else plan.home[:, r, :]
        return Plan(plan.slot_expert[:, r, :], plan.num_experts, meta=plan.meta, home=home)

    @property
    def static(self) -> Plan:
        """Contiguous placement (Megatron-LM's: experts ``0..R-1`` on rank 0, ...), one copy per
        expert on each expert-parallel rank, the same in every layer; its occupied slots are the
        home slots of every ``spare`` plan (no balancing = home copies only)."""
        d = self.data
        n_ranks = int(self.ranks.max()) + 1
        return self.on_gpus(static_placement(d.test.num_layers, d.test.num_experts, n_ranks,
                                             self.slots_per_gpu))  # fmt: skip

    @property
    def expert_bytes(self) -> float:
        return expert_weight_bytes(self.spec)

    def plan(self, load: np.ndarray, previous: Plan | None, *, replicas: str | None = None,
             migration_slack: float = 0.0) -> Plan:  # fmt: skip
        """Duplication plan for one batch's predicted ``[L, E]`` load, migration-minimal with
        respect to ``previous``: ``spare`` (``plan_spare``, fetch costs from ``previous``) or
        ``repack`` (``plan_duplication``, GPUs relabelled to keep replicas in place)."""
        return self._plans(load, previous, replicas, (migration_slack,))[0]

    def _plans(self, load: np.ndarray, previous: Plan | None, replicas: str | None,
               slacks: tuple[float, ...]) -> list[Plan]:  # fmt: skip
        """``plan`` at each ``migration_slack`` in ``slacks``: one planning pass (fetch costs,
        replica counts and candidates shared; ``plan_spare_slacks``)."""
        mode = self.replicas if replicas is None else replicas
        if mode == "repack":
            return [plan_duplication(load, self.cluster.num_gpus, self.slots_per_gpu,
                                     previous=previous,
                                     gpus_per_node=self.cluster.gpus_per_node)]  # fmt: skip
        home = self.static
        if previous is not None and (
            previous.home is None or not np.array_equal(previous.home, home.home)
        ):
            previous = None  # a re-packed plan: nothing stays in a spare slot
        fetch = None
        if previous is not None:
            fetch = fetch_seconds(previous, self.expert_bytes, self.cluster, self.migration_source)
        return plan_spare_slacks(load, home, slacks, previous=previous, fetch_s=fetch)

    def candidates(self, load: np.ndarray, previous: Plan) -> list[Plan]:
        """What re-planning chooses from: keep ``previous``, the balance-first and the
        migration-first plan (``MIGRATION_SLACK``), and the fallback: home copies only
        (``spare``, zero migration) or static placement (``repack``)."""
        if self.replicas == "repack":
            return [previous, self.plan(load, previous), self.static]
        return [previous, *self._plans(load, previous, None, (0.0, MIGRATION_SLACK)), self.static]

    def migration(self, old: Plan, new: Plan) -> tuple[np.ndarray, np.ndarray]:
        """``(bytes [L, G], seconds [L])``: expert-weight bytes each GPU receives going from
        ``old`` to ``new``, and the slowest GPU's copy time on the links they travel."""
        wbytes = self.expert_bytes
        return (
            migration_bytes_per_gpu(old, new, wbytes),
            migration_seconds(old, new, wbytes, self.cluster, self.migration_source),
        )

    def simulate(self, plan: Plan, loads: np.ndarray) -> SimResult:
        return simulate_loads(plan, loads, spec=self.spec, split=self.split,
                              gpus_per_node=self.cluster.gpus_per_node)  # fmt: skip

    def step_costs(
        self, candidates: list[Plan], load: np.ndarray, previous: Plan | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(step [C], exposed migration [C])`` seconds of each candidate on the ``[L, E]``
        load: the step without migration, and the migration from ``previous`` left exposed
        after hiding behind attention (zero when ``previous`` is ``None``)."""
        sims = [self.simulate(p, load) for p in candidates]
        nl = load.shape[0]
        mig = [np.zeros(nl) if previous is None else self.migration(previous, p)[1]
               for p in candidates]  # fmt: skip
        cost = batch_cost(
            self.spec, self.cluster, self.workload,
            np.stack([s.slot_tokens for s in sims]), np.stack([s.traffic_bytes for s in sims]),
            migration_s=np.stack(mig), migration_overlap=self.migration_overlap,
        )  # fmt: skip
        exposed = cost.components["migration"].sum(axis=-1)
        return cost.total_s - exposed, exposed

    def choose(
        self, candidates: list[Plan], load: np.ndarray, previous: Plan | None,
        horizon: float = 1.0, bank: float = 0.0, later: np.ndarray | None = None,
        later_weights: np.ndarray | None = None,
    ) -> tuple[int, float]:  # fmt: skip
        """The amortised keep-or-switch rule (``docs/advisor.md``) on the *predicted* ``[L, E]``
        load: ``(index of the chosen candidate, its predicted saving over the fallback)``.

        Each candidate ``X`` has a step time ``t_X`` and an exposed migration ``m_X`` from
        ``previous``; the last candidate is the fallback ``F`` (home copies only with ``spare``
        replicas, reachable at zero migration; static placement with ``repack``). Chosen: the
        lowest amortised ``t_X + m_X / horizon`` among candidates whose full step may cost at
        most ``bank`` more than the fallback's, ``t_X + m_X <= t_F + m_F + bank`` (``bank``:
        the savings over the fallback predicted for the steps already served; the fallback
        itself is always allowed). So, on its own forecast, a strategy never falls behind
        serving from home copies in total time.

        ``later``: ``[h, L, E]`` loads expected for the steps after this one, weighted by
        ``later_weights [h]`` (default ones): a multi-step forecast (the oracle's are the
        actual batches) or the recent observed mean for the rest of the horizon. Then
        ``t_X`` in the amortised score is the weighted mean step time over this load and
        those; the bound still uses this step alone."""
        t, m = self.step_costs(candidates, load, previous)
        full = t + m
        allowed = full <= full[-1] + max(bank, 0.0) + 1e-12 * full[-1]
        allowed[-1] = True
        mean_t = t
        if later is not None and len(later):
            w = np.ones(len(later)) if later_weights is None else np.asarray(later_weights, float)
            t_later = np.stack([self.step_costs(candidates, x, None)[0] for x in later])
            mean_t = (t + w @ t_later) / (1 + w.sum())
        pick = int(np.argmin(np.where(allowed, mean_t + m / horizon, np.inf)))
        return pick, float(full[-1] - full[pick])

    def cheapest(
        self, candidates: list[Plan], load: np.ndarray, previous: Plan | None,
        horizon: float = 1.0, bank: float = 0.0,
    ) -> Plan:  # fmt: skip
        """The candidate ``choose`` picks."""
        return candidates[self.choose(candidates, load, previous, horizon, bank)[0]]

    def replan(
        self, previous: Plan, load: np.ndarray, bank: float = 0.0,
        later: np.ndarray | None = None, later_weights: np.ndarray | None = None,
    ) -> tuple[Plan, float]:  # fmt: skip
        """Migration-aware re-planning from a predicted ``[L, E]`` load: keep ``previous``,
        switch to a new migration-minimal plan, or fall back to home copies / static
        placement, by the amortised rule of ``choose`` over ``horizon`` steps (``later``:
        forecasts of the following steps). Returns the plan and ``bank`` plus its predicted
        saving over the fallback."""
        cands = self.candidates(load, previous)
        pick, saving = self.choose(cands, load, previous, self.horizon, bank, later,
                                   later_weights)  # fmt: skip
        return cands[pick], bank + saving

    def start(self) -> Plan:
        """The plan in place before the first held-out batch, the same for every dynamic
        strategy: static or the duplication plan of the last training batch's actual load,
        whichever is cheaper on that load (steady state: no migration charged)."""
        last = self.data.train_loads[-1]
        return self.cheapest([self.plan(last, None), self.static], last, None)


# Relative balance the migration-first candidate gives up for cheaper replica copies.
MIGRATION_SLACK = 0.05


def _scale_sim(sim: SimResult, f: float) -> SimResult:
    return dataclasses.replace(
        sim, slot_tokens=sim.slot_tokens * f, traffic_bytes=sim.traffic_bytes * f,
        routed=sim.routed * f, dropped=sim.dropped * f, rerouted=sim.rerouted * f,
    )  # fmt: skip


def scaled(r: Routed, factor: float) -> Routed:
    """``r`` with every token count (and the bytes they move) multiplied by ``factor``: routing
    simulated on a sample of the step (``EvalData.token_scale``) priced at the full step."""
    if factor == 1.0:
        return r
    tr = r.token_routing
    if tr is not None:
        tr = TokenRouting(
            *(_scale_sim(getattr(tr, n), factor)
              for n in ("hit_local", "hit_split", "miss", "wrong_local", "wrong_split")),
            tr.predicted_busy,
        )  # fmt: skip
    return dataclasses.replace(r, sim=_scale_sim(r.sim, factor), token_routing=tr)


def _stack(results: list[SimResult]) -> SimResult:
    """``N`` per-batch results -> one with leading ``[N]``."""
    first = results[0]
    return SimResult(**{
        name: (np.stack([getattr(r, name) for r in results]) if name != "token_bytes"
               else first.token_bytes)
        for name in first.__dataclass_fields__
    })  # fmt: skip


def replay(
    ctx: Context, plans: list[Plan], start: Plan, name: str, family: str, *,
    free_migration: bool = False,
) -> Routed:  # fmt: skip
    """Price-ready result of ``plans[n]`` serving held-out batch ``n``; migration counted from
    ``start`` (the plan in place before the first held-out batch). ``free_migration``: the
    bytes are recorded but cost no time (an upper bound)."""
    actual = ctx.data.test_loads
    sims = [ctx.simulate(p, actual[n]) for n, p in enumerate(plans)]
    prev = [start, *plans[:-1]]
    moved = [ctx.migration(a, b) for a, b in zip(prev, plans, strict=True)]
    per_gpu = np.stack([b for b, _ in moved])  # [N, L, G]
    seconds = np.stack([s for _, s in moved])  # [N, L]
    if free_migration:
        seconds = np.zeros_like(seconds)
    out = Routed(name, family, _stack(sims), per_gpu.max(axis=-1))
    out.migration_s, out.migration_bytes_per_gpu, out.plans = seconds, per_gpu, list(plans)
    return out


def planned(
    ctx: Context, predicted: np.ndarray, name: str, family: str, *, lookahead: bool = False
) -> Routed:
    """Before every held-out batch, re-plan from its predicted ``[N, L, E]`` load when that
    pays (``Context.replan``), starting from ``Context.start`` (the same for every strategy).

    The amortised rule needs the loads of the ``horizon - 1`` steps after this one. A
    one-step forecast says nothing about them, so they are the mean actual load of the last
    ``ceil(horizon)`` batches served (what every deployment observes); with ``lookahead``
    (the oracle) ``predicted`` is known in advance and its next batches are used."""
    start = ctx.start()
    plans, prev, bank = [], start, 0.0
    ahead = max(int(np.ceil(ctx.horizon)) - 1, 0)
    seen = np.concatenate([ctx.data.train_loads, ctx.data.test_loads]).astype(float)
    m = ctx.data.train_loads.shape[0]
    for n, load in enumerate(predicted):
        later, weights = None, None
        if ahead and lookahead:
            later = predicted[n + 1 : n + 1 + ahead]
        elif ahead:
            later = seen[max(0, m + n - ahead - 1) : m + n].mean(axis=0)[None]
            weights = np.array([float(ahead)])
        prev, bank = ctx.replan(prev, load, bank, later, weights)
        plans.append(prev)
    out = replay(ctx, plans, start, name, family)
    out.notes = {"replicas": ctx.replicas, "migration_source": ctx.migration_source,
                 "horizon": ctx.horizon}  # fmt: skip
    return out


# ------------------------------------------------------------------------------ strategies


def no_balancing(ctx: Context) -> Routed:
    """Static contiguous placement, no replicas (the baseline every speed-up is over)."""
    n = ctx.data.test_loads.shape[0]
    return replay(ctx, [ctx.static] * n, ctx.static, "no_balancing", "baseline")


def oracle(ctx: Context) -> Routed:
    """Duplication planned from each batch's *actual* load: perfect knowledge, no overhead,
    migration paid; its keep-or-switch rule also sees the actual loads of the next
    ``horizon - 1`` batches (a perfect multi-step forecast). With ``spare`` replicas it is
    never behind ``no_balancing`` in total time after any held-out batch: home copies only
    is always a candidate, reachable at zero migration, and the rule of ``Context.choose``
    never spends more than the savings it predicted so far (here the prediction is exact)."""
    out = planned(ctx, ctx.data.test_loads, "oracle", "oracle", lookahead=True)
    out.accuracy = distribution_accuracy(ctx.data.test_loads, ctx.data.test_loads)
    return out


def oracle_free_migration(ctx: Context) -> Routed:
    """The most prediction could ever buy: each batch served by the fastest of static
    placement, the ``spare`` plan and the full re-pack planned from its *actual* load, with
    replica copies free (bytes recorded, no time charged)."""
    actual, plans = ctx.data.test_loads, []
    for load in actual:
        cands = [ctx.plan(load, None, replicas="spare"), ctx.plan(load, None, replicas="repack"),
                 ctx.static]  # fmt: skip
        t, _ = ctx.step_costs(cands, load, None)
        plans.append(cands[int(np.argmin(t))])
    out = replay(ctx, plans, ctx.start(), "oracle_free_migration", "oracle", free_migration=True)
    out.accuracy = distribution_accuracy(actual, actual)
    out.notes = {"migration": "free (bytes recorded, not charged)"}
    return out


def periodic(ctx: Context, interval: int, window: int) -> Routed:
    """EPLB-style: at every step that is a multiple of ``interval`` (counted from the first
    history batch, so the held-out window sees the re-plan rate, whatever its length) re-plan
    from the mean load of the last ``window`` batches served (history only; the migration is
    always paid, as EPLB applies every new plan). The re-layout is a full re-pack
    (``replicas=repack``), GPUs relabelled to keep what they hold."""
    if interval < 1 or window < 1:
        raise ValueError(f"strategy.replan_interval={interval} / history_window={window}: >= 1")
    d = ctx.data
    seen = np.concatenate([d.train_loads, d.test_loads]).astype(float)
    m = d.train_loads.shape[0]
    start = ctx.start()
    plans, prev = [], start
    for n in range(d.test_loads.shape[0]):
        if (m + n) % interval == 0:
            prev = ctx.plan(seen[max(0, m + n - window) : m + n].mean(axis=0), prev,
                            replicas="repack")  # fmt: skip
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
    copies: CopySplit | None = None,
) -> Routed:
    """A Token-to-Expert predictor guesses every held-out token's top-k; the plan uses the
    histogram of its guesses, and ``token_routing`` records which copies it named (what the
    token-level mechanisms are priced from). The fitted predictor, its ``CopySplit`` and the
    accuracy are cached (``gps.cache`` kind ``predictors``).

    ``model``: an already fitted estimator (what-if sweeps; not cached) and ``copies``: the
    ``CopySplit`` of its held-out guesses (``whatif_runs``); then nothing is fitted or
    predicted and no accuracy is measured."""
    d = ctx.data
    if copies is not None:
        if model is None:
            raise ValueError("token: copies need the model that guessed them")
        out = planned(ctx, copies.guessed, f"token:{name}", "token")
        out.cost, out.predictor, out.synthetic = model.cost(), name, bool(model.synthetic)
        out.token_routing = token_routing(ctx, out.plans, copies)
        return out

    def compute():
        est = model if model is not None else predictors.make_predictor(name, **params)
        t0 = time.perf_counter()
        est.fit(d.fit)
        t1 = time.perf_counter()
        guess = est.predict(d.test)
        t2 = time.perf_counter()
        e, t = d.test.num_experts, d.tokens_per_batch
        true = np.asarray(d.test.experts)
        split = split_copies(guess, true, e, t)  # split.guessed: the [N, L, E] histogram
        accuracy = {
            "topk_hit_rate": topk_hit_rate(guess, true),
            "exact_set_accuracy": exact_set_accuracy(guess, true),
            **{f"induced_{k}": v for k, v in distribution_accuracy(
                split.guessed, expert_histogram(true, e, t)).items()},
        }  # fmt: skip
        return est, split, accuracy, {"fit_s": t1 - t0, "predict_s": t2 - t1}

    if model is None:
        key = {"family": "token", "name": name, "params": params}
        (model, split, accuracy, wall), computed = _remember(d, "predictors", key, compute)
    else:
        (model, split, accuracy, wall), computed = compute(), True
    out = planned(ctx, split.guessed, f"token:{name}", "token")
    out.cost, out.predictor, out.synthetic = model.cost(), name, bool(model.synthetic)
    out.token_routing = token_routing(ctx, out.plans, split)
    out.accuracy = dict(accuracy)
    out.wall_s = {**wall, "cached": not computed}
    return out


def whatif_runs(
    ctx: Context, accuracies: list[float], seed: int
) -> dict[float, tuple[WhatIfTokenPredictor, CopySplit]]:
    """``accuracy -> (fitted what-if predictor, CopySplit of its held-out guesses)`` for
    ``token(..., model=, copies=)``; one pass over the trace for the whole grid
    (``WhatIfTokenPredictor.predict_splits``), cached (``gps.cache`` kind ``whatif``)."""
    d, grid = ctx.data, [float(a) for a in accuracies]

    def compute():
        base = WhatIfTokenPredictor(seed=seed).fit(d.fit)
        return base, base.predict_splits(d.test, grid, d.tokens_per_batch)

    (base, (guessed, hit)), _ = _remember(d, "whatif", {"accuracies": grid, "seed": seed},
                                          compute)  # fmt: skip
    true = d.test_loads.astype(float)
    return {
        a: (_with_params(base, accuracy=a), CopySplit(h.astype(float), true - h, g.astype(float)))
        for a, g, h in zip(grid, guessed, hit, strict=True)
    }


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
    out = Routed(f"capacity_{mode}@{factor:g}", "capacity", sim, np.zeros(sim.dropped.shape),
                 plans=[plan] * sim.dropped.shape[0])  # fmt: skip
    out.notes = {"capacity_factor": factor, "mode": mode}
    return out


def ilp(ctx: Context, time_limit_s: float, mip_gap: float, stages: int = 1) -> Routed:
    """MoETuner: one static placement (one copy per expert, ``ceil(E/G)`` slots per GPU) from
    the training trace's loads and layer-to-layer transition counts, solved as an ILP (HiGHS)
    or by the documented fallback (``notes['method']`` and ``notes['gap']`` say which).

    ``stages=1``: one joint ILP over straggler load and cross-GPU transition tokens
    (``gps.plans.ilp``); ``stages=2``: the paper's two stages, balanced expert groups per layer,
    then groups mapped to GPUs minimising the worst bandwidth-weighted link
    (``gps.plans.ilp_two_stage``; intra- vs inter-node bandwidth from the cluster).

    The ILP places experts on the expert-parallel ranks (``Context.ranks``: GPUs under pure
    EP, the ``parallel`` layout's ``ep`` ranks otherwise), every GPU of a rank holding its
    slots. With fewer experts than ranks (``E < G``, e.g. Mixtral's 8 experts on 16 GPUs) one
    copy per expert would leave ranks idle; the ILP then places experts on ``E`` groups of
    ``G/E`` consecutive ranks and every GPU of a group holds its expert, as static placement
    does.

    Raises:
        ValueError: ``E < ranks`` with the ranks not a multiple of ``E``; ``stages`` not 1 or 2.
    """
    d, e = ctx.data, ctx.data.test.num_experts
    g = int(ctx.ranks.max()) + 1  # expert-parallel ranks (GPUs under pure EP)
    groups = min(g, e)
    if g % groups:
        raise ValueError(f"ilp: {e} experts on {g} ranks: ranks must be a multiple of E when E < G")
    gpu_group = ctx.ranks // (g // groups)  # [G] ILP group of every GPU
    if stages == 2:
        cl = ctx.cluster
        first = np.array([np.flatnonzero(gpu_group == j)[0] for j in range(groups)])
        inter = cl.inter_link.gpu_bandwidth if cl.inter_link is not None else None
        bw = bandwidth_matrix(first // cl.gpus_per_node, cl.intra_link.gpu_bandwidth, inter)
    elif stages != 1:
        raise ValueError(f"strategy.ilp_stages={stages}: expected 1 or 2")

    def compute() -> tuple[Plan, dict]:
        """The placement over the ``groups`` ILP groups and its notes."""
        load = d.train_loads.sum(axis=0)
        trans = transition_counts(np.asarray(d.fit.experts), e)
        if stages == 1:
            res = ilp_placement(load, trans, groups, time_limit_s=time_limit_s, mip_gap=mip_gap)
            notes = {"method": res.method, "gap": res.gap}
        else:
            res = two_stage_placement(load, trans, bw, time_limit_s=time_limit_s, mip_gap=mip_gap)
            gaps = [res.stage1_gap, res.stage2_gap]  # nan: that stage has no MILP bound
            notes = {"method": res.method,
                     "gap": None if any(map(math.isnan, gaps)) else max(gaps),
                     "stage1_objective": res.stage1_objective,
                     "stage2_objective": res.stage2_objective}  # fmt: skip
        plan = res.plan
        test_trans = transition_counts(np.asarray(d.test.experts), e)
        total = max(float(test_trans.sum()), 1.0)
        gpu_of = np.zeros((plan.num_layers, e), dtype=np.int64)  # [L, E] group of every expert
        lay, grp, slot = np.nonzero(plan.slot_expert >= 0)
        gpu_of[lay, plan.slot_expert[lay, grp, slot]] = grp
        static_of = np.broadcast_to(np.arange(e) // -(-e // groups), gpu_of.shape)
        co = [1.0 - placement_cost(a, d.test_loads[0], test_trans, groups, 0.0)[1] / total
              for a in (gpu_of, static_of)]  # fmt: skip
        return plan, {**notes, "solve_time_s": res.solve_time_s, "message": res.message,
                      "colocated_fraction": co[0], "static_colocated_fraction": co[1]}  # fmt: skip

    # Keyed by what the placement depends on (the data, the groups, the solver limits and, for
    # two stages, the groups' bandwidths): another GPU model with the same layout hits without
    # recounting the trace's layer-to-layer transitions.
    key = {"family": "ilp", "groups": groups, "stages": stages, "time_limit_s": time_limit_s,
           "mip_gap": mip_gap, "bandwidth": bw.tolist() if stages == 2 else None}  # fmt: skip
    (plan, notes), _ = _remember(d, "ilp", key, compute)
    name = "ilp_moetuner" if stages == 1 else "ilp_moetuner_2stage"
    plan = Plan(plan.slot_expert[:, gpu_group, :], e, meta=plan.meta)  # each group's GPUs
    n = d.test_loads.shape[0]
    out = replay(ctx, [plan] * n, plan, name, "ilp")
    out.notes = {**notes, "gpu_groups": groups, "stages": stages}
    return out
