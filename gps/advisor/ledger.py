"""The advisor's side of the mechanism ledger (``gps.cost.ledger.LEDGER``): a run's switches,
and what a strategy's information buys under them, as the ``StepExtras`` pricing takes.

One ``Ledger`` per run (``cfg.strategy``) serves every strategy alike:

* post-gate mechanisms (nearest-replica dispatch, chunked dispatch) need only the real routing,
  so every strategy gets them, the baseline included;
* pre-gate mechanisms need a belief about the batch: a strategy's ``belief [N, L, G, R]`` is
  the slot loads it expected (its forecast or guesses routed through its plan; the truth for
  the oracle; ``None`` for a strategy without one). Prefetch fetches slots in the order of that
  belief; without one, every slot of the plan shares the port evenly.

The same function prices the keep-or-switch rule's candidates (on the strategy's own
forecast) and the final held-out batches, so the rule weighs exactly what is charged.

Shapes: ``N`` batches (or candidates), ``L`` MoE layers, ``G`` GPUs, ``R`` slots per GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gps.cost.e2e import CostBreakdown, batch_cost
from gps.cost.parallel import ParallelConfig, check_tp
from gps.cost.step import Prefetch, StepExtras, StepRouting, check_port
from gps.engine import IDEAL, EngineProfile
from gps.hardware import Cluster, LinkProfile
from gps.model import MoEModelSpec
from gps.plans import expert_weight_bytes
from gps.simulate import SPLITS
from gps.workload import Workload


def resident_slots(num_slots: int, resident_fraction: float) -> np.ndarray:
    """``[R]`` bool: the first ``round(resident_fraction * R)`` slots of every GPU keep their
    expert's weights in HBM (home slots come first in a plan); the rest live in host memory."""
    if not 0.0 <= resident_fraction <= 1.0:
        raise ValueError(f"strategy.resident_experts={resident_fraction}: must be in [0, 1]")
    return np.arange(num_slots) < round(resident_fraction * num_slots)


