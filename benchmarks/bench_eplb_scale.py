"""gps-eplb at DeepSeek-V3 size: 58 MoE layers x 256 experts, 1,000 recorded steps, EP32-EP320.

Writes a synthetic SGLang ``stat`` recorder dump (``logical_count [1000, 58, 256]``: a skewed
start per layer and a random-walk drift, multinomial counts of 4,096 tokens x top-8 per step,
seeded) to a temporary folder and runs the whole ``gps-eplb`` analysis (both pools, every
curve) on H800 clusters of 4 and 40 nodes. Prints wall and CPU seconds per run, the machine's
load average (the figures are noisy on a shared machine: compare CPU seconds), and each pool's
verdict.

Run: ``.venv/bin/python benchmarks/bench_eplb_scale.py`` (about a minute per EP320 run on 2
cores). Quoted in ``docs/eplb.md``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe

from gps.eplb_app import compose_config, run
from gps.traces.engine_stats import sglang_stat_dump, write_sglang_dump

SETTINGS = {
    "EP32": [
        "hardware.num_nodes=4",
        "workload.batch_size=2",
        "workload.seq_len=2048",
        "eplb.decode_batch_size=2048",
        "eplb.decode_context_len=4096",
    ],
    "EP320": [
        "hardware.num_nodes=40",
        "hardware.name=h800_40node_ib",
        "workload.batch_size=20",
        "workload.seq_len=2048",
        "eplb.decode_batch_size=20480",
        "eplb.decode_context_len=4096",
    ],
}


def synthetic_dump(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    steps, layers, experts, copies = 1000, 58, 256, 4096 * 8
    base = rng.dirichlet(np.full(experts, 0.7), size=layers)
    drift = np.cumsum(rng.normal(0, 0.02, (steps, layers, experts)), axis=0)
    p = np.exp(np.log(base)[None] + drift)
    p /= p.sum(-1, keepdims=True)
    counts = rng.multinomial(copies, p).astype(np.int32)
    return write_sglang_dump(sglang_stat_dump(counts), path)


def main() -> int:
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        dump = synthetic_dump(Path(tmp) / "expert_distribution_recorder_0.pt")
        print(f"dump: {dump.stat().st_size / 1e6:.1f} MB, 1000 x 58 x 256")
        print("| setting | engine | wall s | CPU s | load avg | prefill verdict | decode verdict |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, overrides in SETTINGS.items():
            for engine in ("sglang", "vllm"):
                cfg = compose_config("deepseek_v3", "h800_4node_ib", overrides, engine)
                w0, c0 = time.perf_counter(), time.process_time()
                results, _, _ = run([str(dump)], engine, cfg)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                pools = results["eplb"]["pools"]
                cells = [
                    f"{p['verdict']} {p['speedup']:.2f}x (R={p['num_redundant_experts']}, "
                    f"I={p['rebalance_interval_steps']})"
                    for p in pools.values()
                ]
                print(
                    f"| {name} | {engine} | {wall:.1f} | {cpu:.1f} | "
                    f"{os.getloadavg()[0]:.1f} | {cells[0]} | {cells[1]} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
