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
from functools import cached_property

import numpy as np

import predictors
from gps import cache
from gps.advisor.data import EvalData
from gps.advisor.eplb.schedules import lag_steps, mean_stall, periodic_schedule
from gps.advisor.ledger import Ledger, price_step
from gps.cost.step import StepRouting
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
    migration_port_seconds,
    placement_cost,
    plan_duplication,
    plan_spare_slacks,
    static_placement,
    transition_counts,
    two_stage_placement,
)
from gps.plans.eplb_placement import eplb_placement
from gps.plans.migration import check_source, fetch_seconds
from gps.plans.rebalance import RebalanceCosts
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
from predictors.splits import CopySplit, split_copies
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
        migration_s: port (``gps.cost.step.PORTS``) -> ``[N, L, G]`` seconds each GPU's port
            spends copying the layer's new replicas (``gps.plans.migration_port_seconds``):
            what the cost model hides in each port's budget; empty: no copies.
        migration_bytes_per_gpu: ``[N, L, G]`` expert-weight bytes each GPU receives
            (``None``: not recorded).
        plans: the plan that served each held-out batch.
        belief: ``[N, L, G, R]`` token copies the strategy expected each slot to process (its
            forecast or guesses routed through its plan; the truth for the oracle), what its
            pre-gate mechanisms act on (``gps.advisor.ledger``); ``None``: no information.
        token_routing: Token-to-Expert only: the batches' copies split by the prediction
            (``TokenRouting``), what the MoE-GPS paper's skip-the-scatter assumption prices.
        rebalance_s: seconds added to every step: a periodic rebalance's stall amortised over
            its interval (``gps.plans.rebalance``; ``engine_eplb``), 0 for every other
            strategy; the free-migration bound drops it with the copies.
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
    migration_s: dict[str, np.ndarray] = field(default_factory=dict)
    migration_bytes_per_gpu: np.ndarray | None = None
    plans: list[Plan] | None = None
    belief: np.ndarray | None = None
    token_routing: TokenRouting | None = None
    rebalance_s: float = 0.0

    @property
    def assigned(self) -> np.ndarray:
        """``[N, L, G, R]`` bool: the slots each batch's plan fills (``[1, ...]`` for one
        plan); what a strategy without a belief prefetches."""
        if self.plans is None:
            raise ValueError(f"{self.name}: no plans recorded")
        return np.stack([p.slot_expert >= 0 for p in self.plans])


@dataclass(frozen=True)
class TokenRouting:
    """A Token-to-Expert strategy's held-out copies replayed against its plans, by outcome.

    ``hit`` / ``miss``: ``SimResult`` with leading ``[N]`` of the correctly and wrongly
    predicted copies (``gps.simulate.simulate_loads`` of the ``CopySplit`` loads, linear in the
    loads; the dispatch split of the run's ledger). Under the MoE-GPS paper's assumption the
    hits are already in place and the misses pay a corrective all-to-all.
    """

    hit: SimResult
    miss: SimResult


def token_routing(ctx: Context, plans: list[Plan], split: CopySplit) -> TokenRouting:
    """``TokenRouting`` of ``split`` (``[N, L, E]`` loads) against the per-batch ``plans``."""
    return TokenRouting(hit=ctx.simulate_each(plans, split.hit),
                        miss=ctx.simulate_each(plans, split.miss))  # fmt: skip


