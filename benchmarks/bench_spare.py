"""Spare-slot planner benchmark: balance against a certified bound, speed as the advisor runs it,
and the exact option on real Mixtral routing.

1. Balance (``plan_spare``, home copies fixed: static contiguous, ``ceil(E/G)`` home slots and
   ``R - ceil(E/G)`` spare slots per GPU) on DeepSeek-size loads: 61 layers (the issue's
   setting; DeepSeek-V3 has 58 MoE layers) x 256 experts, 8192 tokens x top-8 per layer (each
   token picks 8 distinct experts with probability proportional to the layer's popularity:
   Gumbel top-k), popularity zipf(1.0) over a random expert order or Dirichlet(2) per layer;
   seeds fixed below. Metric: max GPU load / mean GPU load, mean over layers. Columns:
   ``plan_spare``; ``lower_bound`` (``spare_lower_bound``: no plan with these home copies does
   better); ``ms`` (median of ``--runs`` planner calls after one warm-up); for reference,
   ``eplb_repack``: DeepSeek's EPLB re-pack as publicly described, in our words (every slot
   may move: each of the ``G*R - E`` redundant slots to the expert with the largest load per
   replica, then the replicas heaviest first onto the least-loaded GPU with fewer than ``R``);
   ``home_only``: no balancing; ``layers won``: ``plan_spare``'s candidate kept per layer;
   ``wide``: ``plan_spare(..., wide_search=True)`` (every one-copy move between experts scored
   exactly, ``wide_count_search``; not what the advisor runs) and ``wide s`` its time, one call
   (it takes seconds). ``--no-wide`` leaves both out.
2. The migration-minimal re-plan at 64 GPUs as the advisor runs it: ``Context.candidates`` (fetch
   costs from the plan in place over NVLink/InfiniBand, 8 GPUs per node, the balance-first and
   the migration-first plan), median of 9 calls after one warm-up, wall and CPU time (the
   latter what it costs on an idle machine: the cores are shared). ``--replan-only`` runs only
   this row and needs nothing newer than ``Context``, so the same command with
   ``PYTHONPATH=<checkout of main>`` times the code before this change on the same machine
   (and without ``--replan-only`` gives that code's ``plan_spare`` column on the same loads).
   ``--busiest-everywhere`` runs this section with today's busiest-first planner a candidate at
   every size (``busiest_first_pays`` skips it at 64 GPUs with one spare slot).
3. The exact option (``plan_spare(..., exact=True)`` and ``plan_duplication(..., exact=True)``)
   on Mixtral-8x7B's real routing (``../shared/traces/mixtral_8x7b_vllm``, read with
   ``gps.traces.shared``), batches of 192 tokens: status counts, mean balance of the heuristic
   and of the exact plans, time per layer. Skipped when ``../shared`` is absent.

Run: ``.venv/bin/python benchmarks/bench_spare.py [--runs 9] [--replan-only]``.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from collections import Counter

import numpy as np
import scipy
from machine import describe

from gps.advisor.data import EvalData
from gps.advisor.strategies import Context
from gps.model import load_model_spec
from gps.plans import plan_duplication, plan_spare, replicate_greedy, static_placement
from gps.profiles import load_cluster
from gps.traces.trace import TokenTrace
from gps.workload import Workload

LAYERS, EXPERTS, TOKENS, TOP_K = 61, 256, 8192, 8
CASES = {  # name: (popularity, G, R, seed)
    "dsv3_zipf1_64x5": ("zipf1", 64, 5, 11),
    "dsv3_dirichlet2_64x5": ("dirichlet2", 64, 5, 12),
    "dsv3_zipf1_32x9": ("zipf1", 32, 9, 11),
    "dsv3_dirichlet2_32x9": ("dirichlet2", 32, 9, 12),
}
REPLAN_SEEDS = (21, 22)  # the previous batch's loads, then the re-planned batch's


def routed_loads(popularity: str, seed: int, layers: int = LAYERS) -> np.ndarray:
    """``[L, E]`` tokens per expert: ``TOKENS`` tokens, each routed to ``TOP_K`` distinct experts
    drawn with probability proportional to the layer's popularity (Gumbel top-k)."""
    rng = np.random.default_rng(seed)
    out = np.empty((layers, EXPERTS))
    for layer in range(layers):
        if popularity == "zipf1":
            p = rng.permutation(1.0 / np.arange(1, EXPERTS + 1))
        else:
            p = rng.dirichlet(np.full(EXPERTS, 2.0))
        keys = np.log(p / p.sum()).astype(np.float32) - np.log(
            -np.log(rng.random((TOKENS, EXPERTS), dtype=np.float32) + np.float32(1e-12))
        )
        top = np.argpartition(-keys, TOP_K - 1, axis=1)[:, :TOP_K]
        out[layer] = np.bincount(top.ravel(), minlength=EXPERTS)
    return out


