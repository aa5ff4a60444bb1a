"""``gps-eplb``'s analysis: from an engine's load statistics to EPLB settings (``docs/eplb.md``).

For one serving pool (a workload: prefill or decode) on a model and cluster, from recorded
per-step expert loads (:class:`~gps.traces.engine_stats.EngineLoadStats`):

1. **Loads** (:func:`pool_loads`): the recorded steps split into history (what a static
   placement and the first EPLB window are planned from) and evaluation steps; each
   evaluation step becomes the pool's step: the recorded counts rescaled when the recorded
   step holds about as many token copies as the pool's step (``recorded_tolerance``), else a
   draw of the per-batch fluctuation model (``gps.traces.fluctuation``) around the recorded
   proportions (a moving mean over as many recorded steps as one pool step holds).
2. **Strategies**, each a schedule of plans replayed on the same loads: no balancing (the
   engines' contiguous start layout), static placement from the history
   (``gps.plans.eplb_placement``, ``R`` redundant experts), periodic EPLB (window ``W``,
   interval ``I``: re-plan from the mean of the last ``W`` steps every ``I`` steps, each
   rebalance's stall from ``gps.plans.rebalance``), predictive re-planning (the same schedule
   planned from a moe-gps Distribution-Only predictor's forecast) and dispatch-time
   balancing (the static placement, each batch's copies of a replicated expert sent to its
   least-loaded replicas: water-filling, LPLB-style).
3. **Pricing** through one function, :func:`price_slot_tokens` -- *the pricing seam*: every
   call into the cost model goes through it. Per pool and slot count it prices a grid of
   per-layer load ratios (busiest GPU / mean) once (:func:`step_time_model`); a step's time
   is the non-MoE time plus each layer's time at its ratio (linear interpolation on the
   grid). With data-parallel attention a layer's expert time and dispatch peak are set by
   its busiest GPU, so the ratio is what the cost model sees of the placement
   (``tests/test_eplb.py`` checks the interpolation against direct pricing).
4. **Curves**: speed-up against redundant experts (with the HBM, KV-cache tokens and
   concurrency each costs, ``gps.cost.redundancy``), and step time against the rebalance
   interval for each window: the mean step time of steps served ``h`` steps after a plan
   (a plan's age), accumulated to the interval, plus one rebalance's stall amortised over it
   (:func:`interval_curve`); the drift of the recorded loads (a window mean's forecast error
   ``h`` steps ahead, :func:`window_drift`) beside it.
5. **Verdict**: the fastest deployable strategy, with its speed-up over no balancing and a
   95% interval (block bootstrap over evaluation steps, seeded); strategies within
   ``tie_margin`` count as tied and the simplest wins.

Shapes: ``S`` steps, ``L`` MoE layers, ``E`` experts, ``G`` GPUs, ``R`` slots per GPU.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from gps.cost._common import num_moe_layers
from gps.cost.e2e import CostBreakdown, batch_cost
from gps.cost.redundancy import (
    kv_capacity_tokens,
    kv_tokens_lost,
    max_concurrency,
    redundant_bytes_per_rank,
    valid_redundant,
)
from gps.cost.step import StepRouting
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.plans.eplb_placement import eplb_placement, trivial_placement
from gps.plans.plan import Plan, expert_weight_bytes
from gps.plans.rebalance import ENGINE_COSTS, RebalanceCosts, rebalance_stall
from gps.traces.engine_stats import EngineLoadStats
from gps.traces.fluctuation import FluctuationModel
from gps.workload import Workload

STRATEGIES = ("no_balancing", "static", "periodic", "predictive", "dispatch")
#: simplest first: a tie goes to the earliest
SIMPLICITY = {name: i for i, name in enumerate(STRATEGIES)}

#: The engines' defaults (sources in ``docs/eplb.md``, "Flags").
ENGINE_DEFAULTS: dict[str, dict] = {
    "vllm": {
        "window_steps": 1000,
        "interval_steps": 3000,
        "synchronous": False,
        "source": "vLLM EPLBConfig (vllm/config/parallel.py @00193b82): window_size 1000, "
        "step_interval 3000, num_redundant_experts 0, use_async true",
    },
    "sglang": {
        "window_steps": 1000,
        "interval_steps": 1000,
        "synchronous": True,
        "source": "SGLang server_args.py / server_arguments.md: "
        "--eplb-rebalance-num-iterations 1000, recorder buffer = that "
        "interval, --ep-num-redundant-experts 0",
    },
}


# --------------------------------------------------------------------- the pricing seam


def price_slot_tokens(
    spec: MoEModelSpec, cluster: Cluster, workload: Workload, slot_tokens: np.ndarray
) -> CostBreakdown:
    """THE PRICING SEAM of ``gps-eplb``: the one call into the cost model.

    ``slot_tokens [..., L_moe, G, R]`` token copies per expert slot -> the cost model's
    :class:`~gps.cost.e2e.CostBreakdown` (dispatch traffic derived with data-parallel token
    sources). Re-point this function (and only it) to price with another cost model, e.g.
    a mechanism ledger or engine profiles with per-step overheads.
    """
    return batch_cost(spec, cluster, workload, StepRouting(slot_tokens=slot_tokens))


@dataclass(frozen=True)
class StepTimeModel:
    """Step seconds as a function of each MoE layer's busiest-GPU / mean load ratio.

    Attributes:
        ratios: ``[K]`` increasing grid of ratios (``ratios[0] = 1``: balanced).
        layer_s: ``[K]`` seconds of one MoE layer at each ratio.
        non_moe_s: seconds of the step outside the MoE layers.
        num_layers: ``L_moe``.
        slots_per_gpu: expert slots per GPU it was priced with.
    """

    ratios: np.ndarray
    layer_s: np.ndarray
    non_moe_s: float
    num_layers: int
    slots_per_gpu: int

    def layer_seconds(self, x: np.ndarray) -> np.ndarray:
        """``[...]`` seconds of layers at ratios ``x`` (clipped to the grid)."""
        return np.interp(np.asarray(x, dtype=float), self.ratios, self.layer_s)

    def step_s(self, x: np.ndarray) -> np.ndarray:
        """``[...]`` seconds of steps whose layers have ratios ``x [..., L]``."""
        return self.non_moe_s + self.layer_seconds(x).sum(axis=-1)

    @property
    def balanced_step_s(self) -> float:
        """A perfectly balanced step (every layer at ratio 1)."""
        return float(self.non_moe_s + self.num_layers * self.layer_s[0])


def _busy_slots(spec: MoEModelSpec, workload: Workload, slots: int) -> int:
    """Slots of a GPU expected busy in a step (an expert idles with ``(1 - k/E)^T``)."""
    busy = slots * -math.expm1(
        workload.tokens_per_step * math.log1p(-spec.top_k / spec.num_experts)
    )
    return max(1, min(slots, round(busy)))


def _ratio_slot_tokens(
    spec: MoEModelSpec, cluster: Cluster, workload: Workload, slots: int, ratios: np.ndarray
) -> np.ndarray:
    """``[..., G, slots]`` slot tokens with GPU 0 at ``ratio x`` the mean and the others
    sharing the rest evenly, busy slots filled evenly."""
    g = cluster.num_gpus
    mean = workload.tokens_per_step * spec.top_k / g
    x = np.minimum(np.asarray(ratios, dtype=float), g)
    gpu = np.empty((*x.shape, g))
    gpu[..., 0] = x * mean
    gpu[..., 1:] = ((g - x) * mean / max(g - 1, 1))[..., None]
    busy = _busy_slots(spec, workload, slots)
    out = np.zeros((*x.shape, g, slots))
    out[..., :busy] = (gpu / busy)[..., None]
    return out


def step_time_model(
    spec: MoEModelSpec, cluster: Cluster, workload: Workload, slots_per_gpu: int, max_ratio: float
) -> StepTimeModel:
    """Price a grid of load ratios through :func:`price_slot_tokens` (one call).

    Without two-batch overlap every MoE layer is priced on its own, so one step whose ``L``
    layers sit at ``L`` different ratios gives the whole grid; with ``overlap="two_batch"``
    (layers coupled) each of 12 ratios is a step of identical layers.
    """
    lm, g = num_moe_layers(spec), cluster.num_gpus
    top = float(min(max(max_ratio, 1.0) * 1.02 + 1e-9, g))
    if workload.overlap == "none" and lm >= 4:
        grid = np.concatenate([[1.0], np.geomspace(1.0, top, lm)[1:]]) if top > 1 else np.ones(lm)
        cost = price_slot_tokens(
            spec,
            cluster,
            workload,
            _ratio_slot_tokens(spec, cluster, workload, slots_per_gpu, grid)[None],
        )
        layer = np.asarray(cost.per_layer_s)[0]
        non_moe = float(np.asarray(cost.non_moe_s).ravel()[0])
    else:
        grid = np.geomspace(1.0, max(top, 1.0 + 1e-6), 12)
        st = _ratio_slot_tokens(spec, cluster, workload, slots_per_gpu, grid)  # [K, G, R]
        st = np.broadcast_to(st[:, None], (grid.size, lm, *st.shape[1:]))
        cost = price_slot_tokens(spec, cluster, workload, st)
        layer = np.asarray(cost.per_layer_s).mean(axis=-1)
        non_moe = float(np.asarray(cost.non_moe_s).ravel()[0])
    order = np.argsort(grid, kind="stable")
    grid, layer = grid[order], layer[order]
    keep = np.concatenate([[True], np.diff(grid) > 0])
    return StepTimeModel(
        ratios=grid[keep],
        layer_s=np.maximum.accumulate(layer[keep]),
        non_moe_s=non_moe,
        num_layers=lm,
        slots_per_gpu=slots_per_gpu,
    )


# --------------------------------------------------------------------- loads


@dataclass(frozen=True)
class PoolLoads:
    """The pool's per-step expert loads (token copies).

    Attributes:
        history: ``[H, L, E]`` recorded history steps, rescaled to the pool's copies per step.
        loads: ``[S, L, E]`` the evaluation steps as the pool serves them.
        copies_per_step: token copies of one pool step (tokens x ``k``).
        source: ``"recorded"`` or ``"fluctuation model"``.
        recorded_copies: median copies of a recorded step.
        smoothing_steps: recorded steps averaged into each step's mean (fluctuation model).
    """

    history: np.ndarray
    loads: np.ndarray
    copies_per_step: float
    source: str
    recorded_copies: float
    smoothing_steps: int = 1


def _moving_mean(p: np.ndarray, width: int) -> np.ndarray:
    """Trailing mean over ``width`` rows (fewer at the start) of ``[S, ...]``."""
    if width <= 1:
        return p
    c = np.cumsum(p, axis=0)
    out = c.copy()
    out[width:] = c[width:] - c[:-width]
    n = np.minimum(np.arange(1, p.shape[0] + 1), width).reshape(-1, *([1] * (p.ndim - 1)))
    return out / n


def pool_loads(
    stats: EngineLoadStats,
    spec: MoEModelSpec,
    workload: Workload,
    fluctuation: FluctuationModel,
    *,
    history_fraction: float = 0.5,
    recorded_tolerance: float = 0.25,
    seed: int = 0,
) -> PoolLoads:
    """Split the recorded steps into history and evaluation and shape them as the pool's
    steps (module docstring, step 1).

    Raises:
        ValueError: statistics of another ``L``/``E`` than the model, or fewer than 2 steps
            on either side of the split.
    """
    lm = num_moe_layers(spec)
    if stats.num_layers != lm or stats.num_experts != spec.num_experts:
        raise ValueError(
            f"statistics: {stats.num_layers} layers x {stats.num_experts} experts, model "
            f"{spec.name!r} has {lm} MoE layers x {spec.num_experts} experts (layer mismatch)"
        )
    if not 0.0 < history_fraction < 1.0:
        raise ValueError(f"eplb.history_fraction: {history_fraction} not in (0, 1)")
    s = stats.num_steps
    h = round(history_fraction * s)
    if h < 1 or s - h < 2:
        raise ValueError(
            f"statistics: {s} recorded steps leave no history or fewer than 2 "
            f"evaluation steps (eplb.history_fraction={history_fraction})"
        )
    copies = float(workload.tokens_per_step * spec.top_k)
    rec = stats.counts.sum(axis=-1).astype(float)  # [S, L]
    recorded = float(np.median(rec))
    props = stats.proportions()
    history = props[:h] * copies
    if abs(recorded / copies - 1.0) <= recorded_tolerance:
        scale = copies / np.maximum(rec[h:], 1.0)
        return PoolLoads(
            history=history,
            loads=stats.counts[h:] * scale[..., None],
            copies_per_step=copies,
            source="recorded",
            recorded_copies=recorded,
        )
    width = max(1, round(copies / max(recorded, 1.0)))
    mu = _moving_mean(props, width)[h:]
    mu = mu / np.maximum(mu.sum(axis=-1, keepdims=True), 1e-300)
    empty = ~(mu.sum(axis=-1) > 0)
    mu[empty] = 1.0 / spec.num_experts
    per_request = workload.tokens_per_sequence
    loads = fluctuation.sample(mu, copies, spec.top_k, per_request, np.random.default_rng(seed))
    return PoolLoads(
        history=history,
        loads=loads,
        copies_per_step=copies,
        source="fluctuation model",
        recorded_copies=recorded,
        smoothing_steps=width,
    )


# --------------------------------------------------------------------- replay


def _slot_gather(
    plan: Plan, values: np.ndarray, weight: np.ndarray | None = None, chunk_elements: int = 1 << 23
):
    """Yield ``(rows, gpu [n, L, G])``: the sum over each GPU's slots of ``values [S, L, E]``
    (per replica) at the slot's expert, times ``weight [L, G, R]`` (default: occupied slots),
    in chunks of steps (one flat ``np.take`` per slot index ``r``)."""
    se = plan.slot_expert
    nl, g, r = se.shape
    e = plan.num_experts
    idx = np.arange(nl)[:, None, None] * e + np.maximum(se, 0)  # [L, G, R]
    w = (se >= 0).astype(float) if weight is None else weight * (se >= 0)
    plain = bool((w == 1.0).all())
    s = values.shape[0]
    step = max(1, chunk_elements // (nl * g))
    for a in range(0, s, step):
        flat = values[a : a + step].reshape(-1, nl * e)
        acc = np.zeros((flat.shape[0], nl * g))
        for k in range(r):
            part = np.take(flat, idx[:, :, k].ravel(), axis=1)
            acc += part if plain else part * w[:, :, k].ravel()
        yield slice(a, a + step), acc.reshape(-1, nl, g)


def load_ratio(plan: Plan, loads: np.ndarray) -> np.ndarray:
    """``[S, L]`` busiest-GPU / mean load of ``loads [S, L, E]`` on ``plan`` (copies split
    evenly over an expert's replicas, as the engines' static dispatch does on average)."""
    loads = np.asarray(loads, dtype=float)
    g = plan.num_gpus
    per_replica = loads / np.maximum(plan.replica_counts(), 1)[None]
    mean = np.maximum(loads.sum(axis=-1) / g, 1e-300)
    out = np.empty(loads.shape[:2])
    for rows, gpu in _slot_gather(plan, per_replica):
        out[rows] = gpu.max(axis=-1) / mean[rows]
    return out


def dispatch_balanced_ratio(plan: Plan, loads: np.ndarray) -> np.ndarray:
    """``[S, L]`` busiest-GPU / mean load when each batch sends a replicated expert's copies
    to its least-loaded replicas (water-filling, replicated experts with the most replicas
    first; single-replica experts stay where they are): a greedy stand-in for LPLB's
    per-batch linear program (never above :func:`load_ratio`'s even split for one expert, not
    always the LP optimum)."""
    loads = np.asarray(loads, dtype=float)
    se = plan.slot_expert
    nl, g, _ = se.shape
    counts = plan.replica_counts()  # [L, E]
    single = counts == 1
    single_slot = np.take_along_axis(single, np.maximum(se, 0).reshape(nl, -1), 1)
    s = loads.shape[0]
    gpu = np.empty((s, nl, g))
    for rows, part in _slot_gather(plan, loads, single_slot.reshape(se.shape).astype(float)):
        gpu[rows] = part
    mean = np.maximum(loads.sum(axis=-1) / g, 1e-300)
    holders = plan.expert_gpu_counts() > 0  # [L, G, E]
    multi = [np.flatnonzero(~single[layer]) for layer in range(nl)]
    m = max((len(x) for x in multi), default=0)
    if m == 0:
        return gpu.max(axis=-1) / mean
    cmax = int(counts.max())
    ex = np.full((nl, m), -1, dtype=np.int64)
    hold = np.full((nl, m, cmax), -1, dtype=np.int64)
    for layer, experts in enumerate(multi):
        order = experts[np.argsort(-counts[layer, experts], kind="stable")]
        ex[layer, : order.size] = order
        gpus = [np.flatnonzero(holders[layer, :, x]) for x in order]
        for j, hs in enumerate(gpus):
            hold[layer, j, : hs.size] = hs
    flat = gpu.reshape(s, nl * g)
    base_idx = (np.arange(nl) * g)[:, None]
    c = np.arange(1, cmax + 1)
    load_flat = loads.reshape(s, -1)
    for j in range(m):
        e_j = ex[:, j]  # [L]
        ok = e_j >= 0
        w = np.take(load_flat, np.arange(nl) * loads.shape[2] + np.maximum(e_j, 0), axis=1)
        w = w * ok  # [S, L]
        h = hold[:, j, :]  # [L, C]
        present = (h >= 0) & ok[:, None]
        cols = (base_idx + np.maximum(h, 0)).ravel()
        lev = np.where(present, np.take(flat, cols, axis=1).reshape(s, nl, cmax), np.inf)
        a = np.sort(lev, axis=-1)  # [S, L, C]
        finite = np.isfinite(a)
        prefix = np.cumsum(np.where(finite, a, 0.0), axis=-1)
        lam = (w[..., None] + prefix) / c
        valid = finite & (lam >= a)
        pick = cmax - 1 - np.argmax(valid[..., ::-1], axis=-1)
        level = np.take_along_axis(lam, pick[..., None], axis=-1)
        add = np.where(present, np.maximum(level - lev, 0.0), 0.0)  # [S, L, C]
        for col in range(cmax):
            rows = present[:, col]
            flat[:, (base_idx[:, 0] + h[:, col])[rows]] += add[:, rows, col]
    return gpu.max(axis=-1) / mean


@dataclass
class Schedule:
    """Plans a strategy serves: ``plans[i]`` from evaluation step ``starts[i]``."""

    starts: list[int]
    plans: list[Plan]

    def ratios(self, loads: np.ndarray) -> np.ndarray:
        """``[S, L]`` load ratio of every evaluation step under its plan."""
        out = np.empty(loads.shape[:2])
        bounds = [*self.starts[1:], loads.shape[0]]
        for start, end, plan in zip(self.starts, bounds, self.plans, strict=True):
            if end > start:
                out[start:end] = load_ratio(plan, loads[start:end])
        return out


def periodic_schedule(
    history: np.ndarray,
    loads: np.ndarray,
    window: int,
    interval: int,
    num_gpus: int,
    num_redundant: int,
    forecast=None,
    lag_steps: int = 0,
) -> Schedule:
    """Re-plan every ``interval`` evaluation steps from the mean of the last ``window`` steps
    served (history first), or from ``forecast(t) -> [L, E]`` when given (predictive).

    A plan made at step ``t > 0`` serves from ``t + lag_steps`` (an asynchronous rebalance's
    transfer time); the first plan, from the history, serves from step 0 (steady state)."""
    seen = np.concatenate([history, loads])
    h = history.shape[0]
    starts, plans = [], []
    for t in range(0, loads.shape[0], max(interval, 1)):
        start = t + (lag_steps if t > 0 else 0)
        if start >= loads.shape[0]:
            break
        end = h + t
        base = forecast(t) if forecast is not None else seen[max(0, end - window) : end].mean(0)
        starts.append(start)
        plans.append(eplb_placement(base, num_gpus, num_redundant))
    return Schedule(starts=starts, plans=plans)


def window_drift(props: np.ndarray, window: int, horizons: list[int]) -> list[float | None]:
    """Drift of recorded loads: mean absolute error of the window-``W`` mean proportions as a
    forecast of the proportions ``h`` steps later, averaged over experts, layers and origins
    (at most about 100 evenly spaced origins)
    (``predictors.metrics.proportion_mae`` of ``window_mean`` forecasts ``h`` ahead; ``None``
    where the series is too short)."""
    p = np.asarray(props, dtype=float)
    s = p.shape[0]
    means = _moving_mean(p, window)
    out: list[float | None] = []
    for h in horizons:
        if h < 1 or s - h < 1 or window > s - h:
            out.append(None)
            continue
        origins = np.arange(window - 1, s - h, max(1, (s - h - window + 1) // 100))
        out.append(float(np.abs(p[origins + h] - means[origins]).mean()))
    return out


# --------------------------------------------------------------------- interval choice


def interval_curve(
    step_s_by_age: np.ndarray,
    stall_s: float,
    intervals: list[int],
    *,
    extrapolate: bool = True,
    lag_steps: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Amortised seconds per step for each interval ``I``: the mean of
    ``step_s_by_age[lag : lag + I]`` (a plan serves ages ``lag .. lag + I - 1``: ``lag`` = the
    steps an asynchronous rebalance takes to land, 0 when synchronous) plus ``stall_s / I``.
    An interval shorter than ``lag`` (rebalances would overlap) is ``inf``.

    Ages beyond the measured ``A`` are, with ``extrapolate``, priced at the mean of the last
    quarter of the measured ages (staleness taken to have levelled off: an assumption the
    result marks), else ``nan``.

    Returns:
        ``(step_s [I], extrapolated [I] bool)``.

    Raises:
        ValueError: an interval below 1, a negative stall, no measured age.
    """
    if stall_s < 0:
        raise ValueError(f"stall_s: {stall_s} < 0")
    a = np.asarray(step_s_by_age, dtype=float)
    if a.size == 0:
        raise ValueError("step_s_by_age: no measured age")
    cum = np.concatenate([[0.0], np.cumsum(a)])
    tail = float(a[-max(1, a.size // 4) :].mean())
    lag = max(int(lag_steps), 0)
    out, extra = [], []
    for i in intervals:
        if i < 1:
            raise ValueError(f"interval: {i} < 1")
        end = lag + i
        if i < lag:
            out.append(math.inf)
            extra.append(False)
        elif end <= a.size:
            out.append((cum[end] - cum[lag]) / i + stall_s / i)
            extra.append(False)
        else:
            seen = cum[-1] - cum[min(lag, a.size)]
            total = seen + (end - max(lag, a.size)) * tail
            out.append(total / i + stall_s / i if extrapolate else math.nan)
            extra.append(True)
    return np.asarray(out), np.asarray(extra)


def best_interval(curve: np.ndarray, intervals: list[int]) -> int | None:
    """The interval of the lowest finite amortised step time (``None`` if none)."""
    c = np.asarray(curve, dtype=float)
    if not np.isfinite(c).any():
        return None
    return int(intervals[int(np.argmin(np.where(np.isfinite(c), c, np.inf)))])


# --------------------------------------------------------------------- bootstrap


def speedup_ci(
    base_s: np.ndarray,
    strat_s: np.ndarray,
    *,
    extra_s: float = 0.0,
    block: int = 10,
    samples: int = 400,
    seed: int = 0,
) -> tuple[float, list[float]]:
    """``mean(base) / (mean(strat) + extra)`` and its 95% interval from a moving-block
    bootstrap over steps (blocks of ``block`` steps keep their correlation; seeded)."""
    base_s, strat_s = np.asarray(base_s, dtype=float), np.asarray(strat_s, dtype=float)
    point = float(base_s.mean() / (strat_s.mean() + extra_s))
    n = base_s.size
    b = max(1, min(block, n))
    starts = np.arange(n - b + 1)
    rng = np.random.default_rng(seed)
    k = -(-n // b)
    pick = rng.choice(starts, size=(samples, k))
    idx = (pick[..., None] + np.arange(b)).reshape(samples, -1)[:, :n]
    ratios = base_s[idx].mean(axis=1) / (strat_s[idx].mean(axis=1) + extra_s)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return point, [float(lo), float(hi)]


# --------------------------------------------------------------------- the analysis


@dataclass(frozen=True)
class EplbSettings:
    """What ``analyse`` needs beyond model, cluster, pool and statistics: the ``eplb.*``
    config keys (``gps.config.EplbConfig`` documents each), the target ``engine``
    (``ENGINE_DEFAULTS``), the run's ``seed``, and ``costs``: the engine's rebalance constants
    (default ``gps.plans.rebalance.ENGINE_COSTS[engine]``; where engine profiles can supply
    them)."""

    engine: str
    windows: tuple[int, ...] = (100, 250, 500, 1000)
    intervals: tuple[int, ...] = (50, 100, 250, 500, 1000, 3000)
    max_redundant_per_gpu: int = 2
    num_redundant: int | None = None
    synchronous: bool | None = None
    layers_per_chunk: int | None = None
    predictor: str = "ewma"
    predictor_params: dict = field(default_factory=dict)
    history_fraction: float = 0.5
    recorded_tolerance: float = 0.25
    memory_fraction: float = 0.9
    bootstrap: int = 400
    block_steps: int = 10
    tie_margin: float = 0.005
    anchors: int = 8
    seed: int = 0
    costs: RebalanceCosts | None = None

    def rebalance_costs(self) -> RebalanceCosts:
        return self.costs or ENGINE_COSTS[self.engine]

    def is_synchronous(self) -> bool:
        if self.synchronous is not None:
            return bool(self.synchronous)
        return bool(ENGINE_DEFAULTS[self.engine]["synchronous"])


def _mean_stall(
    plans: list[Plan], spec: MoEModelSpec, cluster: Cluster, s: EplbSettings
) -> tuple[float, float, float, float]:
    """Mean ``(stall_s, max_pass_stall_s, bytes of the busiest GPU, lag_s)`` over consecutive
    plans (at most 4 evenly spaced rebalances: each costs a fetch-tier pass over ``[L, G, E]``)."""
    b = expert_weight_bytes(spec)
    if len(plans) < 2:
        return 0.0, 0.0, 0.0, 0.0
    pairs = list(itertools.pairwise(plans))
    pairs = [pairs[i] for i in sorted({round(x) for x in np.linspace(0, len(pairs) - 1, 4)})]
    out = [
        rebalance_stall(
            a,
            c,
            b,
            cluster,
            s.rebalance_costs(),
            synchronous=s.is_synchronous(),
            layers_per_chunk=s.layers_per_chunk,
        )
        for a, c in pairs
    ]
    return (
        float(np.mean([r.stall_s for r in out])),
        float(np.mean([r.max_pass_stall_s for r in out])),
        float(np.mean([r.max_bytes_per_gpu for r in out])),
        float(np.mean([r.lag_s for r in out])),
    )


def analyse(
    stats: EngineLoadStats,
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    fluctuation: FluctuationModel,
    settings: EplbSettings,
) -> dict:
    """One pool's EPLB analysis (module docstring); a JSON-serialisable dict (``docs/eplb.md``,
    ``results.json`` ``eplb.pools.<phase>``).

    Raises:
        ValueError: statistics that do not fit the model, an engine without defaults, an
            ``R`` the engines refuse, no window that fits the history.
    """
    s = settings
    if s.engine not in ENGINE_DEFAULTS:
        raise ValueError(f"engine: {s.engine!r} not in {sorted(ENGINE_DEFAULTS)}")
    g, e = cluster.num_gpus, spec.num_experts
    pool = pool_loads(
        stats,
        spec,
        workload,
        fluctuation,
        history_fraction=s.history_fraction,
        recorded_tolerance=s.recorded_tolerance,
        seed=s.seed,
    )
    loads, history = pool.loads, pool.history
    n_eval, n_hist = loads.shape[0], history.shape[0]
    lm = num_moe_layers(spec)
    redundant = (
        [s.num_redundant]
        if s.num_redundant is not None
        else valid_redundant(e, g, s.max_redundant_per_gpu)
    )
    if not redundant:
        raise ValueError(
            f"eplb.max_redundant_per_gpu: no valid num_redundant_experts for E={e} on {g} GPUs"
        )
    hist_mean = history.mean(axis=0)
    # no balancing: the engines' start layout with the fewest redundant experts they accept
    # (0 when E divides over the GPUs; at EP320 DeepSeek-V3 needs 64)
    none_r = valid_redundant(e, g, max(s.max_redundant_per_gpu, 1))[0]
    none_plan = trivial_placement(lm, e, g, none_r)
    x_none = load_ratio(none_plan, loads)

    # per-R: static placement and dispatch-time balancing
    models: dict[int, StepTimeModel] = {}
    ratios: dict[tuple[str, int], np.ndarray] = {}
    static_plans: dict[int, Plan] = {}
    for r in redundant:
        static_plans[r] = eplb_placement(hist_mean, g, r)
        ratios[("static", r)] = load_ratio(static_plans[r], loads)
        ratios[("dispatch", r)] = (
            dispatch_balanced_ratio(static_plans[r], loads) if r > 0 else ratios[("static", r)]
        )
    top = max(float(x_none.max()), *(float(v.max()) for v in ratios.values()))
    base_model = step_time_model(spec, cluster, workload, none_plan.slots_per_gpu, top)
    t_none = base_model.step_s(x_none)
    for r in redundant:
        models[r] = step_time_model(spec, cluster, workload, (e + r) // g, top)

    engine_d = ENGINE_DEFAULTS[s.engine]
    windows = [w for w in s.windows if w <= n_hist] or [n_hist]
    default_w = min(engine_d["window_steps"], n_hist)

    # window x interval curves from plan ages (one plan per anchor and window)
    max_age = n_eval - 1
    anchors = sorted({int(a) for a in np.linspace(0, max(n_eval // 2 - 1, 0), max(s.anchors, 1))})
    r_mid = redundant[0] if s.num_redundant is not None else redundant[min(1, len(redundant) - 1)]
    seen = np.concatenate([history, loads])
    age_curves, stalls = {}, {}
    stride = max(1, max_age // 128)  # ages sampled every `stride` steps, interpolated between
    for w in windows:
        by_age = np.zeros(max_age + 1)
        n_age = np.zeros(max_age + 1)
        plans = []
        for a in anchors:
            end = n_hist + a
            plan = eplb_placement(seen[max(0, end - w) : end].mean(0), g, r_mid)
            plans.append(plan)
            ages = np.arange(0, n_eval - a, stride)
            if ages[-1] != n_eval - a - 1:
                ages = np.append(ages, n_eval - a - 1)
            t = models[r_mid].step_s(load_ratio(plan, loads[a + ages]))
            t = np.interp(np.arange(n_eval - a), ages, t)
            by_age[: t.size] += t
            n_age[: t.size] += 1
        ok = n_age >= max(2, len(anchors) // 2)
        usable = int(np.argmin(ok)) if not ok.all() else ok.size
        age_curves[w] = by_age[:usable] / n_age[:usable]
        stalls[w] = _mean_stall(plans, spec, cluster, s)
    intervals = sorted({*s.intervals, int(engine_d["interval_steps"])})
    step_ref = float(t_none.mean())

    def lag_steps(lag_s: float) -> int:
        return 0 if s.is_synchronous() else math.ceil(lag_s / step_ref)

    interval_rows = []
    best = None
    for w in windows:
        curve, extrapolated = interval_curve(
            age_curves[w], stalls[w][0], intervals, lag_steps=lag_steps(stalls[w][3])
        )
        interval_rows.append(
            {
                "window_steps": w,
                "step_s": [float(v) if math.isfinite(v) else None for v in curve],
                "extrapolated": [bool(v) for v in extrapolated],
            }
        )
        bi = best_interval(curve, intervals)
        if bi is not None:
            val = float(curve[intervals.index(bi)])
            if best is None or val < best[2]:
                best = (w, bi, val)
    drift = {
        str(w): window_drift(
            np.concatenate([history, loads]) / np.maximum(seen.sum(-1, keepdims=True), 1e-300),
            w,
            intervals,
        )
        for w in windows
    }
    w_star, i_star = (best[0], best[1]) if best else (default_w, engine_d["interval_steps"])

    # periodic EPLB and predictive re-planning at the chosen window and interval, per R
    results: dict[tuple[str, int], dict] = {}
    pred_forecast = None
    if s.predictor:
        import predictors

        model = predictors.make_predictor(s.predictor, **s.predictor_params)
        model.fit(history)
        fc = model.predict_rolling(seen, start=n_hist)  # [S, L, E] proportions

        def pred_forecast(t: int, fc: np.ndarray = fc) -> np.ndarray:
            return fc[t] * pool.copies_per_step

    for r in redundant:
        m = models[r]
        t_static = m.step_s(ratios[("static", r)])
        t_dispatch = m.step_s(ratios[("dispatch", r)])
        results[("static", r)] = {"t": t_static, "extra": 0.0}
        results[("dispatch", r)] = {"t": t_dispatch, "extra": 0.0}
        for name, fc in (("periodic", None), ("predictive", pred_forecast)):
            if name == "predictive" and fc is None:
                continue
            probe = [static_plans[r], eplb_placement(loads[-min(w_star, n_eval) :].mean(0), g, r)]
            lag = lag_steps(_mean_stall(probe, spec, cluster, s)[3])
            sched = periodic_schedule(
                history, loads, w_star, i_star, g, r, forecast=fc, lag_steps=lag
            )
            plans = list(sched.plans)
            if len(plans) < 2:  # no rebalance in the span: price a representative one
                plans = probe
            stall, pass_stall, moved, _ = _mean_stall(plans, spec, cluster, s)
            results[(name, r)] = {
                "t": m.step_s(sched.ratios(loads)),
                "extra": stall / i_star,
                "stall_s": stall,
                "max_pass_stall_s": pass_stall,
                "bytes_per_gpu": moved,
                "lag_steps": lag,
            }

    def summary(name: str, r: int) -> dict:
        res = results[(name, r)]
        sp, ci = speedup_ci(
            t_none,
            res["t"],
            extra_s=res["extra"],
            block=s.block_steps,
            samples=s.bootstrap,
            seed=s.seed,
        )
        return {
            "strategy": name,
            "num_redundant_experts": r,
            "speedup": sp,
            "speedup_ci95": ci,
            "step_s": float(res["t"].mean() + res["extra"]),
            "stall_s_per_rebalance": res.get("stall_s", 0.0),
            "max_pass_stall_s": res.get("max_pass_stall_s", 0.0),
            "bytes_per_gpu_per_rebalance": res.get("bytes_per_gpu", 0.0),
            "rebalance_lag_steps": res.get("lag_steps", 0),
        }

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
            if (name, r) in results:
                row[name] = summary(name, r)["speedup"]
        curve_rows.append(row)
    need = math.ceil(workload.batch_size / g) * workload.kv_len  # the pool's KV tokens per GPU
    fits = [row for row in curve_rows if row["kv_cache_tokens_per_gpu"] >= need]
    candidates = [
        summary(name, r)
        for (name, r) in results
        if any(f["num_redundant_experts"] == r for f in fits)
    ]
    none_summary = {
        "strategy": "no_balancing",
        "num_redundant_experts": none_r,
        "speedup": 1.0,
        "speedup_ci95": [1.0, 1.0],
        "step_s": float(t_none.mean()),
        "stall_s_per_rebalance": 0.0,
        "max_pass_stall_s": 0.0,
        "bytes_per_gpu_per_rebalance": 0.0,
        "rebalance_lag_steps": 0,
    }
    candidates.append(none_summary)
    top_speed = max(c["speedup"] for c in candidates)
    tied = [c for c in candidates if c["speedup"] >= top_speed * (1 - s.tie_margin)]
    verdict = min(tied, key=lambda c: (SIMPLICITY[c["strategy"]], c["num_redundant_experts"]))
    per_strategy = {}
    for name in STRATEGIES[1:]:
        options = [c for c in candidates if c["strategy"] == name]
        if options:
            per_strategy[name] = max(options, key=lambda c: c["speedup"])
    per_strategy["no_balancing"] = none_summary
    imbalance_share = float(1.0 - base_model.balanced_step_s / t_none.mean())
    chosen_r = verdict["num_redundant_experts"]
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
        "num_redundant_experts": chosen_r,
        "window_steps": int(w_star),
        "rebalance_interval_steps": int(i_star),
        "stall_s_per_rebalance": float(
            results[("periodic", chosen_r)]["stall_s"]
            if ("periodic", chosen_r) in results
            else results[("periodic", redundant[0])]["stall_s"]
        ),
        "kv_cache_tokens_lost": float(kv_tokens_lost(spec, g, chosen_r)),
        "imbalance_share_of_step": imbalance_share,
        "no_balancing_step_s": float(t_none.mean()),
        "balanced_step_s": base_model.balanced_step_s,
        "strategies": per_strategy,
        "redundancy_curve": curve_rows,
        "interval_curve": {
            "intervals": intervals,
            "rows": interval_rows,
            "num_redundant_experts": r_mid,
            "stall_s_per_rebalance": {str(w): stalls[w][0] for w in windows},
            "max_measured_age_steps": {str(w): int(age_curves[w].size) for w in windows},
        },
        "drift": {"horizons_steps": intervals, "window_mean_mae": drift},
        "synchronous": s.is_synchronous(),
        "engine_defaults": engine_d,
        "kv_capacity_tokens_per_gpu_no_balancing": kv_base,
        "kv_tokens_needed_per_gpu": need,
    }
