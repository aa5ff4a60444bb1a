"""Analytical roofline cost model of MoE inference (see ``docs/cost_model.md``).

Entry points: ``batch_cost`` (end-to-end seconds of one step, vectorised over sweep points; its
typed inputs ``StepRouting`` -- where the tokens go -- and ``StepExtras`` -- what the mechanism
ledger adds, ``gps.cost.ledger``), ``memory_breakdown`` (per-GPU bytes, raises
``MemoryFitError``) and ``uniform_routing`` (default routing).
"""

from gps.cost.e2e import LAYER_COMPONENTS, CostBreakdown, batch_cost
from gps.cost.memory import MemoryFitError, memory_breakdown
from gps.cost.routing import traffic_from_slot_tokens, uniform_routing
from gps.cost.step import Prefetch, StepExtras, StepRouting

__all__ = [
    "LAYER_COMPONENTS",
    "CostBreakdown",
    "MemoryFitError",
    "Prefetch",
    "StepExtras",
    "StepRouting",
    "batch_cost",
    "memory_breakdown",
    "traffic_from_slot_tokens",
    "uniform_routing",
]
