"""Fit a GPU profile's efficiency factors to kernel timings from ``benchmarks/gpu/measure.py``.

Every measured kernel is priced as it ran, with one shape-aware roofline per GEMM:

    t_gemm(M, N, K) = knee_time(2*M*N*K / (peak * e(K)), a*(N*K + M*K + M*N) / (bw * m), p)
                      + launch,        e(K) = c * K / (K + k0)

(``knee_time``: the p-norm ``(x**p + y**p)**(1/p)``, which rounds the roofline's corner;
``p -> inf`` is the sharp ``max``; ``a``: bytes per element). ``e(K)`` is the GEMM's
compute efficiency by its reduction length: a GEMM streams ``K`` in tiles, and every output
tile pays a fixed pipeline fill and epilogue worth about ``k0`` elements of ``K``, so short-K
GEMMs (MLA's ``kv_up`` with ``K = 512``) run below the large-GEMM efficiency ``c``. The
kernels of ``measure.py``:

* ``matmul``: one ``M x N x K`` GEMM (8192^3);
* ``expert_ffn``: the grouped SwiGLU FFN as measured, four kernels on ``n_e`` experts of
  ``M`` tokens each: the gate/up ``bmm`` (``M x 2f x d``), ``silu`` (reads and writes
  ``M*f``), the product with ``up`` (reads ``2*M*f``, writes ``M*f``) and the down ``bmm``
  (``M x d x f``);
* ``gemm`` (optional shape sweep): one ``batch x M x N x K`` GEMM.

:func:`fit_efficiency` finds ``c``, ``k0``, the memory efficiency ``m`` and the knee exponent
``p`` that make these match the timings best in relative (log) error. The launch overhead is
not fitted: left free, it soaks up the roofline's error at the compute/memory knee (tens of
microseconds, unphysical), so it is held at a measured per-kernel value (``launch_graph``:
the GPU-side floor that CUDA-graph serving loops see). :func:`anchors` reports the
large-matmul and copy efficiencies beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from gps.cost.roofline import knee_time
from gps.hardware import GPUProfile, gemm_efficiency

ELEMENT = 2.0  # bytes of the measured dtype (bf16)


@dataclass(frozen=True)
class EfficiencyFit:
    """Fitted factors and how well the shape-aware roofline then reproduces the measurements.

    Attributes:
        compute_efficiency: ``c``, the large-K fraction of dense peak FLOP/s, in ``(0, 1]``.
        gemm_k_knee: ``k0``, elements of ``K`` at which a GEMM reaches half of ``c``.
        memory_efficiency: fraction of peak HBM bandwidth, in ``(0, 1]``.
        launch_overhead_s: seconds charged once per kernel (held fixed).
        knee_exponent: p-norm exponent of the roofline's corner (``GPUProfile.roofline_knee``).
        predicted_s: ``[P]`` model seconds for each fitted measurement, in input order.
        measured_s: ``[P]`` measured seconds.
        kinds: ``[P]`` the measurement kinds (``matmul``, ``expert_ffn``, ``gemm``).
        max_rel_error: ``max |predicted / measured - 1|`` over the points.
    """

    compute_efficiency: float
    gemm_k_knee: float
    memory_efficiency: float
    launch_overhead_s: float
    knee_exponent: float
    predicted_s: np.ndarray
    measured_s: np.ndarray
    kinds: tuple[str, ...]
    max_rel_error: float


@dataclass(frozen=True)
class _Kernels:
    """The fitted measurements as GEMMs and elementwise bytes, one row per measurement.

    ``gemms[i]`` lists ``(batch, M, N, K)`` of row ``i``'s GEMMs; ``extra_bytes[i]`` the HBM
    bytes of its elementwise kernels and ``launches[i]`` its kernel count.
    """

    gemms: list[list[tuple[float, float, float, float]]]
    extra_bytes: np.ndarray
    launches: np.ndarray
    seconds: np.ndarray
    kinds: tuple[str, ...]


def _num(row: Mapping, key: str) -> float:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        kind = row.get("kind")
        raise ValueError(f"measurements: a {kind!r} row needs a number {key!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"measurements: {row.get('kind')!r} row: {key!r} must be > 0")
    return value


def _kernels(measurements: Sequence[Mapping]) -> _Kernels:
    gemms, extra, launches, seconds, kinds = [], [], [], [], []
    for row in measurements:
        kind = row.get("kind")
        if kind == "expert_ffn":
            m, d, f = (_num(row, k) for k in ("tokens_per_expert", "hidden", "intermediate"))
            ne = _num(row, "experts")
            gemms.append([(ne, m, 2 * f, d), (ne, m, d, f)])
            extra.append(ELEMENT * ne * 5 * m * f)  # silu: r+w M*f; product: r 2*M*f, w M*f
            launches.append(4)
        elif kind == "matmul":
            side = round((_num(row, "flops") / 2) ** (1 / 3))
            m, n, k = (float(row.get(key, side)) for key in ("m", "n", "k"))
            gemms.append([(1.0, m, n, k)])
            extra.append(0.0)
            launches.append(1)
        elif kind == "gemm":
            b, m, n, k = (_num(row, key) for key in ("batch", "m", "n", "k"))
            gemms.append([(b, m, n, k)])
            extra.append(0.0)
            launches.append(1)
        else:
            continue
        seconds.append(_num(row, "seconds"))
        kinds.append(str(kind))
    if sum(k == "expert_ffn" for k in kinds) < 3:
        raise ValueError(
            f"measurements: need >= 3 'expert_ffn' rows to fit, got {kinds.count('expert_ffn')}"
        )
    return _Kernels(gemms, np.array(extra), np.array(launches, dtype=float), np.array(seconds),
                    tuple(kinds))  # fmt: skip


def kernels_s(kernels: _Kernels, peak_flops: float, bandwidth: float, params: np.ndarray,
              launch: float) -> np.ndarray:  # fmt: skip
    """Seconds ``[P]`` of every fitted measurement for ``params = (c, k0, m, p)``: each GEMM
    ``knee_time(compute, memory, p)``, the elementwise bytes at ``bandwidth * m``, ``launch``
    per kernel."""
    c, k0, m, p = params
    out = kernels.extra_bytes / (bandwidth * m) + kernels.launches * launch
    totals = np.zeros(len(out))
    for i, gemm_list in enumerate(kernels.gemms):
        for b, mm, n, k in gemm_list:
            flops = 2.0 * b * mm * n * k
            bytes_ = ELEMENT * b * (n * k + mm * k + mm * n)
            compute = flops / (peak_flops * float(gemm_efficiency(k, c, k0)))
            totals[i] += float(knee_time(np.array(compute), np.array(bytes_ / (bandwidth * m)), p))
    return out + totals


def fit_efficiency(
    measurements: Sequence[Mapping],
    gpu: GPUProfile,
    launch_overhead_s: float,
    dtype: str = "bf16",
) -> EfficiencyFit:
    """Least-squares fit of ``(c, k0, m, p)`` to the ``matmul``, ``expert_ffn`` and ``gemm``
    rows, in log error; ``p`` is then rounded to an integer (the hot path raises to integer
    powers by multiplication) and ``(c, k0, m)`` refitted with it.

    Args:
        measurements: rows of a ``measure.py`` JSON; rows of other kinds are ignored.
        gpu: the profile whose peaks the factors scale (its own factors are not used).
        launch_overhead_s: seconds per kernel, held fixed (``>= 0``).
        dtype: the peak FLOP/s key the kernels ran in.

    Raises:
        ValueError: fewer than 3 ``expert_ffn`` rows, a row without its shape or with
            non-positive timings, or a negative launch overhead.
    """
    if not launch_overhead_s >= 0:
        raise ValueError(f"launch_overhead_s must be >= 0, got {launch_overhead_s}")
    kernels = _kernels(measurements)
    peak, bw = gpu.flops_for(dtype), gpu.hbm_bandwidth

    def residual(x: np.ndarray) -> np.ndarray:
        return np.log(kernels_s(kernels, peak, bw, x, launch_overhead_s)) - np.log(kernels.seconds)

    lower, upper = [1e-3, 0.0, 1e-3, 1.0], [1.0, 1e5, 1.0, 50.0]
    first = least_squares(residual, x0=np.array([0.8, 300.0, 0.8, 4.0]), bounds=(lower, upper))
    knee = float(np.rint(first.x[3]))

    def residual_fixed(x: np.ndarray) -> np.ndarray:
        return residual(np.array([x[0], x[1], x[2], knee]))

    result = least_squares(residual_fixed, x0=first.x[:3], bounds=(lower[:3], upper[:3]))
    params = np.array([*result.x, knee])
    predicted = kernels_s(kernels, peak, bw, params, launch_overhead_s)
    return EfficiencyFit(
        compute_efficiency=float(params[0]),
        gemm_k_knee=float(params[1]),
        memory_efficiency=float(params[2]),
        launch_overhead_s=float(launch_overhead_s),
        knee_exponent=knee,
        predicted_s=predicted,
        measured_s=kernels.seconds,
        kinds=kernels.kinds,
        max_rel_error=float(np.max(np.abs(predicted / kernels.seconds - 1.0))),
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
