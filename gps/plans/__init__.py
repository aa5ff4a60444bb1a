"""Load-balancing plans: where experts and their replicas live (``docs/plans.md``).

A plan turns a (predicted) load ``[L, E]`` into ``Plan.slot_expert [L, G, R]``; the load
simulation (``gps.simulate``) replays the actual routing against it.

* ``placement``: static contiguous / round-robin placement (no balancing).
* ``duplication``: greedy replication + balanced packing (+ swap refinement), node-aware
  variant, migration bytes against the previous plan.
* ``ilp``: MoETuner-style ILP placement with cross-layer routing dependency (HiGHS).
* ``ilp_two_stage``: MoETuner's two-stage ILP (group each layer's experts, then map groups to
  GPUs by bandwidth-weighted cross-layer traffic).
* ``spare``: dynamic duplication through spare slots (home copies stay), migration-minimal;
  ``spare_bound``: a certified lower bound of its max GPU load.
* ``migration``: replica copies priced on the link they travel (peer NVLink/IB or host PCIe).
* ``exact``: the exact minimum of the max GPU load on small layers (enumeration, HiGHS MILP).
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
    placement_bound,
    placement_cost,
    transition_counts,
)
from gps.plans.ilp_two_stage import TwoStageResult, bandwidth_matrix, two_stage_placement
from gps.plans.migration import (
    MIGRATION_SOURCES,
    fetch_seconds,
    fetch_tier,
    migration_port_seconds,
    migration_seconds,
    migration_seconds_per_gpu,
)
from gps.plans.placement import static_placement, static_slot_expert
from gps.plans.plan import (
    Plan,
    expert_gpu_counts,
    expert_weight_bytes,
    migration_bytes,
    migration_bytes_per_gpu,
)
from gps.plans.spare import (
    REPLICA_MODES,
    improve_placement,
    keep_slots,
    matched_loads,
    place_replicas,
    plan_spare,
    plan_spare_slacks,
    replica_counts,
    spare_slots_per_gpu,
)
from gps.plans.spare_bound import spare_lower_bound

__all__ = [
    "MIGRATION_SOURCES",
    "REPLICA_MODES",
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
    "fetch_seconds",
    "fetch_tier",
    "heuristic_placement",
    "ilp_placement",
    "improve_placement",
    "keep_slots",
    "matched_loads",
    "max_gpu_load",
    "migration_bytes",
    "migration_bytes_per_gpu",
    "migration_port_seconds",
    "migration_seconds",
    "migration_seconds_per_gpu",
    "pack_balanced",
    "place_replicas",
    "placement_bound",
    "placement_cost",
    "plan_duplication",
    "plan_duplication_node_aware",
    "plan_spare",
    "plan_spare_slacks",
    "refine_swaps",
    "replica_counts",
    "replicate_greedy",
    "slots_needed",
    "spare_lower_bound",
    "spare_slots_per_gpu",
    "static_placement",
    "static_slot_expert",
    "transition_counts",
    "two_stage_placement",
]
