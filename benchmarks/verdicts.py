"""The verdicts of the three runs the README names -- default, decode and the real ESFT routing --
in one table: the recommendation and its 95% interval, the oracle, the ceiling, and the best of
each family, with a check of the bounds (no deployable strategy ahead of the oracle, nothing
ahead of ``oracle_free_migration``).

    python benchmarks/verdicts.py --run OUT          # runs the three (about 2-4 min on 2 cores)
    python benchmarks/verdicts.py OUT/default OUT/decode ...   # tables of finished runs

The ESFT run needs ``../shared/traces/deepseek_v2_lite_esft/`` (converted on the fly into
``OUT/esft.npz``); it is skipped with a message when that folder is absent. Runs of an older
release (no ``speedup_ci95``) print ``-`` for the interval.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from gps.advisor.advise import MAX_CHANGED_FRACTION
from gps.advisor.strategies import FOLLOWABLE

ROOT = Path(__file__).resolve().parents[1]
ESFT = ROOT.parent / "shared" / "traces" / "deepseek_v2_lite_esft" / "esft_routing_compact.npz"
BIN = Path(sys.executable).parent
RUNS = {
    "default": [],
    "decode": ["workload=decode"],
    "esft": ["model=deepseek_v2_lite", "evaluation.trace_path={esft}", "workload.batch_size=2",
             "workload.seq_len=512"],
}  # fmt: skip
# Families that serve every token copy where the gate sends it (the oracle can follow each):
# what the bounds cover.
BOUNDED = tuple(f for f in FOLLOWABLE if f != "oracle")


def run_all(out: Path) -> list[Path]:
    """Run the three into ``out/<name>`` (``cache=off``); return the finished run folders."""
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for name, over in RUNS.items():
        if name == "esft":
            if not ESFT.is_file():
                print(f"skipped esft: {ESFT} is absent", file=sys.stderr)
                continue
            npz = out / "esft.npz"
            subprocess.run([BIN / "gps-trace", "convert", "--format", "arrays", str(ESFT),
                            str(npz), "--num-experts", "64"], check=True)  # fmt: skip
            over = [o.format(esft=npz) for o in over]
        target = out / name
        cmd = [BIN / "gps", *over, "cache=off", "progress=false", f"hydra.run.dir={target}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        done.append(target)
    return done


def interval(s: dict) -> str:
    ci = s.get("speedup_ci95")
    return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"


def row(run: Path) -> list[str]:
    res = json.loads((run / "results.json").read_text())
    by = {s["name"]: s for s in res["strategies"]}
    rec = by[res["recommendation"]["strategy"]]

    def best(family: str) -> str:
        pool = [s for s in res["strategies"] if s["family"] == family and not s["synthetic"]]
        if not pool:
            return "-"
        s = max(pool, key=lambda s: s["speedup_vs_baseline"])
        return f"{s['name']} {s['speedup_vs_baseline']:.3f}x ({interval(s)})"

    deployable = [
        s
        for s in res["strategies"]
        if s["family"] in BOUNDED
        and not s["synthetic"]
        and s["dropped_token_fraction"] + s["rerouted_token_fraction"] <= MAX_CHANGED_FRACTION
    ]
    oracle, ceiling = by["oracle"], by["oracle_free_migration"]
    fast = max(s["speedup_vs_baseline"] for s in deployable)
    top = max(s["speedup_vs_baseline"] for s in res["strategies"] if s["family"] in BOUNDED)
    ok = fast <= oracle["speedup_vs_baseline"] * (1 + 1e-9) and max(
        top, oracle["speedup_vs_baseline"]
    ) <= ceiling["speedup_vs_baseline"] * (1 + 1e-9)
    return [run.name, f"{rec['name']} {rec['speedup_vs_baseline']:.3f}x", interval(rec),
            f"{oracle['speedup_vs_baseline']:.3f}x", f"{ceiling['speedup_vs_baseline']:.3f}x",
            best("distribution"), best("token"), "yes" if ok else "NO"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="finished run folders (results.json)")
    p.add_argument("--run", type=Path, help="run the default, decode and ESFT runs here first")
    args = p.parse_args(argv)
    runs = [*(run_all(args.run) if args.run else []), *args.runs]
    if not runs:
        p.error("give run folders or --run OUT")
    head = ["run", "recommendation", "95% interval", "oracle", "oracle_free_migration",
            "best Distribution-Only", "best Token-to-Expert", "bounds hold"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for run in runs:
        print("| " + " | ".join(row(run)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
