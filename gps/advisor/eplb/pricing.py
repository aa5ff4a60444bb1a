"""The pricing seam of ``gps-eplb`` and the step-time model built on it.

:func:`price_slot_tokens` is **the pricing seam**: every call ``gps-eplb`` makes into the cost
model goes through it, and it prices exactly as the ``gps`` advisor prices a held-out batch:
``gps.advisor.ledger.price_step`` under the run's :class:`~gps.advisor.ledger.Ledger` (its
engine profile's per-step scheduler and sampling time, launch mode, all-to-all and overlap
modes with the SMs the all-to-all holds under two-batch overlap, the post-gate chunked
dispatch and the attention window of ``cfg.strategy``). Every strategy of ``gps-eplb`` is
priced through it alike.

:func:`step_time_model` prices, once per pool and slot count, a grid of per-layer load ratios
(busiest GPU / mean copies); a step's seconds are then the fixed part (non-MoE layers plus the
engine's per-step time) plus each MoE layer's seconds at its ratio, interpolated on the grid.

Shapes: ``L`` MoE layers, ``G`` GPUs, ``R`` slots per GPU, ``K`` grid ratios. Units: seconds,
token copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gps.advisor.ledger import Ledger, price_step
from gps.cost._common import num_moe_layers
from gps.cost.e2e import CostBreakdown, step_setting
from gps.cost.step import StepRouting
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import Workload


def check_ledger(ledger: Ledger) -> None:
    """``gps-eplb`` prices HBM-resident experts under pure expert parallelism over all GPUs.

    Raises:
        ValueError: naming ``strategy.resident_experts`` or ``parallel`` otherwise.
    """
    if ledger.resident_experts < 1.0:
        raise ValueError(
            f"strategy.resident_experts={ledger.resident_experts}: gps-eplb prices experts "
            "resident in HBM (1.0)"
        )
    if ledger.parallel is not None:
        raise ValueError(
            f"parallel={ledger.parallel.name!r}: gps-eplb prices expert parallelism over all "
            "GPUs (parallel=ep), the layout the engines' EPLB balances"
        )


def price_slot_tokens(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    ledger: Ledger,
    slot_tokens: np.ndarray,
) -> CostBreakdown:
    """THE PRICING SEAM of ``gps-eplb``: the one call into the cost model.

    Args:
        spec, cluster, workload: model, hardware, the pool's step.
        ledger: the run's mechanism switches and engine profile (``check_ledger``).
        slot_tokens: ``[..., L, G, R]`` token copies per expert slot (float).

    Returns:
        ``gps.advisor.ledger.price_step``'s :class:`~gps.cost.e2e.CostBreakdown` of the step
        (dispatch traffic derived with data-parallel token sources, no belief, no replica
        copies: a rebalance's cost is the stall model's, ``gps.plans.rebalance``).
    """
    check_ledger(ledger)
    routing = StepRouting(slot_tokens=np.asarray(slot_tokens, dtype=float))
    return price_step(spec, cluster, workload, ledger, routing, np.asarray(True), None, {})


@dataclass(frozen=True)
class StepTimeModel:
    """Step seconds as a function of each MoE layer's busiest-GPU / mean load ratio.

    Attributes:
        ratios: ``[K]`` increasing grid of ratios (``ratios[0] = 1``: balanced).
        layer_s: ``[K]`` seconds of one MoE layer at each ratio (non-decreasing).
        fixed_s: seconds of the step outside the MoE layers: non-MoE layers plus ``engine_s``.
        engine_s: of which the engine's per-step scheduler and sampling time.
        num_layers: ``L``.
        slots_per_gpu: expert slots per GPU it was priced with.
    """

    ratios: np.ndarray
    layer_s: np.ndarray
    fixed_s: float
    engine_s: float
    num_layers: int
    slots_per_gpu: int

    def layer_seconds(self, x: np.ndarray) -> np.ndarray:
        """``[...]`` seconds of layers at ratios ``x [...]`` (clipped to the grid)."""
        return np.interp(np.asarray(x, dtype=float), self.ratios, self.layer_s)

    def step_s(self, x: np.ndarray) -> np.ndarray:
        """``[...]`` seconds of steps whose layers have ratios ``x [..., L]``."""
        return self.fixed_s + self.layer_seconds(x).sum(axis=-1)

    @property
    def balanced_step_s(self) -> float:
        """A perfectly balanced step (every layer at ratio 1), seconds."""
        return float(self.fixed_s + self.num_layers * self.layer_s[0])


def busy_slots(spec: MoEModelSpec, workload: Workload, slots: int) -> int:
    """Slots of a GPU expected busy in a step: an expert idles with probability
    ``(1 - k/E)^T`` for ``T`` tokens of ``k`` copies (at least 1, at most ``slots``)."""
    busy = slots * -math.expm1(
        workload.tokens_per_step * math.log1p(-spec.top_k / spec.num_experts)
    )
    return max(1, min(slots, round(busy)))


def ratio_slot_tokens(
    spec: MoEModelSpec, cluster: Cluster, workload: Workload, slots: int, ratios: np.ndarray
) -> np.ndarray:
    """``[..., G, slots]`` slot copies with GPU 0 at ``ratio x`` the mean (``ratios [...]``,
    capped at ``G``), the others sharing the rest evenly, each GPU's copies spread evenly over
    its ``busy_slots`` first slots."""
    g = cluster.num_gpus
    mean = workload.tokens_per_step * spec.top_k / g
    x = np.minimum(np.asarray(ratios, dtype=float), g)
    gpu = np.empty((*x.shape, g))
    gpu[..., 0] = x * mean
    gpu[..., 1:] = ((g - x) * mean / max(g - 1, 1))[..., None]
    busy = busy_slots(spec, workload, slots)
    out = np.zeros((*x.shape, g, slots))
    out[..., :busy] = (gpu / busy)[..., None]
    return out


def step_time_model(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    ledger: Ledger,
    slots_per_gpu: int,
    max_ratio: float,
) -> StepTimeModel:
    """Price a grid of load ratios up to ``max_ratio`` through :func:`price_slot_tokens` (one
    call).

    Without two-batch overlap (the overlap the engine runs for the phase, else the
    workload's: ``gps.cost.e2e.step_setting``) every MoE layer is priced on its own, so one
    step whose ``L`` layers sit at ``L`` different ratios gives the whole grid; with
    ``two_batch`` (layers coupled through the micro-batch pipeline) each of 12 ratios is a
    step of identical layers and a layer's seconds are that step's per-layer mean.
    """
    lm, g = num_moe_layers(spec), cluster.num_gpus
    top = float(min(max(max_ratio, 1.0) * 1.02 + 1e-9, g))
    overlap = step_setting(cluster, workload, ledger.engine, True)[1].overlap
    if overlap == "none" and lm >= 4:
        grid = np.concatenate([[1.0], np.geomspace(1.0, top, lm)[1:]]) if top > 1 else np.ones(lm)
        st = ratio_slot_tokens(spec, cluster, workload, slots_per_gpu, grid)[None]  # [1, L, G, R]
        cost = price_slot_tokens(spec, cluster, workload, ledger, st)
        layer = np.asarray(cost.per_layer_s)[0]
    else:
        grid = np.geomspace(1.0, max(top, 1.0 + 1e-6), 12)
        st = ratio_slot_tokens(spec, cluster, workload, slots_per_gpu, grid)  # [K, G, R]
        st = np.broadcast_to(st[:, None], (grid.size, lm, *st.shape[1:]))
        cost = price_slot_tokens(spec, cluster, workload, ledger, st)
        layer = np.asarray(cost.per_layer_s).mean(axis=-1)
    non_moe = float(np.asarray(cost.non_moe_s).ravel()[0])
    engine = float(np.asarray(cost.engine_s).ravel()[0])
    order = np.argsort(grid, kind="stable")
    grid, layer = grid[order], layer[order]
    keep = np.concatenate([[True], np.diff(grid) > 0])
    return StepTimeModel(
        ratios=grid[keep],
        layer_s=np.maximum.accumulate(layer[keep]),
        fixed_s=non_moe + engine,
        engine_s=engine,
        num_layers=lm,
        slots_per_gpu=slots_per_gpu,
    )
