"""Expert FFN time: routed experts per GPU (grouped GEMM), shared experts and dense FFNs.

Every FFN is SwiGLU: ``y = W_down (silu(W_gate x) * W_up x)`` with ``W_gate, W_up: d -> f`` and
``W_down: f -> d``, i.e. three GEMMs and ``3*d*f`` weights. Per token: ``2*3*d*f`` FLOPs and
``2*(d+f)`` activation elements of HBM traffic (read ``x``, write the ``f``-wide SwiGLU product
from the fused gate/up GEMM epilogue, read it back in the down GEMM, write ``y``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from gps.cost._common import act_bytes, element_bytes, gemm_dtype
from gps.cost.roofline import Op, compute_efficiency, knee_max, knee_time
from gps.hardware import GPUProfile
from gps.model import MoEModelSpec

_MATMUL_MAX_SLOTS = 128  # G*R up to which a 0/1 block product beats einsum


def swiglu_op(name: str, tokens: float | np.ndarray, intermediate: int, spec: MoEModelSpec) -> Op:
    """One SwiGLU FFN of width ``intermediate`` run on ``tokens`` tokens with its full weights.

    FLOPs ``6*d*f*tokens``; bytes ``w*3*d*f + a*2*(d+f)*tokens`` (``w``/``a``: weight and
    activation element bytes); 1 launch (fused kernel), at the weights' GEMM dtype; two
    thirds of the FLOPs (gate/up) reduce over ``K = d``, one third (down) over ``K = f``
    (``swiglu_gemm_k``).
    Used for shared experts (``f = num_shared * shared_intermediate``, run as one fused MLP) and
    dense layers' FFN. Zero ``tokens`` or ``intermediate`` gives a zero op.
    """
    w, a, d, f = element_bytes(spec), act_bytes(spec), spec.hidden_size, intermediate
    tokens = np.asarray(tokens, dtype=float)
    dt = gemm_dtype(spec)
    if f == 0:
        return Op(name, np.zeros_like(tokens), np.zeros_like(tokens), dtype=dt)
    weights = np.where(tokens > 0, 3.0 * d * f * w, 0.0)
    flops, bytes_ = 6.0 * d * f * tokens, weights + 2.0 * (d + f) * tokens * a
    return Op(name, flops, bytes_, dtype=dt, gemm_k=swiglu_gemm_k(d, f))


def swiglu_gemm_k(hidden: int, intermediate: int) -> tuple[tuple[float, float], ...]:
    """``Op.gemm_k`` of a SwiGLU FFN: the gate/up GEMMs (2/3 of the FLOPs) reduce over the
    hidden size, the down GEMM (1/3) over the intermediate width."""
    return ((float(hidden), 2.0 / 3.0), (float(intermediate), 1.0 / 3.0))


def gpu_loads(slot_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-GPU token copies and busy slots, GPU-major for fast reductions over ``G``.

    Args:
        slot_tokens: ``[M, G, R]`` validated float token counts.

    Returns:
        ``(tokens [G, M], busy_slots [G, M])``: ``sum_R n`` and ``#{R: n > 0}``.
    """
    m, g, r = slot_tokens.shape
    busy = (slot_tokens > 0).astype(float)
    if g * r <= _MATMUL_MAX_SLOTS:  # one BLAS product per quantity, C-contiguous [G, M]
        block = _block_sum(g, r)
        return block @ slot_tokens.reshape(m, g * r).T, block @ busy.reshape(m, g * r).T
    return (
        np.ascontiguousarray(np.einsum("mgr->gm", slot_tokens)),
        np.ascontiguousarray(np.einsum("mgr->gm", busy)),
    )


@lru_cache(maxsize=8)
def _block_sum(g: int, r: int) -> np.ndarray:
    """``[G, G*R]`` 0/1 matrix summing each GPU's ``R`` slots (read-only)."""
    block = np.kron(np.eye(g), np.ones((1, r)))
    block.setflags(write=False)
    return block


def expert_roofline_s(
    tokens: np.ndarray, busy_slots: np.ndarray, spec: MoEModelSpec, gpu: GPUProfile
) -> np.ndarray:
    """Roofline seconds of one GPU's grouped expert GEMM, launch overhead excluded.

    ``knee_time(6*d*f*tokens / peak, (w*3*d*f*busy_slots + a*2*(d+f)*tokens) / bandwidth)``
    with the GPU's efficiency-scaled peak FLOP/s (at ``gemm_dtype``: ``dtypes.compute``,
    default the weights'; the SwiGLU GEMMs' efficiency by reduction length,
    ``swiglu_gemm_k``) and HBM bandwidth and its roofline knee (``gpu.roofline_knee``;
    0 = ``max``); shape of ``tokens``. Positive exactly where ``tokens > 0`` (no validation:
    hot path).
    """
    return knee_time(*_roofline_parts(tokens, busy_slots, spec, gpu), gpu.roofline_knee)


