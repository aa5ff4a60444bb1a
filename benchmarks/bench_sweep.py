"""Sweep throughput: one grid through the basic, joblib (2 workers) and Ray (2 workers) launchers.

Grid: ``hardware=h100_nvlink,a100_nvlink`` x ``workload.batch_size=1,2,4,8`` (8 configurations),
each a small advisor run (prefill, 1024-token prompts, 4 history + 4 held-out steps, the
``fast`` predictors, ``report=minimal``, no ILP). Times the whole ``gps -m`` command (Python
start-up and Hydra composition included) and reports configurations per second. Ray runs on a
local head this script starts on 127.0.0.1 and stops afterwards; Ray's start is not timed.

Run: ``.venv/bin/python benchmarks/bench_sweep.py``
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

GRID = ["hardware=h100_nvlink,a100_nvlink", "workload.batch_size=1,2,4,8"]
POINTS = 8
TINY = ["workload.seq_len=1024", "evaluation.train_batches=4", "evaluation.test_batches=4",
        "predictor=fast", "report=minimal", "strategy.ilp=false"]  # fmt: skip
ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
}  # fmt: skip  (loopback-only Ray, see tests/test_scale_out.py)
GPS = [sys.executable, "-c", "from gps.app import main; main()"]


def sweep(out: Path, *launcher: str, env: dict | None = None) -> float:
    """Seconds of one ``gps -m`` over the grid; every run must finish."""
    t0 = time.perf_counter()
    proc = subprocess.run([*GPS, "-m", *TINY, *GRID, *launcher, f"hydra.sweep.dir={out}"],
                          capture_output=True, text=True, env=env or ENV)  # fmt: skip
    seconds = time.perf_counter() - t0
    done = len(list(out.glob("*/results.json")))
    if proc.returncode != 0 or done != POINTS:
        sys.exit(f"sweep {launcher} failed ({done}/{POINTS} runs):\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    print(f"{describe()}; grid: {POINTS} configurations")
    ray = Path(sys.executable).with_name("ray")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = [("basic (one process)", sweep(root / "basic")),
                ("joblib, 2 workers", sweep(root / "joblib", "hydra/launcher=joblib",
                                            "hydra.launcher.n_jobs=2"))]  # fmt: skip
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                        "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                       check=True, capture_output=True, env=ENV)  # fmt: skip
        try:
            env = {**ENV, "RAY_ADDRESS": f"127.0.0.1:{port}"}
            rows.append(("ray, 2 workers", sweep(root / "ray", "hydra/launcher=ray", env=env)))
        finally:
            subprocess.run([ray, "stop", "--force"], capture_output=True, env=ENV)
    print(f"{'launcher':22s} {'seconds':>8s} {'configs/s':>10s} {'vs basic':>9s}")
    for name, sec in rows:
        print(f"{name:22s} {sec:8.1f} {POINTS / sec:10.3f} {rows[0][1] / sec:8.2f}x")


if __name__ == "__main__":
    main()
