"""Fit the FP8 GEMM efficiency ``c * K / (K + k0)`` of Hopper profiles to DeepGEMM's table.

    python benchmarks/gpu/fit_fp8_gemm.py          # print the fit and the per-shape errors

The data is a published table, not a measurement of ours: DeepGEMM's README ("Performance",
github.com/deepseek-ai/DeepGEMM at commit 327ec92, 2025-04-09), block-scaled FP8 GEMMs on an
H800 SXM5 with NVCC 12.8, every shape DeepSeek-V3/R1 inference uses without tensor
parallelism. Its reduction lengths reach down to ``K = 512`` (MLA's ``kv_up``), where the
BF16 fit of ``benchmarks/gpu/fit.py`` only extrapolates (``docs/calibration.md``). Only the
compute-bound rows are fitted (``M = 4096`` and the grouped contiguous layout, 10 rows): the
``M = 64/128`` rows stream weights and test the memory side, which this fit leaves to the
profile. Each row is priced as ``benchmarks/gpu/fit.py`` prices a GEMM, with the H800
profile's peak, HBM efficiency and roofline knee:

    t = knee_time(2*M*N*K / (peak_fp8 * c * K/(K + k0)), (M*K + G*N*K + 2*M*N) / (bw * m), p)

(FP8 operands, BF16 output; ``G`` weight matrices of a grouped GEMM), fitted in log error.
No validation row of ``docs/validation.md`` uses this table. Runs anywhere (no GPU).
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.optimize import least_squares

from gps.cost.roofline import knee_time
from gps.hardware import gemm_efficiency
from gps.profiles import load_gpu

SOURCE = (
    "DeepGEMM README 'Performance' (github.com/deepseek-ai/DeepGEMM, commit 327ec92, "
    "2025-04-09): H800 SXM5, NVCC 12.8, block-scaled FP8"
)
# (groups, M, N, K, TFLOPS): the normal GEMMs at M = 4096 and the grouped contiguous layout
# (M = tokens of all groups); DeepGEMM's 'Computation' column.
COMPUTE_BOUND = [
    (1, 4096, 2112, 7168, 1127), (1, 4096, 24576, 1536, 1212), (1, 4096, 32768, 512, 775),
    (1, 4096, 7168, 16384, 1520), (1, 4096, 4096, 7168, 1410), (1, 4096, 7168, 2048, 1168),
    (4, 32768, 4096, 7168, 1346), (4, 32768, 7168, 2048, 1214),
    (8, 32768, 4096, 7168, 1346), (8, 32768, 7168, 2048, 1214),
]  # fmt: skip
PROFILE = "h800_sxm5_80gb"


def measured_s() -> np.ndarray:
    """Seconds of every ``COMPUTE_BOUND`` row: ``2*M*N*K / TFLOPS``."""
    return np.array([2.0 * m * n * k / (t * 1e12) for _, m, n, k, t in COMPUTE_BOUND])


def model_s(c: float, k0: float, profile: str = PROFILE) -> np.ndarray:
    """Seconds of every ``COMPUTE_BOUND`` row for FP8 GEMM efficiency ``c * K / (K + k0)``."""
    gpu = load_gpu(profile)
    peak, bw = gpu.flops_for("fp8"), gpu.hbm_bandwidth * gpu.memory_efficiency
    out = []
    for g, m, n, k, _ in COMPUTE_BOUND:
        compute = 2.0 * m * n * k / (peak * gemm_efficiency(k, c, k0))
        memory = (m * k + g * n * k + 2.0 * m * n) / bw
        out.append(float(knee_time(np.array(compute), np.array(memory), gpu.roofline_knee)))
    return np.array(out)


def fit() -> tuple[float, float, np.ndarray]:
    """``(c, k0, model/measured)``: least squares in log error over ``COMPUTE_BOUND``."""
    measured = measured_s()

    def residual(x: np.ndarray) -> np.ndarray:
        return np.log(model_s(x[0], x[1]) / measured)

    result = least_squares(residual, x0=[0.8, 700.0], bounds=([0.1, 0.0], [1.0, 1e4]))
    c, k0 = (float(v) for v in result.x)
    return c, k0, np.exp(residual(result.x))


def main() -> int:
    c, k0, ratios = fit()
    print(f"FP8 GEMM fit on {len(COMPUTE_BOUND)} rows of {SOURCE}:")
    worst = np.abs(ratios - 1).max()
    print(f"  c = {c:.3f}, k0 = {k0:.0f} (max |model/measured - 1| = {worst:.1%})")
    for (g, m, n, k, t), r in zip(COMPUTE_BOUND, ratios, strict=True):
        print(f"  G={g} M={m:6d} N={n:6d} K={k:6d} {t:5d} TFLOPS  model/measured {r:.3f}")
    print("  K      efficiency")
    for k in (256, 512, 1536, 2048, 7168, 16384):
        print(f"  {k:6d} {gemm_efficiency(k, c, k0):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
