"""Fit a GPU profile's efficiency factors to ``measure.py`` output; optionally write them back.

    python benchmarks/gpu/fit.py RESULTS.json --profile h100_sxm5_80gb [--write]

Prints the anchors (8192^3 matmul and copy efficiencies, per-launch seconds), the fitted
expert-FFN compute/memory efficiencies, and measured vs modelled seconds per point. With
``--write`` it replaces the profile's ``measured:`` block (``gps.profiles.write_measured``,
validated, atomic). Runs anywhere: no GPU needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import groupby
from pathlib import Path

from gps.calibration import anchors, fit_expert_ffn
from gps.profiles import load_gpu, resolve_profile, write_measured


def knee_table(ffn: list[dict], fit, peak: float, bandwidth: float) -> None:
    """Where the fitted roofline's knee sits, and the grouped GEMM's achieved fraction of peak
    FLOP/s (``F / (t * peak)``) by tokens per expert, for each measured expert shape."""
    p = fit.knee_exponent
    for (model, d, f), rows in groupby(
        ffn, key=lambda r: (r["model"], r["hidden"], r["intermediate"])
    ):
        rows = list(rows)
        e = rows[0]["experts"]
        # compute = memory: 6*d*f*M/(peak*c) = a*(3*d*f + 2*(d+f)*M)/(bw*m), a = 2 (bf16)
        rate = 6 * d * f / (peak * fit.compute_efficiency)
        per_w, per_tok = 2 * 3 * d * f / (bandwidth * fit.memory_efficiency), 2 * 2 * (d + f) / (
            bandwidth * fit.memory_efficiency)  # fmt: skip
        knee = per_w / (rate - per_tok)
        print(
            f"knee ({model}, {e} experts, d={d}, f={f}): compute = memory at {knee:.0f} "
            f"tokens/expert; there the fit is 2**(1/{p:g}) = {2 ** (1 / p):.3f}x the sharp max"
        )
        print(f"  {'tokens/expert':>13s} {'measured % of peak':>19s} {'fit % of peak':>14s}")
        for row, pred in zip(ffn, fit.predicted_s, strict=True):
            if row in rows:
                measured = row["flops"] / row["seconds"] / peak
                print(f"  {row['tokens_per_expert']:13d} {measured:19.1%} "
                      f"{row['flops'] / pred / peak:14.1%}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", help="JSON written by benchmarks/gpu/measure.py")
    parser.add_argument("--profile", required=True, help="GPU profile stem or path")
    parser.add_argument("--write", action="store_true", help="write the measured: block")
    args = parser.parse_args(argv)
    data = json.loads(Path(args.results).read_text())
    rows = data["measurements"]
    gpu = load_gpu(args.profile)
    anchor = anchors(rows, gpu, data.get("dtype", "bf16"))
    launch = anchor.get("launch_graph_s", gpu.launch_overhead_s)
    fit = fit_expert_ffn(rows, gpu, launch, data.get("dtype", "bf16"))
    print(f"device {data['device']}, torch {data['torch']}, {data['date']}")
    for key, value in anchor.items():
        print(f"  {key:28s} {value:.4g}")
    print(f"expert-FFN fit: compute_efficiency {fit.compute_efficiency:.3f}, "
          f"memory_efficiency {fit.memory_efficiency:.3f}, "
          f"knee_exponent {fit.knee_exponent:.2f}, launch {launch * 1e6:.2f} us (fixed), "
          f"max |model/measured - 1| = {fit.max_rel_error:.1%}")  # fmt: skip
    ffn = [r for r in rows if r.get("kind") == "expert_ffn"]
    print(f"  {'model':12s} {'tokens/expert':>13s} {'measured us':>12s} {'model us':>10s}")
    for row, pred in zip(ffn, fit.predicted_s, strict=True):
        print(f"  {row['model']:12s} {row['tokens_per_expert']:13d} "
              f"{row['seconds'] * 1e6:12.1f} {pred * 1e6:10.1f}")  # fmt: skip
    knee_table(ffn, fit, gpu.flops_for(data.get("dtype", "bf16")), gpu.hbm_bandwidth)
    if args.write:
        path = resolve_profile("gpu", args.profile, None)
        write_measured(path, {
            "device": data["device"],
            "date": data["date"],
            "method": (
                f"benchmarks/gpu/measure.py + fit.py (torch {data['torch']}, CUDA {data['cuda']}): "
                f"grouped SwiGLU expert FFN fit (efficiencies + p-norm knee) over {len(ffn)} "
                f"points, max error {fit.max_rel_error:.0%}; anchors: 8192^3 matmul "
                f"{anchor.get('matmul_compute_efficiency', float('nan')):.2f} of peak, copy "
                f"{anchor.get('copy_memory_efficiency', float('nan')):.2f} of HBM peak; launch = "
                "CUDA-graph per-kernel floor"
            ),
            "compute_efficiency": round(fit.compute_efficiency, 3),
            "memory_efficiency": round(fit.memory_efficiency, 3),
            "launch_overhead_us": round(launch * 1e6, 2),
            "knee_exponent": round(fit.knee_exponent, 2),
        })  # fmt: skip
        print(f"wrote measured: block into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
