"""Vectorised cost model vs a per-configuration Python loop (Mixtral-8x7B on 8x H100, prefill).

A *layer evaluation* is one (sweep point, MoE layer) pair priced by ``batch_cost``: attention,
gate, dispatch and combine all-to-alls, per-GPU expert time and its max, shared experts, the
balanced bound, plus the per-point end-to-end sums. Each sweep point is a full Mixtral batch
(32 MoE layers, random ``slot_tokens [32, G=8, R=2]`` and random dispatch traffic), so
``layer evaluations = points x 32``. Two plain Python loops run on a subset and are
extrapolated per layer evaluation:

* per batch: the same ``batch_cost`` once per point (``N = 1``; still vectorised over its 32
  layers inside, so this is the conservative comparison);
* per layer configuration: the routing-dependent layer functions once per (point, layer),
  ``alltoall_time([G, G])``, ``max(expert_time_per_gpu([G, R]))``, ``balanced_expert_time``
  (attention, gate and shared experts do not depend on routing and are left out, which
  favours the loop).

Input generation is not timed. The mechanisms of issue 13 are on by default: DeepEP all-to-all
(per-direction dtypes, de-duplication), two-batch overlap (the critical path of two
interleaved micro-batches: a second pricing at half the batch), the H100's fitted roofline
knee; the per-layer loop then calls ``moe_alltoall_times`` and ``two_batch_schedule`` per layer
too. ``--plain`` runs the flat all-to-all without overlap.

Run: ``.venv/bin/python benchmarks/bench_cost_model.py [--points 200000] [--loop-points 300]
[--plain]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from machine import describe

from gps.cost.comm import dedup_factors, moe_alltoall_times
from gps.cost.e2e import batch_cost, two_batch_schedule
from gps.cost.experts import balanced_expert_time, expert_time_per_gpu
from gps.cost.step import StepRouting
from gps.model import load_model_spec
from gps.profiles import load_cluster_config
from gps.workload import Workload

CLUSTER = load_cluster_config("h100_nvlink")
H100 = CLUSTER.gpu
MIXTRAL = load_model_spec("mixtral_8x7b")
MECHANISMS = Workload(phase="prefill", batch_size=8, seq_len=2048, alltoall="deepep",
                      overlap="two_batch")  # fmt: skip
PLAIN = Workload(phase="prefill", batch_size=8, seq_len=2048, alltoall="flat", overlap="none")
LAYERS, G, R = 32, 8, 2


def random_inputs(rng: np.random.Generator, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Random ``slot_tokens [points, 32, 8, 2]`` and ``traffic_bytes [points, 32, 8, 8]``."""
    slots = rng.integers(0, 4096, size=(points, LAYERS, G, R)).astype(float)
    traffic = rng.uniform(0.0, 64e6, size=(points, LAYERS, G, G))
    return slots, traffic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000, help="vectorised sweep points")
    parser.add_argument("--chunk", type=int, default=1_000, help="points per vectorised call")
    parser.add_argument("--loop-points", type=int, default=300, help="points in each loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain", action="store_true", help="flat all-to-all, no overlap")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    workload = PLAIN if args.plain else MECHANISMS
    overlap = workload.overlap == "two_batch"
    dedup = dedup_factors(MIXTRAL, CLUSTER)

    print(describe())
    print(f"model {MIXTRAL.name}, {CLUSTER.name} (roofline knee {H100.roofline_knee}), {workload}")

    vec_s, checksum = 0.0, 0.0
    for start in range(0, args.points, args.chunk):
        slots, traffic = random_inputs(rng, min(args.chunk, args.points - start))
        t0 = time.perf_counter()
        cost = batch_cost(MIXTRAL, CLUSTER, workload, StepRouting(slots, traffic))
        vec_s += time.perf_counter() - t0
        checksum += float(cost.total_s.sum())
    vec_evals = args.points * LAYERS

    slots, traffic = random_inputs(rng, args.loop_points)
    t0 = time.perf_counter()
    for i in range(args.loop_points):
        batch_cost(MIXTRAL, CLUSTER, workload, StepRouting(slots[i], traffic[i]))
    batch_loop_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.loop_points):
        for layer in range(LAYERS):
            for half in (1.0, 0.5) if overlap else (1.0,):
                d, c, _, _ = moe_alltoall_times(
                    traffic[i, layer][None] * half, CLUSTER, mode=workload.alltoall, dedup=dedup
                )
                e = expert_time_per_gpu(slots[i, layer] * half, MIXTRAL, H100).max()
                balanced_expert_time(slots[i, layer] * half, MIXTRAL, H100)
            if overlap:
                two_batch_schedule(np.ones(1), d, np.full(1, e), c)[0]
    layer_loop_s = time.perf_counter() - t0
    loop_evals = args.loop_points * LAYERS

    vec_rate = vec_evals / vec_s
    print(
        f"vectorised: {args.points:,} points x {LAYERS} MoE layers = {vec_evals:,} layer "
        f"evaluations in {vec_s:.3f} s (batch_cost on chunks of {args.chunk:,} points) -> "
        f"{vec_rate:,.0f} layer evaluations/s"
    )
    for name, sec in (("per-batch loop", batch_loop_s), ("per-layer loop", layer_loop_s)):
        rate = loop_evals / sec
        print(
            f"{name}: {loop_evals:,} layer evaluations in {sec:.3f} s -> {rate:,.0f} layer "
            f"evaluations/s; vectorised speed-up {vec_rate / rate:,.0f}x"
        )
    print(f"checksum of total_s: {checksum:.6e} s")


if __name__ == "__main__":
    main()