@dataclass(frozen=True)
class Context:
    """What every strategy needs: the model, cluster, step, slots, the data and the ledger.

    Attributes:
        ledger: the run's mechanism switches (``gps.advisor.ledger.Ledger``): the dispatch
            split, chunked dispatch, prefetch, resident experts and the port window, the same
            for every strategy.
        replicas: ``spare`` (home copies stay, replicas move through spare slots) or
            ``repack`` (every re-plan re-packs all slots; what periodic re-layout does).
        migration_source: ``peer`` (nearest GPU holding the expert) or ``host`` (host memory
            over PCIe), the link new replicas are priced on.
        horizon: steps a new plan is expected to serve; a switch is weighed against its
            migration divided by this (``choose``). ``1`` = myopic; default 4, as
            ``StrategyConfig.horizon``.
        rank_of_gpu: ``[G]`` expert-parallel rank of every GPU (``None``: one rank per GPU).
        expert_tp: GPUs per rank splitting every expert's width (the layout's ``tp``): each
            holds ``1/expert_tp`` of an expert's weights, so a replica costs that much to copy.
    """

    spec: MoEModelSpec
    cluster: Cluster
    workload: Workload
    data: EvalData
    slots_per_gpu: int
    ledger: Ledger = field(default_factory=Ledger)
    replicas: str = "spare"
    migration_source: str = "peer"
    horizon: float = 4.0
    rank_of_gpu: np.ndarray | None = None
    expert_tp: int = 1

    def __post_init__(self) -> None:
        check_replicas(self.replicas)
        check_source(self.migration_source)
        spare_slots_per_gpu(self.data.num_experts, self.cluster.num_gpus,
                            self.slots_per_gpu)  # fmt: skip
        if not self.horizon >= 1:
            raise ValueError(f"strategy.horizon={self.horizon}: must be >= 1 (steps)")
        if self.migration_source == "host" and self.cluster.host_link is None:
            raise ValueError(
                f"strategy.migration_source=host: cluster {self.cluster.name!r} has no "
                "host_link (set hardware.host_link to a PCIe link profile)"
            )

    @property
    def split(self) -> str:
        """The dispatcher's replica split, the same for every strategy (``Ledger``)."""
        return self.ledger.dispatch_split

    @property
    def ranks(self) -> np.ndarray:
        """``[G]`` expert-parallel rank of every GPU: the ``parallel`` layout's (``(g mod
        ep*tp) // tp``), or one rank per GPU (pure expert parallelism)."""
        g = self.cluster.num_gpus
        return np.arange(g) if self.rank_of_gpu is None else np.asarray(self.rank_of_gpu)

    def on_gpus(self, plan: Plan) -> Plan:
        """A plan over the expert-parallel ranks (``[L, ranks, R]``) on the ``G`` GPUs: each
        GPU holds its rank's slots (with expert tensor parallelism ``1/tp`` of each expert's
        width; ``batch_cost(parallel=...)`` then prices the rank's copies on every one of its
        GPUs, ``gps.cost.parallel.routed_layout_inputs``)."""
        if plan.num_gpus == self.cluster.num_gpus and self.rank_of_gpu is None:
            return plan
        r = self.ranks
        home = None if plan.home is None else plan.home[:, r, :]
        return Plan(plan.slot_expert[:, r, :], plan.num_experts, meta=plan.meta, home=home)

    @property
    def num_ranks(self) -> int:
        return int(self.ranks.max()) + 1

    def on_ranks(self, plan: Plan) -> Plan:
        """``on_gpus`` undone: the plan of each rank's first GPU (every GPU of a rank holds the
        same slots)."""
        if self.rank_of_gpu is None:
            return plan
        _, first = np.unique(self.ranks, return_index=True)
        home = None if plan.home is None else plan.home[:, first, :]
        return Plan(plan.slot_expert[:, first, :], plan.num_experts, meta=plan.meta, home=home)

    @cached_property
    def static_ranks(self) -> Plan:
        """Contiguous placement (Megatron-LM's: experts ``0..R-1`` on rank 0, ...), one copy per
        expert on each expert-parallel rank, the same in every layer, over the ranks (built once
        per context: every re-plan keeps its home slots; ``Plan`` arrays are read-only)."""
        d = self.data
        return static_placement(d.num_layers, d.num_experts, self.num_ranks,
                                self.slots_per_gpu)  # fmt: skip

    @property
    def static(self) -> Plan:
        """``static_ranks`` on the GPUs; its occupied slots are the home slots of every
        ``spare`` plan (no balancing = home copies only)."""
        return self.on_gpus(self.static_ranks)

    @property
    def expert_bytes(self) -> float:
        """Bytes of one expert's weights a GPU holds (``1/expert_tp`` of the expert)."""
        return expert_weight_bytes(self.spec) / self.expert_tp

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
        # every strategy plans on the layout's expert-parallel ranks (one layout for all);
        # each rank's slots then go on all of its GPUs (``on_gpus``)
        prev_ranks = None if previous is None else self.on_ranks(previous)
        if mode == "repack":
            per_node = max(self.cluster.gpus_per_node * self.num_ranks // self.cluster.num_gpus, 1)
            return [self.on_gpus(plan_duplication(load, self.num_ranks, self.slots_per_gpu,
                                                  previous=prev_ranks,
                                                  gpus_per_node=per_node))]  # fmt: skip
        home = self.static_ranks
        if prev_ranks is not None and (
            prev_ranks.home is None or not np.array_equal(prev_ranks.home, home.home)
        ):
            previous = prev_ranks = None  # a re-packed plan: nothing stays in a spare slot
        fetch = None
        if previous is not None:
            fetch = fetch_seconds(previous, self.expert_bytes, self.cluster, self.migration_source)
            if self.rank_of_gpu is not None:
                fetch = fetch[:, np.unique(self.ranks, return_index=True)[1], :]
        return [self.on_gpus(p) for p in plan_spare_slacks(load, home, slacks, previous=prev_ranks,
                                                            fetch_s=fetch)]  # fmt: skip

    def candidates(self, load: np.ndarray, previous: Plan) -> list[Plan]:
        """What re-planning chooses from: keep ``previous``, the balance-first and the
        migration-first plan (``MIGRATION_SLACK``), and the fallback: home copies only
        (``spare``, zero migration) or static placement (``repack``)."""
        if self.replicas == "repack":
            return [previous, self.plan(load, previous), self.static]
        return [previous, *self._plans(load, previous, None, (0.0, MIGRATION_SLACK)), self.static]

    def migration(self, old: Plan, new: Plan) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(bytes [L, G], port -> seconds [L, G])``: expert-weight bytes each GPU receives
        going from ``old`` to ``new``, and the seconds each GPU's port spends on them."""
        wbytes = self.expert_bytes
        return (
            migration_bytes_per_gpu(old, new, wbytes),
            migration_port_seconds(old, new, wbytes, self.cluster, self.migration_source),
        )

    def simulate(self, plan: Plan, loads: np.ndarray) -> SimResult:
        """``loads [L, E]`` (or ``[N, L, E]``) through ``plan`` with the ledger's split."""
        return simulate_loads(plan, loads, spec=self.spec, split=self.split,
                              gpus_per_node=self.cluster.gpus_per_node)  # fmt: skip

    def simulate_each(self, plans: list[Plan], loads: np.ndarray) -> SimResult:
        """``loads[n]`` through ``plans[n]`` for every ``n``: one ``SimResult`` with leading
        ``[N]``."""
        return _stack([self.simulate(p, x) for p, x in zip(plans, loads, strict=True)])

    def step_costs(
        self, candidates: list[Plan], load: np.ndarray, previous: Plan | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(step [C], migration [C])`` seconds of each candidate on the ``[L, E]`` load, priced
        exactly as the held-out batches are (``gps.advisor.ledger.price_step``: the ledger's
        mechanisms, the load taken as the strategy's belief, the sampled step scaled to the
        workload's): the step without replica copies, and what the copies from ``previous``
        add to it (exposed copy time plus the port time they take from prefetch; zero when
        ``previous`` is ``None``)."""
        scale = self.data.token_scale
        sims = _stack([self.simulate(p, load * scale) for p in candidates])
        assigned = np.stack([p.slot_expert >= 0 for p in candidates])

        def price(migration: dict[str, np.ndarray]) -> np.ndarray:
            return price_step(self.spec, self.cluster, self.workload, self.ledger,
                              StepRouting.of(sims), assigned, sims.slot_tokens,
                              migration).total_s  # fmt: skip

        t = price({})
        if previous is None:
            return t, np.zeros_like(t)
        moved = [self.migration(previous, p)[1] for p in candidates]
        ports = sorted({port for m in moved for port in m})
        nl, g = load.shape[0], self.cluster.num_gpus
        migration = {port: np.stack([m.get(port, np.zeros((nl, g))) for m in moved])
                     for port in ports}  # fmt: skip
        return t, (price(migration) - t) if migration else np.zeros_like(t)

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
        tr = TokenRouting(_scale_sim(tr.hit, factor), _scale_sim(tr.miss, factor))
    belief = None if r.belief is None else r.belief * factor
    return dataclasses.replace(r, sim=_scale_sim(r.sim, factor), token_routing=tr, belief=belief)


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
    expected: np.ndarray | None = None, free_migration: bool = False,
) -> Routed:  # fmt: skip
    """Price-ready result of ``plans[n]`` serving held-out batch ``n``; migration counted from
    ``start`` (the plan in place before the first held-out batch). ``expected [N, L, E]``: the
    loads the strategy expected (its belief: routed through the same plans); ``None``: no
    information. ``free_migration``: the bytes are recorded but cost no time (an upper
    bound)."""
    sim = ctx.simulate_each(plans, ctx.data.test_loads)
    prev = [start, *plans[:-1]]
    moved = [ctx.migration(a, b) for a, b in zip(prev, plans, strict=True)]
    per_gpu = np.stack([b for b, _ in moved])  # [N, L, G]
    out = Routed(name, family, sim, per_gpu.max(axis=-1))
    out.migration_bytes_per_gpu, out.plans = per_gpu, list(plans)
    if not free_migration:
        zero = np.zeros(per_gpu.shape[1:])
        ports = sorted({p for _, secs in moved for p in secs})
        out.migration_s = {p: np.stack([secs.get(p, zero) for _, secs in moved]) for p in ports}
    if expected is not None:
        out.belief = ctx.simulate_each(plans, expected).slot_tokens
    return out


def planned(
    ctx: Context, predicted: np.ndarray, name: str, family: str, *, lookahead: bool = False
) -> Routed:
    """Before every held-out batch, re-plan from its predicted ``[N, L, E]`` load when that
    pays (``Context.replan``), starting from ``Context.start`` (the same for every strategy).
    The predicted loads are the strategy's belief (``Routed.belief``).

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
    out = replay(ctx, plans, start, name, family, expected=predicted)
    out.notes = {"replicas": ctx.replicas, "migration_source": ctx.migration_source,
                 "horizon": ctx.horizon}  # fmt: skip
    return out


# ------------------------------------------------------------------------------ strategies


def no_balancing(ctx: Context) -> Routed:
    """Static contiguous placement, no replicas (the baseline every speed-up is over). Its
    belief is the history's mean load, which any deployment has: non-resident experts are
    prefetched in that order (``gps.advisor.ledger``), as the static placements' are, so a
    speed-up over it is never a prefetch order the baseline could have had."""
    d = ctx.data
    n = d.test_loads.shape[0]
    mean = np.broadcast_to(d.train_loads.astype(float).mean(axis=0), d.test_loads.shape)
    return replay(ctx, [ctx.static] * n, ctx.static, "no_balancing", "baseline", expected=mean)


# Families whose plan sequence serves every token copy where the real gate sends it: the
# oracle can follow any of them (with perfect knowledge), so it bounds them by construction.
FOLLOWABLE = ("baseline", "static", "periodic", "distribution", "token", "ilp", "oracle")


def perfect_knowledge(r: Routed, name: str) -> Routed:
    """``r``'s plan sequence served with perfect knowledge of every batch: its belief is the
    truth, no predictor runs, migration is paid as ``r`` pays it. Never slower than ``r``:
    every ledger mechanism is at least as fast with the truth as with any guess."""
    if r.family not in FOLLOWABLE or r.plans is None:
        raise ValueError(f"{r.name}: family {r.family!r} changes routing; it cannot be followed")
    return dataclasses.replace(
        r, name=name, family="oracle", cost=None, predictor=None, synthetic=False,
        belief=r.sim.slot_tokens, token_routing=None, wall_s={},
        notes={"follows": r.name, **{k: v for k, v in r.notes.items() if k != "follows"}},
    )  # fmt: skip


def oracle(ctx: Context) -> Routed:
    """Duplication planned from each batch's *actual* load with a perfect multi-step forecast
    (its keep-or-switch rule sees the next ``horizon - 1`` batches), migration paid. The
    advisor's ``oracle`` entry is the fastest of this and every deployable strategy's plan
    sequence served with perfect knowledge (``perfect_knowledge``, ``fastest``), so it is never
    behind any of them by construction."""
    out = planned(ctx, ctx.data.test_loads, "oracle", "oracle", lookahead=True)
    out.accuracy = distribution_accuracy(ctx.data.test_loads, ctx.data.test_loads)
    return out


def fastest(candidates: list[Routed], totals: np.ndarray, name: str) -> Routed:
    """The candidate with the lowest mean of ``totals [C, N]`` (step seconds per batch),
    renamed ``name``; its notes say which plan sequence it follows."""
    best = candidates[int(np.argmin(np.asarray(totals).mean(axis=1)))]
    return dataclasses.replace(
        best, name=name, notes={**best.notes, "follows": best.notes.get("follows", best.name)}
    )


def free_migration_candidates(ctx: Context, routed: list[Routed]) -> list[Routed]:
    """What ``oracle_free_migration`` picks from, batch by batch: the ``spare`` plan, the full
    re-pack and static placement planned from each batch's *actual* load, and every plan any
    strategy of ``routed`` served that batch with (what-if predictors included), all with
    perfect knowledge and replica copies free (bytes recorded, no time charged). ``routed``
    are already ``scaled`` to the step, and so are the candidates."""
    actual = ctx.data.test_loads
    own = [
        [ctx.plan(x, None, replicas="spare") for x in actual],
        [ctx.plan(x, None, replicas="repack") for x in actual],
        [ctx.static] * len(actual),
    ]
    start = ctx.start()
    out = [scaled(replay(ctx, plans, start, f"actual_{kind}", "oracle", expected=actual,
                         free_migration=True), ctx.data.token_scale)
           for plans, kind in zip(own, ("spare", "repack", "static"), strict=True)]  # fmt: skip
    for r in routed:
        if r.family in FOLLOWABLE and r.plans is not None:
            out.append(dataclasses.replace(perfect_knowledge(r, r.name), migration_s={},
                                           rebalance_s=0.0))  # fmt: skip
    return out


def per_batch_fastest(candidates: list[Routed], totals: np.ndarray, name: str) -> Routed:
    """Batch ``n`` served by the candidate with the lowest ``totals[:, n]`` (``[C, N]`` step
    seconds): a ``Routed`` assembled batch by batch (valid because candidates carry no
    migration, so batches are priced independently)."""
    pick = np.asarray(totals).argmin(axis=0)  # [N]
    n = np.arange(len(pick))

    def take(field_name: str) -> np.ndarray:
        return np.stack(
            [getattr(candidates[c], field_name)[i] for i, c in zip(n, pick, strict=True)]
        )

    first = candidates[0]
    sim = SimResult(**{f: (first.sim.token_bytes if f == "token_bytes" else
                           np.stack([getattr(candidates[c].sim, f)[i]
                                     for i, c in zip(n, pick, strict=True)]))
                       for f in first.sim.__dataclass_fields__})  # fmt: skip
    out = Routed(name, "oracle", sim, take("migration_bytes"))
    out.migration_bytes_per_gpu = take("migration_bytes_per_gpu")
    out.plans = [candidates[c].plans[i] for i, c in zip(n, pick, strict=True)]
    out.belief = sim.slot_tokens
    out.notes = {"migration": "free (bytes recorded, not charged)",
                 "follows": [candidates[c].notes.get("follows", candidates[c].name)
                             for c in pick]}  # fmt: skip
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
    plans, prev, forecast = [], start, []
    for n in range(d.test_loads.shape[0]):
        recent = seen[max(0, m + n - window) : m + n].mean(axis=0)
        if (m + n) % interval == 0:
            prev = ctx.plan(recent, prev, replicas="repack")
        plans.append(prev)
        forecast.append(recent)  # what it knows of the batch: the window mean
    out = replay(ctx, plans, start, f"eplb_every_{interval}", "periodic",
                 expected=np.stack(forecast))  # fmt: skip
    out.notes = {"replan_interval": interval, "history_window": window}
    return out


def eplb_redundant(ctx: Context) -> list[int]:
    """The redundant-expert counts an EPLB placement of this run can take: the fewest the
    engines accept (``(E + R) % ranks == 0``: 0 when ``E`` divides over the expert-parallel
    ranks) and the most the run's slots hold (``slots_per_gpu x ranks - E``)."""
    e, ranks = ctx.data.num_experts, ctx.num_ranks
    return sorted({(-e) % ranks, ctx.slots_per_gpu * ranks - e})


def padded(plan: Plan, slots_per_gpu: int) -> Plan:
    """``plan`` with empty slots (``-1``) appended up to ``slots_per_gpu`` per GPU, so that
    every strategy's plans share one slot axis ``R`` (the ceiling compares them batch by batch).

    Raises:
        ValueError: ``plan`` already has more slots per GPU.
    """
    pad = slots_per_gpu - plan.slots_per_gpu
    if pad < 0:
        raise ValueError(f"plan has {plan.slots_per_gpu} slots per GPU, more than {slots_per_gpu}")
    if pad == 0:
        return plan
    slots = np.pad(plan.slot_expert, ((0, 0), (0, 0), (0, pad)), constant_values=-1)
    home = None if plan.home is None else np.pad(plan.home, ((0, 0), (0, 0), (0, pad)))
    return Plan(slots, plan.num_experts, meta=plan.meta, home=home)


def eplb_plan(ctx: Context, load: np.ndarray, num_redundant: int) -> Plan:
    """The engines' EPLB placement (``gps.plans.eplb_placement``: a balanced full re-layout,
    ``R`` redundant copies, no contiguous homes) of an ``[L, E]`` load over the
    expert-parallel ranks, padded with empty slots to ``slots_per_gpu`` and placed on the
    GPUs (``Context.on_gpus``)."""
    plan = eplb_placement(np.asarray(load, dtype=float), ctx.num_ranks, num_redundant)
    if plan.slots_per_gpu > ctx.slots_per_gpu:
        raise ValueError(f"eplb_plan: R={num_redundant} needs more than {ctx.slots_per_gpu} "
                         "slots per GPU")  # fmt: skip
    return ctx.on_gpus(padded(plan, ctx.slots_per_gpu))


def static_eplb(ctx: Context, num_redundant: int) -> Routed:
    """Static placement from recorded statistics, as SGLang's ``--init-expert-location``
    deploys it: one EPLB placement of the history's mean load with ``num_redundant`` redundant
    experts (0 included: a balanced re-placement, not contiguous homes), kept for every
    held-out batch. Its belief is the history's mean."""
    d = ctx.data
    mean = d.train_loads.astype(float).mean(axis=0)
    plan = eplb_plan(ctx, mean, num_redundant)
    n = d.test_loads.shape[0]
    expected = np.broadcast_to(mean, d.test_loads.shape)
    out = replay(ctx, [plan] * n, plan, f"static_eplb_r{num_redundant}", "static",
                 expected=expected)  # fmt: skip
    out.notes = {"num_redundant_experts": num_redundant, "history_steps": d.train_loads.shape[0],
                 "planner": "eplb_placement"}  # fmt: skip
    return out


@dataclass(frozen=True)
class EplbCadence:
    """How a deployed periodic EPLB runs (``strategy.eplb_*``, else the engine profile's
    ``eplb_*`` defaults, ``gps.engine.EngineEplb``).

    Attributes:
        window: statistics window (steps) each rebalance plans from.
        interval: steps between rebalances.
        asynchronous: rebalances run beside serving (the new placement lands ``lag`` steps
            later, only ``costs.async_exposed_fraction`` of the transfer shows).
        costs: the engine's rebalance costs (``gps.plans.rebalance.RebalanceCosts``).
    """

    window: int
    interval: int
    asynchronous: bool
    costs: RebalanceCosts

    def __post_init__(self) -> None:
        if self.window < 1 or self.interval < 1:
            raise ValueError(f"strategy.eplb_window={self.window} / eplb_interval="
                             f"{self.interval}: must be >= 1")  # fmt: skip


def engine_eplb(ctx: Context, cadence: EplbCadence) -> Routed:
    """Periodic EPLB as the engines deploy it: every ``interval`` steps an EPLB placement
    (all of the run's slots filled: ``eplb_redundant``'s largest ``R``) of the mean load of the
    last ``window`` steps served (``gps.advisor.eplb.schedules.periodic_schedule``, the same
    schedule ``gps-eplb`` prices). The first plan, from the history, is in place at the first
    held-out batch (steady state); a later one serves from when its rebalance lands
    (asynchronous: the stall model's lag in steps). Each rebalance's stall
    (``gps.plans.rebalance``: synchronous, the host time, transfers and per-layer shuffle;
    asynchronous, the exposed share of the transfers) is amortised over the interval and
    added to every step (``Routed.rebalance_s``); its copies take no port time otherwise.
    Without a rebalance inside the held-out span (an interval longer than the span) the
    stall is that of one representative rebalance: from the first plan to the plan of the
    window ending at the span's last step."""
    d, r = ctx.data, eplb_redundant(ctx)[-1]
    history, loads = d.train_loads.astype(float), d.test_loads.astype(float)
    m, n = history.shape[0], loads.shape[0]
    w, i = cadence.window, cadence.interval
    sync = not cadence.asynchronous
    first = eplb_plan(ctx, history[-w:].mean(axis=0), r)
    last = eplb_plan(ctx, np.concatenate([history, loads])[-w:].mean(axis=0), r)

    def stall(plans: list[Plan]):
        return mean_stall(plans, ctx.expert_bytes, ctx.cluster, cadence.costs, synchronous=sync)

    step_s = float(ctx.step_costs([first], history.mean(axis=0), None)[0][0])  # lag in steps
    lag = lag_steps(stall([first, last]).lag_s, step_s, sync)
    sched = periodic_schedule(history, loads, w, i, ctx.num_ranks, r, lag_steps=lag)
    on_gpus = [padded(ctx.on_gpus(p), ctx.slots_per_gpu) for p in sched.plans]
    bounds = [*sched.starts[1:], n]
    plans = [p for a, b, p in zip(sched.starts, bounds, on_gpus, strict=True) for _ in range(a, b)]
    seen = np.concatenate([history, loads])
    expected = np.stack([seen[max(0, m + k - w) : m + k].mean(axis=0) for k in range(n)])
    rebalance = stall(on_gpus if len(on_gpus) > 1 else [first, last])
    mode = "sync" if sync else "async"
    out = replay(ctx, plans, plans[0], f"eplb_w{w}_i{i}_{mode}", "periodic", expected=expected,
                 free_migration=True)  # fmt: skip
    out.rebalance_s = rebalance.stall_s / i
    out.notes = {
        "window_steps": w, "interval_steps": i, "asynchronous": not sync,
        "num_redundant_experts": r, "rebalances_in_span": len(sched.starts) - 1,
        "stall_s_per_rebalance": rebalance.stall_s, "lag_steps": lag,
        "bytes_per_gpu_per_rebalance": rebalance.bytes_per_gpu,
        "rebalance_costs": cadence.costs.engine, "window_used_steps": min(w, m),
    }  # fmt: skip
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
    load = pred * (d.tokens_per_batch * d.top_k)  # proportions -> expected token copies
    out = planned(ctx, load, f"distribution:{name}", "distribution")
    out.cost, out.predictor = model.cost(), name
    out.accuracy = distribution_accuracy(pred, d.test_loads)
    out.wall_s = {**wall, "cached": not computed}
    return out


def from_guesses(ctx: Context, copies: CopySplit, name: str) -> Routed:
    """A Token-to-Expert strategy from the ``CopySplit`` of its guesses: duplication planned
    from their ``[N, L, E]`` histogram (also its belief, the order it prefetches non-resident
    experts in), ``token_routing`` recording which copies it named, and ``accuracy``'s
    ``topk_hit_rate`` (hit copies / routed copies; ``1.0`` with no copies). The caller sets
    the predictor's ``cost`` and ``synthetic``."""
    out = planned(ctx, copies.guessed, name, "token")
    out.token_routing = token_routing(ctx, out.plans, copies)
    copied = float((copies.hit + copies.miss).sum())
    out.accuracy = {"topk_hit_rate": float(copies.hit.sum()) / copied if copied else 1.0}
    return out


def token(
    ctx: Context,
    name: str,
    params: dict,
    model: TokenPredictor | None = None,
    copies: CopySplit | None = None,
) -> Routed:
    """A Token-to-Expert predictor guesses every held-out token's top-k; the plan uses the
    histogram of its guesses (also its belief: the order it prefetches non-resident experts
    in), and ``token_routing`` records which copies it named (what the MoE-GPS paper's
    skip-the-scatter assumption prices: hits in place, misses in a corrective all-to-all).
    The fitted predictor, its ``CopySplit`` and the accuracy are cached (``gps.cache`` kind
    ``predictors``).

    ``model``: an already fitted estimator (what-if sweeps; not cached) and ``copies``: the
    ``CopySplit`` of its held-out guesses (``whatif_runs``); then nothing is fitted or
    predicted, and the accuracy is the copies' top-k hit rate (``from_guesses``)."""
    d = ctx.data
    if copies is not None:
        if model is None:
            raise ValueError("token: copies need the model that guessed them")
        out = from_guesses(ctx, copies, f"token:{name}")
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
    out = from_guesses(ctx, split, f"token:{name}")
    out.cost, out.predictor, out.synthetic = model.cost(), name, bool(model.synthetic)
    out.accuracy = dict(accuracy)  # measured on the guesses themselves
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
    plan = padded(Plan(plan.slot_expert[:, gpu_group, :], e, meta=plan.meta),  # group's GPUs
                  ctx.slots_per_gpu)  # fmt: skip
    n = d.test_loads.shape[0]
    mean = np.broadcast_to(d.train_loads.mean(axis=0), d.test_loads.shape)  # what it knows
    out = replay(ctx, [plan] * n, plan, name, "ilp", expected=mean)
    out.notes = {**notes, "gpu_groups": groups, "stages": stages}
    return out
