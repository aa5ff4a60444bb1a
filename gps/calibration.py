"""Fit a GPU profile's efficiency factors to kernel timings from ``benchmarks/gpu/measure.py``.

The cost model prices a GPU's routed experts as one grouped SwiGLU (``gps/cost/experts.py``):

    t(M) = knee_time(F / (peak * c), B / (bw * m), p) + launch

(``knee_time``: the p-norm ``(x**p + y**p)**(1/p)``, which rounds the roofline's corner;
``p -> inf`` is the sharp ``max``)
with ``F = 6*d*f*M*n_e`` FLOPs and ``B = a*n_e*(3*d*f + 2*(d+f)*M)`` bytes for ``M`` tokens on
each of ``n_e`` experts. :func:`fit_expert_ffn` finds the compute efficiency ``c``, memory
efficiency ``m`` and knee exponent ``p`` that make this formula match measured ``expert_ffn``
timings best in relative (log) error, since that is the kernel whose cost balancing changes.
The launch overhead is not fitted: left free, it soaks up the roofline's error at the
compute/memory knee (tens of microseconds, unphysical), so it is held at a measured per-kernel
value (``launch_graph``: the GPU-side floor that CUDA-graph serving loops see).
:func:`anchors` reports the large-GEMM and copy efficiencies beside it for comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from gps.cost.roofline import knee_time
from gps.hardware import GPUProfile


@dataclass(frozen=True)
class EfficiencyFit:
    """Fitted factors and how well the roofline then reproduces the measurements.

    Attributes:
        compute_efficiency: fraction of dense peak FLOP/s, in ``(0, 1]``.
        memory_efficiency: fraction of peak HBM bandwidth, in ``(0, 1]``.
        launch_overhead_s: seconds charged once per grouped expert kernel (held fixed).
        knee_exponent: p-norm exponent of the roofline's corner (``GPUProfile.roofline_knee``).
        predicted_s: ``[P]`` model seconds for each measured point, in input order.
        measured_s: ``[P]`` measured seconds.
        max_rel_error: ``max |predicted / measured - 1|`` over the points.
    """

    compute_efficiency: float
    memory_efficiency: float
    launch_overhead_s: float
    knee_exponent: float
    predicted_s: np.ndarray
    measured_s: np.ndarray
    max_rel_error: float


def _ffn_rows(measurements: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [m for m in measurements if m.get("kind") == "expert_ffn"]
    if len(rows) < 3:
        raise ValueError(f"measurements: need >= 3 'expert_ffn' rows to fit, got {len(rows)}")
    flops = np.array([float(r["flops"]) for r in rows])
    bytes_ = np.array([float(r["bytes"]) for r in rows])
    seconds = np.array([float(r["seconds"]) for r in rows])
    if np.any(seconds <= 0) or np.any(flops < 0) or np.any(bytes_ <= 0):
        raise ValueError("measurements: expert_ffn rows need seconds > 0, flops >= 0, bytes > 0")
    return flops, bytes_, seconds


def roofline_s(
    flops: np.ndarray, bytes_: np.ndarray, peak_flops: float, bandwidth: float, params: np.ndarray
) -> np.ndarray:
    """``knee_time(flops/(peak*c), bytes/(bw*m), p) + launch`` in seconds; ``params = (c, m,
    launch, p)`` (``p = 0``: sharp max).

    The formula of ``gps.cost.roofline.op_time``, written over a parameter vector so that
    ``least_squares`` can vary the efficiencies (``op_time`` reads them from a profile)."""
    c, m, launch, p = params
    return knee_time(flops / (peak_flops * c), bytes_ / (bandwidth * m), p) + launch


def fit_expert_ffn(
    measurements: Sequence[Mapping],
    gpu: GPUProfile,
    launch_overhead_s: float,
    dtype: str = "bf16",
) -> EfficiencyFit:
    """Least-squares fit of ``(c, m, p)`` to the ``expert_ffn`` rows, in log error; ``p`` is
    then rounded to an integer (fast square roots for ``p = 4`` in ``knee_time``) and ``(c, m)``
    refitted with it.

    Args:
        measurements: rows of a ``measure.py`` JSON (``kind``, ``flops``, ``bytes``,
            ``seconds``); rows of other kinds are ignored.
        gpu: the profile whose peaks the factors scale (its own factors are not used).
        launch_overhead_s: seconds per kernel, held fixed (``>= 0``).
        dtype: the peak FLOP/s key the kernels ran in.

    Raises:
        ValueError: fewer than 3 ``expert_ffn`` rows, non-positive timings, or a negative
            launch overhead.
    """
    if not launch_overhead_s >= 0:
        raise ValueError(f"launch_overhead_s must be >= 0, got {launch_overhead_s}")
    flops, bytes_, seconds = _ffn_rows(measurements)
    peak, bw = gpu.flops_for(dtype), gpu.hbm_bandwidth

    def params(x: np.ndarray) -> np.ndarray:
        return np.array([x[0], x[1], launch_overhead_s, x[2]])

    def residual(x: np.ndarray) -> np.ndarray:
        return np.log(roofline_s(flops, bytes_, peak, bw, params(x))) - np.log(seconds)

    result = least_squares(
        residual, x0=np.array([0.7, 0.8, 4.0]), bounds=([1e-3, 1e-3, 1.0], [1.0, 1.0, 50.0])
    )
    knee = float(np.rint(result.x[2]))  # integer: the hot path takes square roots for p = 4

    def residual_fixed(x: np.ndarray) -> np.ndarray:
        return residual(np.array([x[0], x[1], knee]))

    result = least_squares(residual_fixed, x0=result.x[:2], bounds=([1e-3, 1e-3], [1.0, 1.0]))
    result.x = np.array([result.x[0], result.x[1], knee])
    predicted = roofline_s(flops, bytes_, peak, bw, params(result.x))
    return EfficiencyFit(
        compute_efficiency=float(result.x[0]),
        memory_efficiency=float(result.x[1]),
        launch_overhead_s=float(launch_overhead_s),
        knee_exponent=float(result.x[2]),
        predicted_s=predicted,
        measured_s=seconds,
        max_rel_error=float(np.max(np.abs(predicted / seconds - 1.0))),
    )


def anchors(measurements: Sequence[Mapping], gpu: GPUProfile, dtype: str = "bf16") -> dict:
    """Large-kernel anchors: ``matmul`` FLOP/s and ``copy`` bytes/s as fractions of the peaks,
    and seconds per launch for ``launch_eager`` / ``launch_graph`` rows (keys present only
    for the kinds measured)."""
    out: dict[str, float] = {}
    for row in measurements:
        kind, s = row.get("kind"), float(row.get("seconds", 0.0))
        if s <= 0:
            continue
        if kind == "matmul":
            out["matmul_compute_efficiency"] = float(row["flops"]) / s / gpu.flops_for(dtype)
        elif kind == "copy":
            out["copy_memory_efficiency"] = float(row["bytes"]) / s / gpu.hbm_bandwidth
        elif kind in ("launch_eager", "launch_graph"):
            out[f"{kind}_s"] = s / float(row["launches"])
    return out
