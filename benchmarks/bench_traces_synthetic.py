"""Throughput of the synthetic trace generator (``gps/traces/synthetic.py``).

Generates ``mixtral_mmlu_like`` and ``deepseek_like`` at ~1M tokens (token-layer
assignments per second = ``T * L / seconds``, output validation included) and the
``training_gpt_350m_like`` load series (steps per second), and prints the machine.

    .venv/bin/python benchmarks/bench_traces_synthetic.py [--tokens 1048576] [--repeat 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

from machine import describe

from gps.traces.synthetic import generate_load_series, generate_token_trace, load_preset


def best_of(repeat: int, run) -> float:
    """Fastest wall-clock seconds of ``repeat`` runs of ``run()``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1 << 20, help="tokens per token trace")
    parser.add_argument("--steps", type=int, default=60000, help="load-series steps")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (best kept)")
    args = parser.parse_args()
    print(describe(platform.platform()))
    print("| preset | size | threads | seconds | throughput |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in ("mixtral_mmlu_like", "deepseek_like"):
        config = dataclasses.replace(load_preset(name), num_tokens=args.tokens)
        for threads in sorted({1, min(2, os.cpu_count() or 1)}):
            sec = best_of(
                args.repeat, lambda c=config, t=threads: generate_token_trace(c, threads=t)
            )
            rate = args.tokens * config.num_layers / sec
            print(
                f"| {name} | {args.tokens:,} tokens x {config.num_layers} layers | {threads} "
                f"| {sec:.2f} | {rate / 1e6:.2f} M token-layer assignments/s |"
            )
    series = dataclasses.replace(load_preset("training_gpt_350m_like"), num_steps=args.steps)
    sec = best_of(args.repeat, lambda: generate_load_series(series))
    print(
        f"| training_gpt_350m_like | {args.steps:,} steps x {series.num_layers} layers x "
        f"{series.num_experts} experts | 1 | {sec:.2f} | {args.steps / sec / 1e3:.0f} k steps/s |"
    )


if __name__ == "__main__":
    main()
