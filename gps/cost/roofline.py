"""Roofline time of one GPU operation (kernel), vectorised over numpy arrays."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gps.hardware import GPUProfile


class Op(NamedTuple):
    """Work of one operation on one GPU: ``flops`` FLOPs, ``bytes`` HBM bytes, ``launches`` kernels.

    ``flops`` and ``bytes`` may be floats or broadcastable numpy arrays.
    """

    name: str
    flops: float | np.ndarray
    bytes: float | np.ndarray
    launches: int = 1
    dtype: str | None = None  # peak FLOP/s key; None = the caller's default


def knee_time(compute_s: np.ndarray, memory_s: np.ndarray, knee: float) -> np.ndarray:
    """Roofline of a kernel: ``max(c, m)`` for ``knee == 0``, else ``(c**p + m**p)**(1/p)``.

    The p-norm (``p = knee``) rounds the roofline's corner: real kernels near the
    compute/memory balance point overlap the two imperfectly (H100 grouped GEMM fit, see
    ``docs/cost_model.md``: ``p = 4``, 19% above ``max`` exactly at the knee). Shapes
    broadcast; 0 where both are 0.
    """
    if not knee:
        return np.maximum(compute_s, memory_s)
    if knee == 4.0:  # the fitted H100 value: two square roots instead of a float power
        c2 = np.square(compute_s)
        m2 = np.square(memory_s)
        if not isinstance(c2, np.ndarray) or c2.shape != np.shape(m2):
            return np.sqrt(np.sqrt(c2 * c2 + m2 * m2))
        c2 *= c2  # in place on the large per-GPU arrays of the hot path
        c2 += np.square(m2, out=m2)
        return np.sqrt(np.sqrt(c2, out=c2), out=c2)
    hi = np.maximum(compute_s, memory_s)
    lo = np.minimum(compute_s, memory_s)
    ratio = np.divide(lo, hi, out=np.zeros(np.shape(hi)), where=hi > 0)
    return hi * (1.0 + ratio**knee) ** (1.0 / knee)


def knee_max(compute_s: np.ndarray, memory_s: np.ndarray, knee: float, axis: int = 0) -> np.ndarray:
    """``knee_time(compute_s, memory_s, knee).max(axis)``, cheaper: the p-norm is monotone, so
    the root is taken after the max of ``c**p + m**p`` (one root per column, not per GPU)."""
    if not knee:
        return np.maximum(compute_s, memory_s).max(axis=axis)
    if knee == 4.0:
        c2 = np.square(compute_s)
        c2 *= c2
        m2 = np.square(memory_s)
        m2 *= m2
        c2 += m2
        return np.sqrt(np.sqrt(c2.max(axis=axis)))
    return (compute_s**knee + memory_s**knee).max(axis=axis) ** (1.0 / knee)


def op_time(
    flops: float | np.ndarray,
    bytes_: float | np.ndarray,
    gpu: GPUProfile,
    dtype: str = "bf16",
    launches: int | np.ndarray = 1,
) -> np.ndarray:
    """Roofline time of an op, seconds, broadcast over ``flops``, ``bytes_`` and ``launches``.

    ``t = knee_time(flops / (peak[dtype] * compute_efficiency), bytes / (hbm_bandwidth *
    memory_efficiency), gpu.roofline_knee) + launches * launch_overhead_s`` (``knee_time`` is the
    max for a sharp roofline); an op with ``flops == bytes == 0`` is
    not launched and costs exactly 0 s (an expert slot or GPU with no tokens runs no kernel).

    Args:
        flops: FLOPs (multiply-add = 2 FLOPs), any shape.
        bytes_: HBM bytes read + written, broadcastable with ``flops``.
        gpu: The GPU profile.
        dtype: Compute dtype whose peak applies (``gpu.peak_flops`` key).
        launches: Kernels the op needs.

    Returns:
        Seconds, shape ``broadcast(flops, bytes_, launches)`` (a 0-d array for scalars).

    Raises:
        ValueError: negative or non-finite work.
    """
    flops = np.asarray(flops, dtype=float)
    bytes_ = np.asarray(bytes_, dtype=float)
    for name, arr in (("flops", flops), ("bytes_", bytes_)):
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"op_time: {name} must be finite and >= 0")
    compute_s = flops / (gpu.flops_for(dtype) * gpu.compute_efficiency)
    memory_s = bytes_ / (gpu.hbm_bandwidth * gpu.memory_efficiency)
    busy = (flops > 0) | (bytes_ > 0)
    t = knee_time(compute_s, memory_s, gpu.roofline_knee)
    return t + np.where(busy, launches * gpu.launch_overhead_s, 0.0)


def ops_time(ops: list[Op], gpu: GPUProfile, dtype: str = "bf16") -> np.ndarray:
    """Sum of ``op_time`` over ``ops`` run one after another, seconds (broadcast shape); an op's
    own ``dtype`` overrides ``dtype``."""
    total = np.zeros(())
    for op in ops:
        total = total + op_time(op.flops, op.bytes, gpu, op.dtype or dtype, op.launches)
    return total