def eplb_repack(load: np.ndarray, g: int, r: int) -> np.ndarray:
    """``[L]`` max GPU load of DeepSeek's EPLB re-pack (module docstring), over all layers."""
    m, e = load.shape
    counts = replicate_greedy(load, g * r)  # no cap: EPLB's replication
    rows = np.arange(m)
    per = load / counts
    items = np.stack([np.repeat(np.arange(e), counts[i]) for i in range(m)])  # [L, G*R]
    w = per[rows[:, None], items]
    w = -np.sort(-w, axis=1)
    gl = np.zeros((m, g))
    used = np.zeros((m, g), dtype=np.int64)
    for j in range(g * r):
        t = np.argmin(np.where(used < r, gl, np.inf), axis=1)
        gl[rows, t] += w[:, j]
        used[rows, t] += 1
    return gl.max(axis=1)


def timed(fn, runs: int) -> tuple[float, list[float], float]:
    """``(median wall ms, all wall ms, median CPU ms)`` of ``runs`` calls after one warm-up
    call. CPU time (this process, ``time.process_time``) leaves out the time other processes
    held the cores: what the call costs on an idle machine, as long as it runs on one core."""
    fn()
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), wall, statistics.median(cpu)


def balance_table(runs: int, wide: bool = True) -> None:
    try:
        from gps.plans import spare_lower_bound
    except ImportError:  # code from before the bound (``PYTHONPATH=<checkout>``): no column
        spare_lower_bound = None

    print("\n## 1. Balance: max GPU load / mean GPU load, mean over 61 layers")
    print("| case | plan_spare | lower_bound | ms | eplb_repack | home_only | layers won | wide "
          "| wide s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (pop, g, r, seed) in CASES.items():
        load = routed_loads(pop, seed)
        mean = load.sum(axis=1) / g
        home = static_placement(LAYERS, EXPERTS, g, r)
        ms, _, _ = timed(lambda load=load, home=home: plan_spare(load, home), runs)
        plan = plan_spare(load, home)
        bound = mean * np.nan if spare_lower_bound is None else spare_lower_bound(load, home)
        maxes = (
            plan.meta["predicted_max_load"],
            bound,
            eplb_repack(load, g, r),
            plan.meta["home_max_load"],
        )
        ratio = [x / mean for x in maxes]
        won = ", ".join(f"{k} {v}" for k, v in Counter(plan.meta.get("choice", [])).most_common())
        wide_cols = "- | -"
        if wide and "wide_search" in inspect.signature(plan_spare).parameters:
            t0 = time.perf_counter()
            wplan = plan_spare(load, home, wide_search=True)
            wide_s = time.perf_counter() - t0
            wide_cols = f"{(wplan.meta['predicted_max_load'] / mean).mean():.4f} | {wide_s:.1f}"
        print(f"| {name} | {ratio[0].mean():.4f} | {ratio[1].mean():.4f} | {ms:.0f} | "
              f"{ratio[2].mean():.4f} | {ratio[3].mean():.4f} | {won} | {wide_cols} |")  # fmt: skip


def replan_context() -> Context:
    """The advisor's ``Context`` for DeepSeek-V3 on 8 nodes x 8 H100 (NVLink, InfiniBand NDR),
    ``R = 5`` (4 home + 1 spare slot per GPU), home + spare replicas migrated from peers."""
    spec = load_model_spec("deepseek_v3")
    cluster = load_cluster({"name": "h100_8x8_ib", "gpu": "h100_sxm5_80gb", "num_nodes": 8,
                            "intra_node_link": "nvlink4", "inter_node_link": "ib_ndr",
                            "gpus_per_node": 8})  # fmt: skip
    z = np.zeros(1, np.int32)
    trace = TokenTrace(np.zeros((1, LAYERS, TOP_K), np.int16), z, z, z, EXPERTS)
    loads = np.zeros((1, LAYERS, EXPERTS), np.int64)
    data = EvalData(trace, trace, loads, loads, TOKENS, "bench_spare")
    work = Workload(phase="prefill", batch_size=1, seq_len=TOKENS)
    return Context(
        spec=spec,
        cluster=cluster,
        workload=work,
        data=data,
        slots_per_gpu=5,
        replicas="spare",
        migration_source="peer",
    )


def replan_row(runs: int) -> None:
    ctx = replan_context()
    before, load = (routed_loads("zipf1", s) for s in REPLAN_SEEDS)
    previous = ctx.plan(before, None)
    ms, times, cpu = timed(lambda: ctx.candidates(load, previous), runs)
    plans = ctx.candidates(load, previous)
    mean = load.sum(axis=1) / 64
    bal = plans[1].gpu_load(load).max(axis=1) / mean
    print("\n## 2. Migration-minimal re-plan as the advisor runs it (Context.candidates)")
    print(f"| case | plan_spare | ms (median of {runs}) | min-max ms | CPU ms (median) |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| dsv3_zipf1_replan_64x5 | {bal.mean():.4f} | {ms:.0f} | {min(times):.0f}-"
          f"{max(times):.0f} | {cpu:.0f} |")  # fmt: skip


def exact_mixtral() -> None:
    try:
        from gps.plans.exact import PROVED
    except ImportError:  # code from before these statuses
        print("\n## 3. skipped: this checkout's gps.plans.exact has no PROVED statuses")
        return
    from gps.traces.batching import batch_loads
    from gps.traces.shared import mixtral_vllm_trace

    print("\n## 3. Exact option on Mixtral-8x7B's real routing (vLLM trace, 192-token batches)")
    try:
        trace = mixtral_vllm_trace()
    except FileNotFoundError as exc:
        print(f"skipped: {exc}")
        return
    loads = batch_loads(trace, 192).reshape(-1, 8) * 1.0  # [batches * 32, 8]
    print(f"{loads.shape[0]} layer loads; max load / mean GPU load, mean over them")
    print("| mode | G x R | heuristic | exact | statuses | proved | s / layer |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode in ("spare", "repack"):
        for g, r in ((8, 2), (4, 3)):
            mean = loads.sum(axis=1) / g
            home = static_placement(loads.shape[0], 8, g, r)

            def plan(exact: bool, mode=mode, g=g, r=r, home=home):
                if mode == "spare":
                    return plan_spare(loads, home, exact=exact)
                return plan_duplication(loads, g, r, exact=exact)

            heur = plan(False).meta["predicted_max_load"] / mean
            t0 = time.perf_counter()
            ex = plan(True)
            dt = (time.perf_counter() - t0) / loads.shape[0]
            val = ex.meta["predicted_max_load"] / mean
            st = Counter(ex.meta["exact_status"])
            proved = sum(st[s] for s in PROVED)
            counts = ", ".join(f"{k} {v}" for k, v in sorted(st.items()))
            print(f"| {mode} | {g}x{r} | {heur.mean():.4f} | {val.mean():.4f} | {counts} | "
                  f"{proved}/{loads.shape[0]} | {dt:.3f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="timed calls per figure")
    parser.add_argument("--replan-only", action="store_true", help="section 2 only")
    parser.add_argument("--no-wide", action="store_true", help="no wide_search column")
    parser.add_argument(
        "--busiest-everywhere",
        action="store_true",
        help="section 1 only, today's busiest-first planner a candidate at any "
        "size (how often it would win where busiest_first_pays skips it)",
    )
    args = parser.parse_args()
    if args.busiest_everywhere:
        import gps.plans.spare as spare

        spare.BUSIEST_GPUS = 1 << 30
        print("# bench_spare --busiest-everywhere")
        balance_table(args.runs, wide=False)
        return
    print("# bench_spare")
    print(describe(f"scipy {scipy.__version__}"))
    with open("/proc/loadavg") as f:
        print("load average at start:", " ".join(f.read().split()[:3]))
    t0 = time.perf_counter()
    if not args.replan_only:
        balance_table(args.runs, wide=not args.no_wide)
    replan_row(args.runs)
    if not args.replan_only:
        exact_mixtral()
    print(f"\nbenchmark wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
