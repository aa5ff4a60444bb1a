"""Roofline time of one GPU operation (kernel), vectorised over numpy arrays."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gps.hardware import GPUProfile


class Op(NamedTuple):
    """Work of one operation on one GPU: ``flops`` FLOPs, ``bytes`` HBM bytes, ``launches`` kernels.

    ``flops`` and ``bytes`` may be floats or broadcastable numpy arrays. ``gemm_k`` describes
    the GEMMs the FLOPs belong to as ``((K, share), ...)``: reduction length ``K`` and the
    share of the op's FLOPs at that ``K`` (shares sum to 1); each share runs at
    ``GPUProfile.gemm_efficiency(K)``. Empty: the op is not a GEMM and its FLOPs run at
    ``GPUProfile.compute_efficiency``, or, with ``attention`` (a fused attention core, flash
    attention), at ``GPUProfile.attention_efficiency``.
    """

    name: str
    flops: float | np.ndarray
    bytes: float | np.ndarray
    launches: int = 1
    dtype: str | None = None  # peak FLOP/s key; None = the caller's default
    gemm_k: tuple[tuple[float, float], ...] = ()
    attention: bool = False


def gemm(
    name: str,
    flops: float | np.ndarray,
    bytes_: float | np.ndarray,
    k: float,
    dtype: str | None = None,
) -> Op:
    """One GEMM kernel (``flops`` FLOPs, ``bytes_`` HBM bytes) that reduces over ``k``
    elements, at ``dtype``'s peak (``None``: the caller's default)."""
    return Op(name, flops, bytes_, 1, dtype, ((float(k), 1.0),))


def compute_efficiency(
    gpu: GPUProfile,
    gemm_k: tuple[tuple[float, float], ...] = (),
    attention: bool = False,
    dtype: str | None = None,
) -> float:
    """Effective compute efficiency of FLOPs split over GEMMs ``gemm_k`` (see ``Op``): the
    FLOP-weighted harmonic mean ``1 / sum(share / gpu.gemm_efficiency(K, dtype))`` (FP8
    GEMMs at the profile's FP8 GEMM fit when it has one); for a fused attention core
    ``gpu.attention_efficiency`` (when set); otherwise the profile's ``compute_efficiency``."""
    if attention and gpu.attention_efficiency > 0:
        return gpu.attention_efficiency
    if not gemm_k:
        return gpu.compute_efficiency
    return 1.0 / sum(share / gpu.gemm_efficiency(k, dtype) for k, share in gemm_k)


def _root(x: np.ndarray, p: float) -> np.ndarray:
    """``x**(1/p)`` (``p = 6``: a square root of a cube root, much faster than a power)."""
    if p == 6.0:
        return np.sqrt(np.cbrt(x))
    return x ** (1.0 / p)


def _power(x: np.ndarray, p: float) -> np.ndarray:
    """``x**p``, by repeated multiplication for small integer ``p`` (the fitted knees)."""
    if p == int(p) and 1 <= p <= 8:
        out = x
        for _ in range(int(p) - 1):
            out = out * x
        return out
    return x**p


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
    return hi * _root(1.0 + _power(ratio, knee), knee)


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
    total = _power(np.asarray(compute_s), knee) + _power(np.asarray(memory_s), knee)
    return _root(total.max(axis=axis), knee)


def op_time(
    flops: float | np.ndarray,
    bytes_: float | np.ndarray,
    gpu: GPUProfile,
    dtype: str = "bf16",
    launches: int | np.ndarray = 1,
    gemm_k: tuple[tuple[float, float], ...] = (),
    attention: bool = False,
) -> np.ndarray:
    """Roofline time of an op, seconds, broadcast over ``flops``, ``bytes_`` and ``launches``.

    ``t = knee_time(flops / (peak[dtype] * e), bytes / (hbm_bandwidth * memory_efficiency),
    gpu.roofline_knee) + launches * launch_overhead_s`` with ``e = compute_efficiency(gpu,
    gemm_k, attention, dtype)`` (the GEMMs' efficiency by reduction length and dtype, or the
    attention core's; with eager launches, ``gpu.host_launch_s > 0``, never less than
    ``launches * host_launch_s``; ``knee_time`` is the max for a sharp roofline); an op
    with ``flops == bytes == 0`` is not launched and costs exactly 0 s (an expert slot or
    GPU with no tokens runs no kernel).

    Args:
        flops: FLOPs (multiply-add = 2 FLOPs), any shape.
        bytes_: HBM bytes read + written, broadcastable with ``flops``.
        gpu: The GPU profile.
        dtype: Compute dtype whose peak applies (``gpu.peak_flops`` key).
        launches: Kernels the op needs.
        gemm_k: ``((K, share), ...)`` of the op's GEMMs (``Op.gemm_k``); empty: not a GEMM.
        attention: a fused attention core (``Op.attention``).

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
    compute_s = flops / (gpu.flops_for(dtype) * compute_efficiency(gpu, gemm_k, attention, dtype))
    memory_s = bytes_ / (gpu.hbm_bandwidth * gpu.memory_efficiency)
    busy = (flops > 0) | (bytes_ > 0)
    t = knee_time(compute_s, memory_s, gpu.roofline_knee) + launches * gpu.launch_overhead_s
    if gpu.host_launch_s > 0:  # eager launches: the GPU cannot run ahead of the host
        t = np.maximum(t, launches * gpu.host_launch_s)
    return np.where(busy, t, 0.0)


def ops_time(ops: list[Op], gpu: GPUProfile, dtype: str = "bf16") -> np.ndarray:
    """Sum of ``op_time`` over ``ops`` run one after another, seconds (broadcast shape); an op's
    own ``dtype`` overrides ``dtype``."""
    total = np.zeros(())
    for op in ops:
        total = total + op_time(op.flops, op.bytes, gpu, op.dtype or dtype, op.launches,
                                op.gemm_k, op.attention)  # fmt: skip
    return total