@dataclass(frozen=True)
class Ledger:
    """A run's mechanism switches (``cfg.strategy``; ``docs/cost_model.md``, the ledger).

    Attributes:
        replica_choice: post-gate nearest-replica dispatch: every strategy's dispatcher sends a
            copy of a replicated expert to the replica on its own GPU, else its node
            (``split="locality"``); ``False``: ``split`` decides.
        split: the dispatcher's replica split without ``replica_choice`` (``even``/``locality``).
        dispatch_chunks: post-gate chunked dispatch for every strategy (``1``: off).
        prefetch: non-resident expert weights are fetched before the gate in the order of each
            strategy's belief; ``False``: only after the gate, when the batch's slots are known.
        resident_experts: fraction of every GPU's slots whose weights stay in HBM, [0, 1].
        fetch_link: the link non-resident weights cross (needed when ``resident_experts < 1``).
        fetch_port: the GPU port that link is (``gps.cost.step.PORTS``; shares its budget).
        window: fraction of attention during which ports carry the coming MoE block's work
            (``strategy.migration_overlap``), [0, 1].
        engine: the serving engine every strategy's steps run on (``cfg.engine``,
            ``gps.engine``): its per-step costs, communication modes and launch mode enter
            every strategy's step alike.
        parallel: the run's parallel layout (``cfg.parallel``), the same for every strategy:
            its ranks hold the plans' slots (``Context.on_gpus``) and ``batch_cost`` prices
            the layout (expert tensor parallelism as real TP, attention as the layout places
            it); ``None``: pure expert parallelism over all GPUs.
    """

    replica_choice: bool = True
    split: str = "even"
    dispatch_chunks: int = 1
    prefetch: bool = True
    resident_experts: float = 1.0
    fetch_link: LinkProfile | None = None
    fetch_port: str = "host"
    window: float = 1.0
    engine: EngineProfile = IDEAL
    parallel: ParallelConfig | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"strategy.split={self.split!r}: expected one of {SPLITS}")
        for key in ("window", "resident_experts"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                name = "migration_overlap" if key == "window" else key
                raise ValueError(f"strategy.{name}={getattr(self, key)}: must be in [0, 1]")
        if self.resident_experts < 1.0 and self.fetch_link is None:
            raise ValueError("strategy.resident_experts < 1 needs strategy.expert_fetch_link")
        check_port(self.fetch_port, "strategy.expert_fetch_link's port")
        if self.parallel is not None and self.parallel.tp is not None:
            check_tp(self.parallel.tp)
        StepExtras(dispatch_chunks=self.dispatch_chunks)  # validates the chunk count

    @property
    def expert_tp(self) -> int:
        """GPUs each expert's width is split over (the layout's ``tp``: an integer >= 1, checked
        when the ledger is built, as ``gps.cost.parallel.resolve_layout`` checks it when the
        step is priced); ``1`` without a layout."""
        return 1 if self.parallel is None else self.parallel.tp

    @property
    def dispatch_split(self) -> str:
        """The replica split every strategy's dispatcher uses (post-gate: the same for all)."""
        return "locality" if self.replica_choice else self.split

    def extras(
        self,
        spec: MoEModelSpec,
        slot_tokens: np.ndarray,
        assigned: np.ndarray,
        belief: np.ndarray | None,
        migration_s: Mapping[str, np.ndarray],
        predictor_s: float | np.ndarray = 0.0,
        predictor_on_critical_path: bool = True,
    ) -> StepExtras:
        """``StepExtras`` of one strategy.

        Args:
            spec: the model (one expert's weight bytes; a GPU of an expert-TP rank fetches
                ``1/expert_tp`` of them, its slice of the width, as replica copies do).
            slot_tokens: ``[..., L, G, R]`` the copies each slot actually processes.
            assigned: ``[..., L, G, R]`` bool, the slots the plan fills (broadcastable).
            belief: ``[..., L, G, R]`` the copies the strategy expected per slot, or ``None``.
            migration_s: port -> ``[..., L, G]`` seconds of replica copies.
            predictor_s, predictor_on_critical_path: the predictor's time and placement.
        """
        prefetch = None
        if self.resident_experts < 1.0:
            busy = np.asarray(slot_tokens) > 0
            assigned = np.broadcast_to(np.asarray(assigned, dtype=bool), busy.shape)
            if not self.prefetch:
                score = np.full(busy.shape, -np.inf)  # nothing moves before the gate
            elif belief is None:
                score = np.where(assigned, 0.0, -np.inf)  # every slot of the plan alike
            else:
                score = np.where(assigned, np.broadcast_to(belief, busy.shape), -np.inf)
            prefetch = Prefetch(
                busy, score, resident_slots(busy.shape[-1], self.resident_experts),
                expert_weight_bytes(spec) / self.expert_tp, self.fetch_link, self.fetch_port,
            )  # fmt: skip
        return StepExtras(
            predictor_s=predictor_s, predictor_on_critical_path=predictor_on_critical_path,
            window=self.window, migration_s=dict(migration_s), prefetch=prefetch,
            dispatch_chunks=self.dispatch_chunks,
        )  # fmt: skip


def price_step(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    ledger: Ledger,
    routing: StepRouting,
    assigned: np.ndarray,
    belief: np.ndarray | None,
    migration_s: Mapping[str, np.ndarray],
) -> CostBreakdown:
    """``batch_cost`` of ``routing`` under ``ledger`` with the strategy's belief and replica
    copies (no predictor): what the keep-or-switch rule compares candidates by."""
    extras = ledger.extras(spec, routing.slot_tokens, assigned, belief, migration_s)
    return batch_cost(spec, cluster, workload, routing, extras, engine=ledger.engine,
                      parallel=ledger.parallel)  # fmt: skip
