"""The guideline map's tables for ``docs/advisor.md`` (and the what-if figures of
``docs/cost_model.md``), from one run of ``gps +experiment=guideline_map``.

    python benchmarks/guideline_map_table.py [RUN_DIR]

Without ``RUN_DIR`` it runs ``gps +experiment=guideline_map cache=off`` (timed; the run lands in
``reports/runs/<date>/<time>/``, the path its last line prints) and summarises that run; with
``RUN_DIR`` (a folder holding ``guideline_map.csv``, e.g. an earlier run or a merged multirun) it
only summarises. Prints, at the lowest swept overhead:

* per expert-memory setting, link and step size: how many (skew, accuracy) points each family
  wins and how many tie (``winner`` of ``guideline_map.csv``), with the range of the
  Distribution-Only and oracle speed-ups over the skews;
* every cell where Token-to-Expert wins a point: the accuracies and margins;
* the what-if curve figures (``gps.report.guideline_map.whatif_curve``) and the cells whose
  curve rises more than 1% into the highest accuracy;
* the physics that explains the map: each step's attention and expert time per layer (uniform
  routing, the map's cluster) and one expert's copy time over each swept link and over the
  fetch link of non-resident experts.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gps.advisor.guideline_map import step_workload, with_link  # noqa: E402
from gps.cost.e2e import batch_cost  # noqa: E402
from gps.cost.step import transfer_seconds  # noqa: E402
from gps.model import load_model_spec  # noqa: E402
from gps.plans import expert_weight_bytes  # noqa: E402
from gps.profiles import load_cluster_config, load_link  # noqa: E402
from gps.report.guideline_map import whatif_curve  # noqa: E402

COMMAND = ["+experiment=guideline_map", "cache=off"]
# The preset's model, cluster and fetch link (conf/experiment/guideline_map.yaml, conf/config.yaml,
# conf/strategy/default.yaml): the physics lines price the same ones.
MODEL, HARDWARE, FETCH = "mixtral_8x7b", "a100_4gpu_nvlink", "pcie_gen5_x16"


def run_map() -> Path:
    """Run the preset, print its wall time, return its run folder."""
    t0 = time.perf_counter()
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "gps"), *COMMAND], cwd=ROOT, text=True,
                         capture_output=True, check=True).stdout  # fmt: skip
    wall = time.perf_counter() - t0
    m = re.search(r"^report: (.+)$", out, re.M)
    if m is None:
        print("gps printed no 'report: <path>' line", file=sys.stderr)
        raise SystemExit(1)
    print(f"`gps {' '.join(COMMAND)}`: {wall:.1f} s wall")
    return Path(m.group(1)).parent


def read_rows(run_dir: Path) -> list[dict]:
    """``guideline_map.csv`` of ``run_dir`` with numbers parsed."""
    path = run_dir / "guideline_map.csv"
    if not path.is_file():
        print(f"{path}: not found (a guideline-map run folder holds it)", file=sys.stderr)
        raise SystemExit(2)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k != "winner" and v not in ("", None):
                r[k] = float(v)
    return rows


def summary(rows: list[dict]) -> None:
    """The tables described in the module docstring, as Markdown."""
    lo = min(r["overhead_us"] for r in rows)
    zero = [r for r in rows if r["overhead_us"] == lo]
    tokens = sorted({int(r["tokens_per_step"]) for r in zero})
    count = Counter(r["winner"] for r in zero)
    print(
        f"\nAt {lo:g} us/layer: {len(zero)} (cell, accuracy) points; Token-to-Expert wins "
        f"{count['token']}, Distribution-Only {count['distribution']}, ties {count['tie']}.\n"
    )
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in zero:
        cells[(r["resident_experts"], r["link_gbps"], int(r["tokens_per_step"]))].append(r)
    print("| resident | link GB/s | " + " | ".join(f"{t:,} tokens" for t in tokens) + " |")
    print("| --- | --- |" + " --- |" * len(tokens))
    for res in sorted({k[0] for k in cells}, reverse=True):
        for link in sorted({k[1] for k in cells}, reverse=True):
            out = []
            for t in tokens:
                pts = cells.get((res, link, t), [])
                if not pts:
                    out.append("-")
                    continue
                c = Counter(r["winner"] for r in pts)
                do = [r["distribution_speedup"] for r in pts]
                orc = [r["oracle_speedup"] for r in pts]
                out.append(f"T {c['token']} / D {c['distribution']} / tie {c['tie']}; "
                           f"DO {min(do):.3f}-{max(do):.3f}x, oracle "
                           f"{min(orc):.3f}-{max(orc):.3f}x")  # fmt: skip
            print(f"| {res:g} | {link:g} | " + " | ".join(out) + " |")
    print("\nCells where Token-to-Expert wins a point (accuracy: margin over Distribution-Only):")
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for r in zero:
        by_cell[(r["resident_experts"], r["link_gbps"], r["skew_target"],
                 int(r["tokens_per_step"]))].append(r)  # fmt: skip
    for (res, link, skew, t), pts in sorted(by_cell.items()):
        if any(r["winner"] == "token" for r in pts):
            wins = ", ".join(f"{r['accuracy']:g}: {r['margin']:+.2%}"
                             for r in sorted(pts, key=lambda r: r["accuracy"]))  # fmt: skip
            print(f"- resident {res:g}, {link:g} GB/s, skew {skew:g}, {t:,} tokens "
                  f"(DO {pts[0]['distribution_speedup']:.3f}x, oracle "
                  f"{pts[0]['oracle_speedup']:.3f}x): {wins}")  # fmt: skip
    print("\nCells whose what-if speed-up rises more than 1% from the second-highest accuracy "
          "to the highest (accuracy: speed-up):")  # fmt: skip
    for (res, link, skew, t), pts in sorted(by_cell.items()):
        s = [r["token_speedup"] for r in sorted(pts, key=lambda r: r["accuracy"])]
        if len(s) > 1 and s[-1] / s[-2] - 1.0 > 0.01:
            curve = ", ".join(f"{r['accuracy']:g}: {r['token_speedup']:.4f}x"
                              for r in sorted(pts, key=lambda r: r["accuracy"]))  # fmt: skip
            print(f"- resident {res:g}, {link:g} GB/s, skew {skew:g}, {t:,} tokens (DO "
                  f"{pts[0]['distribution_speedup']:.4f}x): {curve}")  # fmt: skip
    c = whatif_curve(rows)
    print(f"\nWhat-if curves at {lo:g} us/layer: non-decreasing in {c['non_decreasing']} of "
          f"{c['cells']} cells, largest dip {c['largest_dip']:.2%}, largest rise between the two "
          f"highest accuracies {c['last_step']:.2%} (any other neighbours: "
          f"{c['earlier_rise']:.2%}).")  # fmt: skip


def physics(tokens: list[int], links: list[float]) -> None:
    """Per-layer attention / expert time of each step and one expert's copy time per link."""
    spec, cluster = load_model_spec(MODEL), load_cluster_config(HARDWARE)
    nbytes = expert_weight_bytes(spec)

    def ms(link) -> str:
        return f"{float(transfer_seconds(nbytes, link)) * 1e3:.2f} ms"

    swept = ", ".join(f"{g:g} GB/s {ms(with_link(cluster, g).intra_link)}" for g in links)
    print(f"\nOne {spec.name} expert: {nbytes / 1e6:.0f} MB; over {FETCH}: "
          f"{ms(load_link(FETCH))}; over the swept links: {swept}.")  # fmt: skip
    for t in tokens:
        r = batch_cost(spec, cluster, step_workload(t))
        att, exp = r.components["attention"], r.components["experts"]
        print(f"- {t:,} tokens on {HARDWARE} (uniform routing): attention "
              f"{att.sum() / att.shape[-1] * 1e3:.3f} ms, experts "
              f"{exp.sum() / exp.shape[-1] * 1e3:.3f} ms per MoE layer")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a guideline-map run folder (default: run it)")
    args = parser.parse_args()
    print("# guideline_map_table")
    print(describe())
    run_dir = Path(args.run_dir) if args.run_dir else run_map()
    print(f"run: {run_dir}")
    rows = read_rows(run_dir)
    summary(rows)
    physics(sorted({int(r["tokens_per_step"]) for r in rows}),
            sorted({r["link_gbps"] for r in rows}, reverse=True))  # fmt: skip


if __name__ == "__main__":
    main()
