"""Analytical roofline cost model of MoE inference (see ``docs/cost_model.md``).

Entry points: ``batch_cost`` (end-to-end seconds of one step, vectorised over sweep points),
``memory_breakdown`` (per-GPU bytes, raises ``MemoryFitError``) and ``uniform_routing``
(default ``slot_tokens``/``traffic_bytes``).
"""

from gps.cost.e2e import LAYER_COMPONENTS, CostBreakdown, batch_cost
from gps.cost.memory import MemoryFitError, memory_breakdown
from gps.cost.routing import traffic_from_slot_tokens, uniform_routing

__all__ = [
    "LAYER_COMPONENTS",
    "CostBreakdown",
    "MemoryFitError",
    "batch_cost",
    "memory_breakdown",
    "traffic_from_slot_tokens",
    "uniform_routing",
]
