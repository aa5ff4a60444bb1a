"""Pricing assumptions: ours (``roofline``) or the MoE-GPS paper's (``moe_gps_paper``), and the
assumption ladder between them.

The ``assumptions`` config group (``conf/assumptions/``) chooses how a routed strategy is priced.
Every switch below is one of the MoE-GPS paper's modelling choices (arXiv 2506.07366, as far as
its abstract and public notes document them; ``shared/references.md``) with our default beside it:

* ``load_model``: ``simulated`` (ours: the plan and the load simulation decide every GPU's
  tokens; the slowest GPU sets the expert time) or ``epsilon`` (paper: the busiest GPU holds
  ``(1 + eps) x`` the mean tokens, with ``eps = skew - 1`` without balancing,
  ``eps = 1 - top-k accuracy`` for Token-to-Expert, ``eps = |p_hat - p| / (1/E)`` for
  Distribution-Only, ``0`` for the oracle and the simulated value for the other families).
* ``skew``: no balancing's busiest-expert / mean tokens under ``epsilon`` (paper: MMLU 1.39;
  ``None``: measured per held-out batch and layer).
* ``do_error``: Distribution-Only ``|p_hat - p|`` under ``epsilon`` (paper: 1.8% on MMLU;
  ``None``: each predictor's measured proportion MAE).
* ``weight_copies``: ``priced`` (ours: exposed migration beyond the attention window) or
  ``hidden`` (paper: weight copies are hidden behind attention).
* ``predictor``: ``as_priced`` (ours: each predictor where it runs, off-path work hidden
  behind attention) or ``before_attention`` (paper: every predictor on the critical path).
* ``t2e_dispatch``: ``mechanisms`` (ours: the mechanism ledger, ``gps.cost.ledger``) or
  ``skip_scatter`` (paper: Token-to-Expert's predicted copies skip the dispatch all-to-all;
  its mispredicted ones pay a corrective all-to-all in the workload's mode).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from gps.advisor.ledger import Ledger
from gps.advisor.pricing import price_routed, routed_extras
from gps.advisor.strategies import Routed
from gps.cost.e2e import CostBreakdown
from gps.cost.layer import dispatch_leg_s
from gps.cost.step import StepRouting
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import Workload

LOAD_MODELS = ("simulated", "epsilon")
WEIGHT_COPIES = ("priced", "hidden")
PREDICTOR_PLACEMENT = ("as_priced", "before_attention")
T2E_DISPATCH = ("mechanisms", "skip_scatter")


@dataclass(frozen=True)
class Assumptions:
    """One member of the ``assumptions`` config group (fields: module docstring)."""

    name: str = "roofline"
    load_model: str = "simulated"
    skew: float | None = None
    do_error: float | None = None
    weight_copies: str = "priced"
    predictor: str = "as_priced"
    t2e_dispatch: str = "mechanisms"

    def __post_init__(self) -> None:
        for key, allowed in (
            ("load_model", LOAD_MODELS),
            ("weight_copies", WEIGHT_COPIES),
            ("predictor", PREDICTOR_PLACEMENT),
            ("t2e_dispatch", T2E_DISPATCH),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"assumptions.{key}={getattr(self, key)!r}: expected {allowed}")
        if self.skew is not None and not self.skew >= 1.0:
            raise ValueError(f"assumptions.skew={self.skew}: must be >= 1 (max / mean) or null")
        if self.do_error is not None and not self.do_error >= 0.0:
            raise ValueError(f"assumptions.do_error={self.do_error}: must be >= 0 or null")


ROOFLINE = Assumptions()

# The ladder from the paper's assumptions to ours: each rung switches one more off.
LADDER = (
    ("skew", None, "no-balancing skew measured on our trace instead of the paper's 1.39"),
    ("do_error", None, "Distribution-Only error measured instead of the paper's 1.8%"),
    ("load_model", "simulated", "per-GPU load simulated from plan and routing instead of "
                                "(1 + eps) x mean"),
    ("weight_copies", "priced", "replica weight copies priced instead of hidden behind attention"),
    ("predictor", "as_priced", "each predictor priced where it runs instead of all on the "
                               "critical path"),
    ("t2e_dispatch", "mechanisms", "Token-to-Expert dispatch priced by the mechanism ledger "
                                   "instead of skipping the scatter"),
)  # fmt: skip


def epsilon(r: Routed, a: Assumptions, true_loads: np.ndarray) -> np.ndarray | None:
    """``[N, L]`` (or scalar) busiest-GPU excess ``eps`` of ``r`` under the paper's load model;
    ``None`` where the simulated load stands (periodic, capacity, ILP families)."""
    e = true_loads.shape[-1]
    if r.family == "baseline":
        if a.skew is not None:
            return np.asarray(a.skew - 1.0)
        x = np.asarray(true_loads, dtype=float)
        return x.max(axis=-1) / np.maximum(x.mean(axis=-1), 1e-12) - 1.0
    if r.family == "oracle":
        return np.asarray(0.0)
    if r.family == "token":
        return np.asarray(1.0 - r.accuracy["topk_hit_rate"])
    if r.family == "distribution":
        err = a.do_error if a.do_error is not None else r.accuracy["proportion_mae"]
        return np.asarray(err * e)
    return None


def epsilon_slot_tokens(slot_tokens: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """``[N, L, G, R]`` loads with every GPU at the mean and the actually busiest one at
    ``(1 + eps) x`` the mean; a GPU's tokens spread over its slots in its simulated shares
    (evenly over its slots when it had none)."""
    x = np.asarray(slot_tokens, dtype=float)
    gpu = x.sum(axis=-1)  # [N, L, G]
    g = gpu.shape[-1]
    mean = gpu.sum(axis=-1, keepdims=True) / g
    target = np.broadcast_to(mean, gpu.shape).copy()
    busiest = gpu.argmax(axis=-1)[..., None]
    np.put_along_axis(target, busiest, mean * (1.0 + np.asarray(eps)[..., None]), axis=-1)
    share = np.where(gpu[..., None] > 0, x / np.maximum(gpu[..., None], 1e-300),
                     1.0 / x.shape[-1])  # fmt: skip
    return share * target[..., None]


def price_under(
    r: Routed,
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    true_loads: np.ndarray,
    *,
    ledger: Ledger,
    assumptions: Assumptions = ROOFLINE,
) -> CostBreakdown:
    """``batch_cost`` of ``r`` over its ``N`` held-out batches under ``assumptions`` and the
    run's mechanism ``ledger``; ``true_loads [N, L, E]`` are the batches' actual expert loads.

    ``t2e_dispatch="skip_scatter"`` (the paper's): a Token-to-Expert strategy's correctly
    predicted copies are already on their experts' GPUs; its mispredicted copies pay a
    corrective all-to-all in the workload's all-to-all mode (``gps.cost.layer.dispatch_leg_s``),
    and perfect knowledge (the oracle family) pays none."""
    a = assumptions
    routing = StepRouting.of(r.sim)
    extras = routed_extras(r, spec, cluster, workload, ledger,
                           predictor_critical=a.predictor == "before_attention",
                           hide_migration=a.weight_copies == "hidden")  # fmt: skip
    if a.t2e_dispatch == "skip_scatter" and r.family in ("token", "oracle"):
        dispatch = np.zeros(r.sim.traffic_bytes.shape[:-2])
        if r.family == "token":
            miss = r.token_routing.miss
            per_token = float(miss.routed.mean()) / workload.tokens_per_step
            dispatch = dispatch_leg_s(spec, cluster, workload, miss.traffic_bytes,
                                      copies_per_token=max(1, round(per_token)))  # fmt: skip
        extras = dataclasses.replace(extras, dispatch_s=dispatch)
    if a.load_model == "epsilon":
        eps = epsilon(r, a, true_loads)
        if eps is not None:
            routing = dataclasses.replace(
                routing, slot_tokens=epsilon_slot_tokens(routing.slot_tokens, eps)
            )
    return price_routed(r, spec, cluster, workload, ledger, routing=routing, extras=extras)


def do_vs_t2e(times: dict[str, float], routed: list[Routed]) -> dict:
    """Best real Distribution-Only vs best real Token-to-Expert: ``{gain, distribution, token,
    distribution_s, token_s, distribution_speedup, token_speedup}`` with
    ``gain = t_T2E / t_DO - 1`` (positive: DO faster) and speed-ups over ``no_balancing``
    (``times`` must hold it)."""
    best = {}
    for fam in ("distribution", "token"):
        pool = [r.name for r in routed if r.family == fam and not r.synthetic]
        if not pool:
            raise ValueError(f"the assumption ladder needs at least one {fam!r} strategy")
        best[fam] = min(pool, key=lambda n: times[n])
    do, t2e, base = best["distribution"], best["token"], times["no_balancing"]
    return {
        "gain": times[t2e] / times[do] - 1.0, "distribution": do, "token": t2e,
        "distribution_s": times[do], "token_s": times[t2e],
        "distribution_speedup": base / times[do], "token_speedup": base / times[t2e],
    }  # fmt: skip


def assumption_ladder(
    routed: list[Routed],
    price,
    paper: Assumptions,
) -> list[dict]:
    """The DO-vs-T2E figure under ``paper``'s assumptions, then with one more of them switched
    off (``LADDER`` order) after each rung, ending at ours (``roofline``).

    Args:
        routed: the run's strategies (``no_balancing`` and real Distribution-Only and
            Token-to-Expert ones among them).
        price: ``price(r, assumptions) -> CostBreakdown``.
        paper: the starting assumptions (``moe_gps_paper``).

    Returns:
        one dict per rung: ``step`` (0 = all of ``paper``), ``switched_off`` (``None`` first),
        ``description``, ``assumptions`` (the switches in force) and the ``do_vs_t2e`` fields.
    """
    rungs, cur = [], paper
    for i, (key, value, text) in enumerate([(None, None, "the paper's assumptions"), *LADDER]):
        if key is not None:
            cur = dataclasses.replace(cur, **{key: value})
        if cur == dataclasses.replace(ROOFLINE, name=cur.name):
            cur = ROOFLINE
        times = {r.name: float(price(r, cur).total_s.mean()) for r in routed
                 if r.family in ("baseline", "distribution", "token")}  # fmt: skip
        rungs.append({
            "step": i, "switched_off": key, "description": text,
            "assumptions": dataclasses.asdict(cur), **do_vs_t2e(times, routed),
        })  # fmt: skip
    return rungs


CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "assumptions"


def load_assumptions(name: str) -> Assumptions:
    """The member ``conf/assumptions/<name>.yaml`` of the config group."""
    path = CONF_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such assumptions member")
    return from_config(OmegaConf.load(path))


def from_config(node) -> Assumptions:
    """``Assumptions`` of a composed ``cfg.assumptions`` node (``provenance`` is report text)."""
    fields = {f.name for f in dataclasses.fields(Assumptions)}
    return Assumptions(**{k: v for k, v in dict(node).items() if k in fields})
