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

import time
from dataclasses import dataclass, field

import numpy as np

import predictors
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
    plan_spare,
    static_placement,
    transition_counts,
)
from gps.plans.migration import check_source, fetch_seconds, migration_seconds
from gps.plans.spare import check_replicas, spare_slots_per_gpu
from gps.simulate import SimResult, simulate_loads, simulate_tokens
from gps.workload import Workload
from predictors.base import PredictorCost
from predictors.metrics import (
    distribution_accuracy,
    exact_set_accuracy,
    expert_histogram,
    induced_distribution_error,
    topk_hit_rate,
)


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
        wall_s: measured ``fit``/``predict`` seconds on this machine.
        notes: planner diagnostics (ILP method and gap, ...).
        migration_s: ``[N, L]`` seconds the slowest GPU spends copying the layer's new
            replicas, priced on the link they travel (``gps.plans.migration``); what the cost
            model charges (``None``: ``migration_bytes`` over the intra-node link).
        migration_bytes_per_gpu: ``[N, L, G]`` expert-weight bytes each GPU receives
            (``None``: not recorded).
        plans: the plan that served each held-out batch (``None`` when not kept).
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
    def static(self) -> Plan:
        """Contiguous placement, one copy per expert, the same in every layer; its occupied
        slots are the home slots of every ``spare`` plan (no balancing = home copies only)."""
        d = self.data
        return static_placement(d.test.num_layers, d.test.num_experts, self.cluster.num_gpus,
                                self.slots_per_gpu)  # fmt: skip

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
        """``plan`` at each ``migration_slack`` in ``slacks`` (fetch costs computed once)."""
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
        return [plan_spare(load, home, previous=previous, fetch_s=fetch, migration_slack=x)
                for x in slacks]  # fmt: skip

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


def distribution(ctx: Context, name: str, params: dict) -> Routed:
    """A Distribution-Only predictor forecasts each held-out batch's ``[L, E]`` load from the
    batches before it (or, for the token-id predictor, from the batch's token ids)."""
    d = ctx.data
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
    load = pred * (d.tokens_per_batch * d.test.top_k)  # proportions -> expected token copies
    out = planned(ctx, load, f"distribution:{name}", "distribution")
    out.cost, out.predictor = model.cost(), name
    out.accuracy = distribution_accuracy(pred, d.test_loads)
    out.wall_s = {"fit_s": t1 - t0, "predict_s": t2 - t1}
    return out


def token(ctx: Context, name: str, params: dict, model=None) -> Routed:
    """A Token-to-Expert predictor guesses every held-out token's top-k; the plan uses the
    histogram of its guesses. ``model``: an already built estimator (what-if sweeps)."""
    d = ctx.data
    model = model if model is not None else predictors.make_predictor(name, **params)
    t0 = time.perf_counter()
    model.fit(d.fit)
    t1 = time.perf_counter()
    guess = model.predict(d.test)
    t2 = time.perf_counter()
    hist = expert_histogram(guess, d.test.num_experts, d.tokens_per_batch)  # [N, L, E]
    out = planned(ctx, hist, f"token:{name}", "token")
    out.cost, out.predictor, out.synthetic = model.cost(), name, bool(model.synthetic)
    true = np.asarray(d.test.experts)
    out.accuracy = {
        "topk_hit_rate": topk_hit_rate(guess, true),
        "exact_set_accuracy": exact_set_accuracy(guess, true),
        **{f"induced_{k}": v for k, v in induced_distribution_error(
            guess, true, d.test.num_experts, d.tokens_per_batch).items()},
    }  # fmt: skip
    out.wall_s = {"fit_s": t1 - t0, "predict_s": t2 - t1}
    return out


def capacity(ctx: Context, factor: float, mode: str) -> Routed:
    """Capacity-aware token ``drop`` or ``reroute`` at ``gamma = factor`` on the static
    placement (He et al.): each held-out batch's copies beyond an expert's capacity are
    dropped, or moved to an expert with room."""
    if mode not in ("drop", "reroute"):
        raise ValueError(f"capacity mode {mode!r}: expected drop or reroute")
    rule = capacity_drop if mode == "drop" else capacity_reroute
    d, plan = ctx.data, ctx.static
    sims = []
    for n in range(d.test_loads.shape[0]):
        res = rule(d.test_batch(n), factor)
        sims.append(simulate_tokens(plan, res.experts, spec=ctx.spec, split=ctx.split,
                                    gpus_per_node=ctx.cluster.gpus_per_node,
                                    rerouted=res.rerouted))  # fmt: skip
    sim = _stack(sims)
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
