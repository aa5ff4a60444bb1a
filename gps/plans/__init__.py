"""Load-balancing plans: where experts and their replicas live (``docs/plans.md``).

A plan turns a (predicted) load ``[L, E]`` into ``Plan.slot_expert [L, G, R]``; the load
simulation (``gps.simulate``) replays the actual routing against it.

* ``placement``: static contiguous / round-robin placement (no balancing).
* ``duplication``: greedy replication + balanced packing (+ swap refinement), node-aware
  variant, migration bytes against the previous plan.
* ``ilp``: MoETuner-style ILP placement with cross-layer routing dependency (HiGHS).
* ``ilp_two_stage``: MoETuner's two-stage ILP (group each layer's experts, then map groups to
  GPUs by bandwidth-weighted cross-layer traffic).
* ``capacity``: capacity-aware token drop / reroute.
"""

from gps.plans.capacity import (
    CapacityResult,
    capacity_drop,
    capacity_reroute,
    expert_capacity,
)
from gps.plans.duplication import (
    align_to_previous,
    assign_home_nodes,
    balanced_lower_bound,
    cross_node_copies,
    max_gpu_load,
    pack_balanced,
    plan_duplication,
    plan_duplication_node_aware,
    refine_swaps,
    replicate_greedy,
    slots_needed,
)
from gps.plans.ilp import (
    ILPResult,
    heuristic_placement,
    ilp_placement,
    placement_cost,
    transition_counts,
)
from gps.plans.ilp_two_stage import TwoStageResult, bandwidth_matrix, two_stage_placement
from gps.plans.placement import static_placement, static_slot_expert
from gps.plans.plan import (
    Plan,
    expert_gpu_counts,
    expert_weight_bytes,
    migration_bytes,
    migration_bytes_per_gpu,
)

__all__ = [
    "CapacityResult",
    "ILPResult",
    "Plan",
    "TwoStageResult",
    "align_to_previous",
    "assign_home_nodes",
    "balanced_lower_bound",
    "bandwidth_matrix",
    "capacity_drop",
    "capacity_reroute",
    "cross_node_copies",
    "expert_capacity",
    "expert_gpu_counts",
    "expert_weight_bytes",
    "heuristic_placement",
    "ilp_placement",
    "max_gpu_load",
    "migration_bytes",
    "migration_bytes_per_gpu",
    "pack_balanced",
    "placement_cost",
    "plan_duplication",
    "plan_duplication_node_aware",
    "refine_swaps",
    "replicate_greedy",
    "slots_needed",
    "static_placement",
    "static_slot_expert",
    "transition_counts",
    "two_stage_placement",
]
