"""Run-time benchmark of the on-disk cache and the trimmed hot paths (issue 16), one invocation.

Times, each as a separate ``gps`` process (Python start-up, Hydra composition, report and plots
included), wall seconds and the process's CPU seconds (user + system, which a machine shared
with other work inflates less than wall time):

1. ``baseline``: the default run of another checkout (``--baseline DIR``, e.g. the commit
   before this work: ``git worktree add /tmp/base 38ed87c``), no cache there;
2. ``cold``: the default run of this tree with an empty cache folder;
3. ``warm_hardware``: the same config with ``hardware=a100_nvlink`` (a different cluster),
   cache filled by 2.: the trace, predictors, what-if histograms and ILP are hits;
4. ``sweep_cold`` / ``sweep_warm``: a 16-config ``hydra/launcher=joblib`` sweep
   (``hardware`` x 4, ``strategy.replica_slots_per_gpu`` x 2, ``workload.batch_size`` x 2,
   ``report=minimal``, 2 workers) on an empty cache, then again on the filled one.

Ratios are what to quote: the runs share the machine, so on a loaded machine all wall times
stretch together. Writes ``reports/bench_run.json``.

Run: ``.venv/bin/python benchmarks/bench_run.py [--baseline /tmp/base] [--no-sweep]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent
GPS = [sys.executable, "-c", "from gps.app import main; main()"]
SWEEP = ["hardware=h100_nvlink,a100_nvlink,h200_nvlink,h100_2node_ib",
         "strategy.replica_slots_per_gpu=0,1", "workload.batch_size=4,8", "report=minimal",
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]  # fmt: skip


def timed(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Wall and CPU seconds of one command (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(
            f"{' '.join(cmd[3:])} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="checkout to time as today's path (its own gps)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the 16-config sweep")
    args = parser.parse_args()
    out: dict = {"machine": describe(f"load average {os.getloadavg()[0]:.1f} at start")}
    with tempfile.TemporaryDirectory(prefix="gps-bench-run-") as tmp:
        tmp = Path(tmp)

        def env(tree: Path, cache: str) -> dict:
            return {**os.environ, "PYTHONPATH": str(tree), "GPS_CACHE_DIR": str(tmp / cache)}

        if args.baseline:
            base = Path(args.baseline).resolve()
            out["baseline"] = timed([*GPS, f"hydra.run.dir={tmp}/base"], base, env(base, "b"))
            print(f"baseline (default run, {base}): {out['baseline']}", flush=True)
        out["cold"] = timed([*GPS, f"hydra.run.dir={tmp}/cold"], ROOT, env(ROOT, "c"))
        print(f"cold (default run, empty cache): {out['cold']}", flush=True)
        warm = [*GPS, "hardware=a100_nvlink", f"hydra.run.dir={tmp}/warm"]
        out["warm_hardware"] = timed(warm, ROOT, env(ROOT, "c"))
        print(f"warm (hardware=a100_nvlink, cache filled): {out['warm_hardware']}", flush=True)
        if not args.no_sweep:
            for name in ("sweep_cold", "sweep_warm"):
                cmd = [*GPS, "-m", *SWEEP, f"hydra.sweep.dir={tmp}/{name}"]
                out[name] = timed(cmd, ROOT, env(ROOT, "s"))
                print(f"{name} (16 configs, joblib x2): {out[name]}", flush=True)
    out["load_average_end"] = round(os.getloadavg()[0], 1)
    c, w = out["cold"]["wall_s"], out["warm_hardware"]["wall_s"]
    out["warm_over_cold"] = round(w / c, 3)
    if "baseline" in out:
        out["baseline_over_cold"] = round(out["baseline"]["wall_s"] / c, 2)
        out["baseline_over_cold_cpu"] = round(out["baseline"]["cpu_s"] / out["cold"]["cpu_s"], 2)
    if "sweep_cold" in out:
        sweep = out["sweep_warm"]["wall_s"] / out["sweep_cold"]["wall_s"]
        out["sweep_warm_over_cold"] = round(sweep, 3)
    print(json.dumps(out, indent=1))
    path = ROOT / "reports" / "bench_run.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
