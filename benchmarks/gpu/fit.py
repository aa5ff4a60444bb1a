"""Fit a GPU profile's efficiency factors to ``measure.py`` output; optionally write them back.

    python benchmarks/gpu/fit.py RESULTS.json --profile h100_sxm5_80gb [--write]

Prints the anchors (8192^3 matmul and copy efficiencies, per-launch seconds), the fitted
shape-aware factors (large-K GEMM efficiency, its K knee, HBM efficiency, roofline knee),
measured vs modelled seconds per kernel and the fitted GEMM efficiency by K. With
``--write`` it replaces the profile's ``measured:`` block (``gps.profiles.write_measured``,
validated, atomic). Runs anywhere: no GPU needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gps.calibration import anchors, fit_efficiency
from gps.hardware import gemm_efficiency
from gps.profiles import load_gpu, resolve_profile, write_measured


def efficiency_table(fit) -> None:
    """The fitted GEMM efficiency ``c * K / (K + k0)`` at the reduction lengths the shipped
    models use (MLA kv_up 512, q_up 1536, expert widths 768-18432, hidden sizes 2048-7168)."""
    print(f"  {'K':>6s} {'GEMM efficiency':>16s}")
    for k in (128, 512, 1024, 1536, 2048, 4096, 7168, 8192, 14336, 18432):
        print(f"  {k:6d} {gemm_efficiency(k, fit.compute_efficiency, fit.gemm_k_knee):16.3f}")


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
    fit = fit_efficiency(rows, gpu, launch, data.get("dtype", "bf16"))
    print(f"device {data['device']}, torch {data['torch']}, {data['date']}")
    for key, value in anchor.items():
        print(f"  {key:28s} {value:.4g}")
    print(
        f"shape-aware fit: compute_efficiency (large K) {fit.compute_efficiency:.3f}, "
        f"gemm_k_knee {fit.gemm_k_knee:.0f}, memory_efficiency {fit.memory_efficiency:.3f}, "
        f"knee_exponent {fit.knee_exponent:.0f}, launch {launch * 1e6:.2f} us (fixed), "
        f"max |model/measured - 1| = {fit.max_rel_error:.1%} over {len(fit.kinds)} kernels"
    )
    shapes = [r for r in rows if r.get("kind") in ("expert_ffn", "matmul", "gemm")]
    print(f"  {'kernel':24s} {'measured us':>12s} {'model us':>10s} {'error':>7s}")
    for row, pred, meas in zip(shapes, fit.predicted_s, fit.measured_s, strict=True):
        label = row["kind"] if row["kind"] != "expert_ffn" else (
            f"ffn {row['model']} M={row['tokens_per_expert']}")  # fmt: skip
        print(f"  {label:24s} {meas * 1e6:12.1f} {pred * 1e6:10.1f} {pred / meas - 1:+7.1%}")
    efficiency_table(fit)
    if args.write:
        path = resolve_profile("gpu", args.profile, None)
        eager = {}
        if "launch_eager_s" in anchor:
            eager = {"eager_launch_us": round(anchor["launch_eager_s"] * 1e6, 2)}
        write_measured(path, {
            "device": data["device"],
            "date": data["date"],
            "method": (
                f"benchmarks/gpu/measure.py + fit.py (torch {data['torch']}, CUDA {data['cuda']}): "
                f"shape-aware roofline (GEMM efficiency c*K/(K+k0), HBM efficiency, p-norm "
                f"knee) fitted over {len(fit.kinds)} kernels (expert FFNs as measured, matmul), "
                f"max error {fit.max_rel_error:.0%}; anchors: 8192^3 matmul "
                f"{anchor.get('matmul_compute_efficiency', float('nan')):.2f} of peak, copy "
                f"{anchor.get('copy_memory_efficiency', float('nan')):.2f} of HBM peak; launch = "
                "CUDA-graph per-kernel floor"
            ),
            "compute_efficiency": round(fit.compute_efficiency, 3),
            "memory_efficiency": round(fit.memory_efficiency, 3),
            "launch_overhead_us": round(launch * 1e6, 2),
            "knee_exponent": round(fit.knee_exponent, 2),
            "gemm_k_knee": round(fit.gemm_k_knee),
            **eager,
        })  # fmt: skip
        print(f"wrote measured: block into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
