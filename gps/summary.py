"""Human-readable text of a priced step (what ``gps`` prints)."""

from __future__ import annotations

from gps.cost.e2e import CostBreakdown
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.workload import Workload

GB = 1e9


def format_breakdown(
    spec: MoEModelSpec,
    cluster: Cluster,
    workload: Workload,
    cost: CostBreakdown,
    memory: dict[str, float] | None = None,
) -> str:
    """A table of seconds per component (summed over MoE layers) for one unswept step."""
    total = float(cost.total_s)
    shape = (
        f"{workload.batch_size} x {workload.seq_len} tokens"
        if workload.phase == "prefill"
        else f"{workload.batch_size} tokens, context {workload.context_len}"
    )
    lines = [
        f"{spec.name} on {cluster.name} ({cluster.num_nodes}x{cluster.gpus_per_node} "
        f"{cluster.gpu.name}), {workload.phase} {shape}, attention {workload.attention_parallel}",
        "",
        f"{'component':<24}{'ms':>12}{'share':>9}",
    ]
    rows = [(k, float(v.sum())) for k, v in cost.components.items()]
    rows += [(f"{k} (once per step)", float(v)) for k, v in cost.non_moe.items()]
    for name, sec in rows:
        lines.append(f"{name:<24}{sec * 1e3:>12.3f}{sec / total:>9.1%}")
    balanced = float(cost.balanced_total_s)
    lines += [
        f"{'total':<24}{total * 1e3:>12.3f}",
        "",
        f"tokens/s            {float(cost.tokens_per_s):,.0f}",
        f"balanced bound      {balanced * 1e3:.3f} ms "
        f"(this step is {float(cost.imbalance_overhead()):.1%} above perfect balance)",
    ]
    if memory:
        used = sum(memory.values())
        parts = ", ".join(f"{k} {v / GB:.1f}" for k, v in memory.items())
        lines.append(
            f"memory per GPU      {used / GB:.1f} of {cluster.gpu.hbm_capacity / GB:.0f} GB "
            f"({parts})"
        )
    return "\n".join(lines)