def _roofline_parts(
    tokens: np.ndarray, busy_slots: np.ndarray, spec: MoEModelSpec, gpu: GPUProfile
) -> tuple[np.ndarray, np.ndarray]:
    """(compute seconds, memory seconds) of ``expert_roofline_s``, same shape."""
    w, a = element_bytes(spec), act_bytes(spec)
    d, f = spec.hidden_size, spec.expert_intermediate_size
    dt = gemm_dtype(spec)
    peak = gpu.flops_for(dt) * compute_efficiency(gpu, swiglu_gemm_k(d, f), dtype=dt)
    bandwidth = gpu.hbm_bandwidth * gpu.memory_efficiency
    compute_s = tokens * (6.0 * d * f / peak)
    memory_s = busy_slots * (3.0 * d * f * w / bandwidth)
    memory_s += tokens * (2.0 * (d + f) * a / bandwidth)
    return compute_s, memory_s


def expert_time_gpu_major(
    tokens: np.ndarray, busy_slots: np.ndarray, spec: MoEModelSpec, gpu: GPUProfile
) -> np.ndarray:
    """``expert_roofline_s`` plus one launch where ``tokens > 0`` (at least the host's issue
    time ``gpu.host_launch_s`` when launched eagerly); seconds, shape of ``tokens``."""
    t = expert_roofline_s(tokens, busy_slots, spec, gpu)
    return np.where(tokens > 0, np.maximum(t + gpu.launch_overhead_s, gpu.host_launch_s), 0.0)


def slowest_gpu_time(
    tokens: np.ndarray, busy_slots: np.ndarray, spec: MoEModelSpec, gpu: GPUProfile
) -> np.ndarray:
    """``max over G`` of ``expert_time_gpu_major`` for ``[G, M]`` inputs; seconds ``[M]``.

    The launch is added after the max: a GPU's roofline time is positive iff it has tokens, so
    ``max_g(r_g + launch * [n_g > 0]) = max_g r_g + launch * [max_g r_g > 0]``.
    """
    t = knee_max(*_roofline_parts(tokens, busy_slots, spec, gpu), gpu.roofline_knee, axis=0)
    return np.where(t > 0, np.maximum(t + gpu.launch_overhead_s, gpu.host_launch_s), 0.0)


def balanced_time_gpu_major(
    tokens: np.ndarray, busy_slots: np.ndarray, spec: MoEModelSpec, gpu: GPUProfile
) -> np.ndarray:
    """``balanced_expert_time`` from ``gpu_loads`` output ``[G, M]``; seconds ``[M]``."""
    g = tokens.shape[0]
    total, busy = tokens.sum(axis=0), busy_slots.sum(axis=0)
    weights = np.where(total > 0, np.maximum(np.minimum(busy, spec.num_experts) / g, 1.0), 0.0)
    return expert_time_gpu_major(total / g, weights, spec, gpu)


def _as_slots(slot_tokens: np.ndarray) -> np.ndarray:
    n = np.asarray(slot_tokens, dtype=float)
    if n.ndim < 2 or not np.all(np.isfinite(n)) or np.any(n < 0):
        raise ValueError("slot_tokens: expected [..., G, R] finite token counts >= 0")
    return n


def expert_time_per_gpu(slot_tokens: np.ndarray, spec: MoEModelSpec, gpu: GPUProfile) -> np.ndarray:
    """Routed-expert FFN seconds of every GPU.

    Args:
        slot_tokens: ``[..., G, R]`` tokens (may be fractional expected counts) assigned to each
            expert slot; replicas are slots and every routed expert has the same size.
        spec: Model (``hidden_size``, ``expert_intermediate_size``, ``dtype``).
        gpu: GPU profile.

    Each GPU runs one grouped GEMM over its slots (one launch: a fused MoE kernel covering the
    gate/up and down GEMMs of all local experts): FLOPs ``6*d*f*sum_R(n)``; bytes
    ``a*(3*d*f*#{slots with n > 0} + 2*(d+f)*sum_R(n))`` — a slot's weights are read once if it
    has any token and not at all otherwise. A GPU without tokens costs 0.

    Returns:
        Seconds ``[..., G]``; the MoE layer waits for the max over ``G``.
    """
    n = _as_slots(slot_tokens)
    *lead, g, r = n.shape
    tokens, busy = gpu_loads(n.reshape(-1, g, r))
    return expert_time_gpu_major(tokens, busy, spec, gpu).T.reshape(*lead, g)


def balanced_expert_time(
    slot_tokens: np.ndarray, spec: MoEModelSpec, gpu: GPUProfile
) -> np.ndarray:
    """Routed-expert seconds ``[...]`` if the same tokens were spread evenly over the ``G`` GPUs.

    Every GPU gets ``sum(n)/G`` tokens and ``max(min(A, E)/G, 1)`` experts' weights, ``A`` the
    number of slots with tokens: ``E/G`` experts per GPU when all experts are used, one replica
    per GPU when ``E < G``, never more weights than the input reads (so it stays a lower bound
    of ``max_G expert_time_per_gpu`` by convexity of the roofline).
    """
    n = _as_slots(slot_tokens)
    *lead, g, r = n.shape
    tokens, busy = gpu_loads(n.reshape(-1, g, r))
    return balanced_time_gpu_major(tokens, busy, spec, gpu).reshape(lead)
