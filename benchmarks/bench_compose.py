"""Seconds Hydra spends composing one job's configuration (what a sweep's launcher pays per job).

``docs/scale_out.md`` bounds a single sweep's launch rate by this figure: every job's config is
composed in the launching process. Composes the ``gps`` config ``--repeat`` times with sweep-
style overrides (a different model / hardware / batch size each time) through
``hydra.compose`` and prints the median and the spread.

Run: ``.venv/bin/python benchmarks/bench_compose.py [--repeat 50]``
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

from hydra import compose, initialize_config_dir
from machine import describe

from gps.app import CONF_DIR

GRID = [
    [f"model={m}" for m in ("mixtral_8x7b", "qwen3_30b_a3b", "deepseek_v2_lite")],
    [f"hardware={h}" for h in ("h100_nvlink", "a100_nvlink")],
    [f"workload.batch_size={b}" for b in (4, 8, 16)],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(describe())
    jobs = itertools.islice(itertools.cycle(itertools.product(*GRID)), args.repeat + 1)
    times = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for i, overrides in enumerate(jobs):
            start = time.perf_counter()
            compose(config_name="config", overrides=list(overrides))
            if i:  # the first compose also loads Hydra's plugins: not a per-job cost
                times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=10)
    print(
        f"compose: median {statistics.median(times):.3f} s, 10-90% {q[0]:.3f}-{q[-1]:.3f} s, "
        f"min {min(times):.3f} s over {len(times)} composes "
        f"(~{1 / statistics.median(times):.0f} configurations/s from one launcher)"
    )


if __name__ == "__main__":
    main()
