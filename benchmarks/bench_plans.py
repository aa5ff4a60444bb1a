"""Plans benchmark: planner speed, balance vs the lower bound, ILP time/gap, straggler-time cut.

1. Planner time for 256 experts x 64 GPUs x 61 layers (R = 5: 256 + 64 redundant slots, as
   DeepSeek's EPLB deployment), median of several runs: greedy replication + packing
   (+ refinement), the full re-pack with the migration-minimal GPU relabelling
   (``align_to_previous``, one assignment per layer), the node-aware variant (8 nodes of 8).
   The spare-slot planner's time, from scratch and as the advisor re-plans, is
   ``benchmarks/bench_spare.py``'s.
2. Max GPU load / balanced lower bound (``sum load / G``) on skewed loads: static placement,
   greedy + LPT (no refinement), refined, the planner's pick, node-aware, spare-slot planner
   and its certified bound with those home copies (``spare_lower_bound``); with R from the
   skew's needs (``slots_needed``) and with a fixed R.
3. ILP (MoETuner): Mixtral size (8 experts, 8 GPUs, 32 layers) and DeepSeek size (256
   experts, 32 and 64 GPUs, a few layers, a time limit): method, time, gap.
4. Straggler-time cut on Mixtral-8x7B / 8x H100 (conf defaults, prefill 8 x 2048): each plan
   priced with ``gps.cost.batch_cost`` on the simulated routing, planned from the same batch
   (oracle) and from the previous batch (a realistic prediction), with migration bytes.
5. Exact small layers (``gps.plans.exact``, HiGHS MILP) against the heuristic planners on
   Mixtral-size layers (8 experts, 8 GPUs): max load / lower bound, solver status and time.

Loads come from the synthetic presets (``gps.traces.synthetic``) when available, else from
Zipf draws. Run: ``.venv/bin/python benchmarks/bench_plans.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy
from machine import describe

from gps.cost import StepExtras, StepRouting, batch_cost
from gps.model import load_model_spec
from gps.plans import (
    balanced_lower_bound,
    capacity_drop,
    capacity_reroute,
    expert_weight_bytes,
    ilp_placement,
    max_gpu_load,
    migration_port_seconds,
    pack_balanced,
    plan_duplication,
    plan_duplication_node_aware,
    plan_spare,
    replicate_greedy,
    slots_needed,
    spare_lower_bound,
    static_placement,
    transition_counts,
)
from gps.plans.exact import PROVED
from gps.profiles import load_cluster_config
from gps.simulate import simulate
from gps.traces.batching import batch_loads, take_tokens
from gps.workload import Workload

try:
    from gps.traces.synthetic import generate_from_preset
except ImportError:  # pragma: no cover - presets not available
    generate_from_preset = None


def zipf_loads(layers: int, experts: int, a: float, tokens: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, experts + 1) ** a
    p /= p.sum()
    return np.stack([rng.multinomial(tokens, rng.permutation(p)) for _ in range(layers)]) * 1.0


def preset_trace(name: str, tokens: int, seed: int = 0):
    if generate_from_preset is None:
        return None
    return generate_from_preset(name, seed=seed, num_tokens=tokens)


def timings(fn, runs: int) -> list[float]:
    """Wall seconds of ``runs`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def spread_ms(times: list[float]) -> str:
    """``median ms (min-max)``."""
    return (f"{statistics.median(times) * 1e3:.1f} ms ({min(times) * 1e3:.1f}-"
            f"{max(times) * 1e3:.1f})")  # fmt: skip


def bench_planner_time(runs: int) -> None:
    print("\n## 1. Planner time, 256 experts x 64 GPUs x 61 layers, R = 5: median (min-max) of",
          runs, "runs")  # fmt: skip
    print("| load | greedy + LPT | full planner (5 candidates + refine) | full planner + "
          "align_to_previous | node-aware (8x8) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for a in (0.3, 1.0):
        load = zipf_loads(61, 256, a, 16384 * 8, seed=1)
        before = zipf_loads(61, 256, a, 16384 * 8, seed=2)  # the previous batch

        def greedy(load=load):
            return pack_balanced(load, replicate_greedy(load, 320, max_replicas=64), 64, 5)

        prev_full = plan_duplication(before, 64, 5)
        t_greedy = timings(greedy, runs)
        t_full = timings(lambda load=load: plan_duplication(load, 64, 5), runs)
        t_align = timings(lambda load=load, p=prev_full: plan_duplication(
            load, 64, 5, previous=p, gpus_per_node=8), runs)  # fmt: skip
        t_node = timings(lambda load=load: plan_duplication_node_aware(load, 64, 5, 8), runs)
        times = " | ".join(spread_ms(x) for x in (t_greedy, t_full, t_align, t_node))
        print(f"| Zipf a={a} | {times} |")


def balance_rows(name: str, load: np.ndarray, g: int, r: int, gpn: int | None) -> str:
    lb = balanced_lower_bound(load, g)
    e = load.shape[1]
    static = static_placement(load.shape[0], e, g, r).gpu_load(load).max(axis=1)
    greedy = max_gpu_load(
        pack_balanced(load, replicate_greedy(load, g * r, max_replicas=g), g, r), load
    )
    plan = plan_duplication(load, g, r)
    refined = plan.meta["candidate_max_load"]["refined"]
    final = plan.meta["predicted_max_load"]
    node = "-"
    if gpn is not None and gpn < g:
        node_plan = plan_duplication_node_aware(load, g, r, gpn)
        node = f"{(node_plan.meta['predicted_max_load'] / lb).max():.3f}"
    need = int(slots_needed(load, g).max())
    home = static_placement(load.shape[0], e, g, r)
    spare = plan_spare(load, home).meta["predicted_max_load"]
    bound = spare_lower_bound(load, home)

    def worst(x: np.ndarray) -> str:
        return f"{(x / lb).mean():.3f} / {(x / lb).max():.3f}"

    return (
        f"| {name} | {g}x{r} ({need}) | {worst(static)} | {worst(greedy)} | {worst(refined)} "
        f"| {worst(final)} | {node} | {worst(spare)} | {worst(bound)} |"
    )  # fmt: skip


def bench_balance() -> None:
    print("\n## 2. Max GPU load / balanced lower bound (mean / worst layer)")
    print("GxR (slots the skew needs, worst layer); node-aware column: worst layer, 8 GPUs/node")
    print("spare: home copies (static) + R - ceil(E/G) spare slots per GPU, only replicas move;")
    print("spare bound: no plan with those home copies does better (spare_lower_bound)")
    print("| loads | G x R | static | greedy+LPT | refined | planner | node-aware | spare | "
          "spare bound |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    cases = []
    mix = preset_trace("mixtral_mmlu_like", 16384)
    ds = preset_trace("deepseek_like", 8192)
    if mix is not None:
        load = batch_loads(mix, 16384)[0] * 1.0
        cases += [("mixtral_mmlu_like 16k tok", load, 8, 2, None)]
        cases += [("mixtral_mmlu_like 16k tok", load, 8, 3, None)]
    if ds is not None:
        load = batch_loads(ds, 8192)[0] * 1.0
        cases += [
            ("deepseek_like 8k tok", load, 64, 5, 8),
            ("deepseek_like 8k tok", load, 32, 10, 8),
        ]
    for a in (1.0, 1.2):
        load = zipf_loads(32, 64, a, 65536, seed=2)
        r_need = int(-(-slots_needed(load, 16).max() // 16)) + 1
        cases += [(f"Zipf a={a}, 64 experts", load, 16, 5, 8)]
        cases += [(f"Zipf a={a}, 64 experts", load, 16, r_need, 8)]
    for name, load, g, r, gpn in cases:
        print(balance_rows(name, load, g, r, gpn))


def bench_ilp(quick: bool) -> None:
    print("\n## 3. ILP placement (MoETuner objective: sum_l max load + traffic / G)")
    print("| instance | method | time | gap (bound) | HiGHS gap | objective vs static |")
    print("| --- | --- | --- | --- | --- | --- |")
    mix = preset_trace("mixtral_mmlu_like", 16384)
    if mix is not None:
        ids, e = mix.experts, 8
    else:
        rng = np.random.default_rng(0)
        ids, e = rng.integers(0, 8, size=(16384, 32, 2)), 8
    load = batch_loads(mix, 16384)[0] * 1.0 if mix is not None else None
    if load is None:
        load = np.stack([np.bincount(ids[:, i].ravel(), minlength=e) for i in range(32)]) * 1.0
    c = transition_counts(ids, e)
    ilp_row("Mixtral 8 exp x 8 GPU x 32 layers", load, c, 8, None, 60.0, None)
    ds = preset_trace("deepseek_like", 8192)
    layers = 3 if quick else 4
    if ds is not None:
        sub = ds.experts[:, :layers]
        load = np.stack([np.bincount(sub[:, i].ravel(), minlength=256) for i in range(layers)])
        c = transition_counts(sub, 256)
        for g in (32, 64):
            limit = 10.0 if quick else 30.0
            ilp_row(
                f"DeepSeek 256 exp x {g} GPU x {layers} layers", load * 1.0, c, g, 500, limit, 10.0
            )
        ilp_row(
            f"DeepSeek 256 exp x 64 GPU x {layers} layers, all pairs",
            load * 1.0,
            c,
            64,
            None,
            10.0,
            10.0,
        )


def ilp_row(name, load, c, g, max_pairs, limit, heuristic_s) -> None:
    e = load.shape[1]
    res = ilp_placement(
        load, c, g, time_limit_s=limit, max_pairs=max_pairs, heuristic_time_s=heuristic_s or 10.0
    )
    static_assign = np.broadcast_to(np.arange(e) // -(-e // g), load.shape)
    from gps.plans import placement_cost

    s_obj = placement_cost(np.asarray(static_assign), load, c, g, res.traffic_weight)[2]
    pairs = "" if max_pairs is None else f", top {max_pairs} pairs/layer"
    print(
        f"| {name}{pairs} | {res.method} | {res.solve_time_s:.1f} s | {res.gap:.3g} "
        f"({res.gap_bound}) | {res.milp_gap:.3g} | {res.objective / s_obj:.3f} |"
    )


def bench_straggler() -> None:
    print("\n## 4. Straggler time on Mixtral-8x7B, 8x H100 NVLink, prefill 8 x 2048 tokens")
    spec = load_model_spec("mixtral_8x7b")
    cluster = load_cluster_config("h100_nvlink")
    wl = Workload(phase="prefill", batch_size=8, seq_len=2048)
    t = wl.tokens_per_step
    trace = preset_trace("mixtral_mmlu_like", 3 * t)
    if trace is None:
        rng = np.random.default_rng(0)
        p = rng.dirichlet(np.full(8, 5.0), size=32)
        ids = np.stack(
            [[rng.choice(8, 2, replace=False, p=p[i]) for i in range(32)] for _ in range(3 * t)]
        )
        from gps.traces.trace import TokenTrace

        z = np.zeros(3 * t, dtype=np.int32)
        trace = TokenTrace(ids.astype(np.int16), z - 1, z, z, 8)
    batches = [take_tokens(trace, slice(i * t, (i + 1) * t)) for i in range(3)]
    loads = [batch_loads(b, t)[0] * 1.0 for b in batches]
    cur = batches[2]
    layers, g = 32, cluster.num_gpus
    static = static_placement(layers, 8, g)
    ebytes = expert_weight_bytes(spec)
    rows = [("static (1 expert/GPU)", static, cur, None)]
    for r in (2, 3):
        rows.append((f"duplication R={r}, oracle", plan_duplication(loads[2], g, r), cur, None))
        before = plan_duplication(loads[0], g, r)  # planned for batch 1
        plan = plan_duplication(loads[1], g, r, previous=before)  # planned for batch 2
        rows.append((f"duplication R={r}, previous batch", plan, cur, before))
    ilp = ilp_placement(loads[1], transition_counts(batches[1].experts, 8), g, time_limit_s=60.0)
    rows.append((f"ILP ({ilp.method}), previous batch, deployed once", ilp.plan, cur, None))
    for gamma in (1.0, 1.25):
        rows.append((f"capacity drop gamma={gamma}", static, capacity_drop(cur, gamma), None))
        rows.append((f"capacity reroute gamma={gamma}", static, capacity_reroute(cur, gamma), None))
    print("experts = slowest-GPU expert FFN time summed over the 32 MoE layers; a2a = dispatch +")
    print("combine; migration = exposed time to copy the replicas that are new relative to the")
    print("previous batch's plan (hidden behind attention up to its length). Cut = 1 - experts /")
    print("static experts.")
    print("| plan | experts ms | cut | a2a ms | migration ms | total ms | imbalance | dropped |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    base = None
    for name, plan, routing, prev_plan in rows:
        sim = simulate(plan, routing, spec=spec)
        mig = {}
        if prev_plan is not None:
            mig = migration_port_seconds(prev_plan, plan, ebytes, cluster)
        cost = batch_cost(spec, cluster, wl, StepRouting.of(sim), StepExtras(migration_s=mig))
        experts = float(cost.components["experts"].sum())
        base = experts if base is None else base
        a2a = float((cost.components["dispatch"] + cost.components["combine"]).sum())
        migr = float(cost.components["migration"].sum())
        dropped = float(sim.dropped.sum() / max(sim.routed.sum(), 1))
        print(
            f"| {name} | {experts * 1e3:.2f} | {1 - experts / base:+.1%} | {a2a * 1e3:.2f} | "
            f"{migr * 1e3:.2f} | {float(cost.total_s) * 1e3:.1f} | "
            f"{float(cost.imbalance_overhead()):.3f} | {dropped:.2%} |"
        )


def bench_exact(quick: bool) -> None:
    print("\n## 5. Exact small layers (HiGHS MILP) vs the heuristic planners, 8 experts x 8 GPUs")
    print("max GPU load / lower bound, mean / worst over the layers; status: layers proved optimal")
    print("| loads | mode | G x R | heuristic | exact | proved optimal | exact time / layer |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    layers = 2 if quick else 4
    limit = 2.0 if quick else 10.0
    mix = preset_trace("mixtral_mmlu_like", 16384)
    if mix is not None:
        load = batch_loads(mix, 16384)[0][:layers] * 1.0
    else:
        load = zipf_loads(layers, 8, 1.0, 32768, seed=3)
    lb = balanced_lower_bound(load, 8)
    for r in (2, 3):
        for mode in ("repack", "spare"):
            home = static_placement(layers, 8, 8, r)

            def plan(exact: bool, mode=mode, r=r, home=home):
                if mode == "repack":
                    return plan_duplication(load, 8, r, exact=exact, exact_time_limit_s=limit)
                return plan_spare(load, home, exact=exact, exact_time_limit_s=limit)

            heur = plan(False).meta["predicted_max_load"] / lb
            t0 = time.perf_counter()
            ex = plan(True)
            dt = (time.perf_counter() - t0) / layers
            val = ex.meta["predicted_max_load"] / lb
            done = sum(s in PROVED for s in ex.meta["exact_status"])
            print(f"| mixtral_mmlu_like 16k tok | {mode} | 8x{r} | {heur.mean():.4f} / "
                  f"{heur.max():.4f} | {val.mean():.4f} / {val.max():.4f} | {done}/{layers} | "
                  f"{dt:.2f} s |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter ILP limits, fewer runs")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--planner-only", action="store_true", help="section 1 only")
    parser.add_argument("--ilp-only", action="store_true", help="section 3 only")
    args = parser.parse_args()
    print("# bench_plans")
    print(describe(f"scipy {scipy.__version__}"))
    print("loads:", "synthetic presets" if generate_from_preset else "Zipf (presets missing)")
    t0 = time.perf_counter()
    if args.ilp_only:
        bench_ilp(args.quick)
        print(f"\nbenchmark wall time: {time.perf_counter() - t0:.0f} s")
        return
    bench_planner_time(3 if args.quick else args.runs)
    if not args.planner_only:
        bench_balance()
        bench_ilp(args.quick)
        bench_straggler()
        bench_exact(args.quick)
    print(f"\nbenchmark wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
