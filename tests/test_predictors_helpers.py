"""Planted traces and load series for the predictor tests (no tests here)."""

from __future__ import annotations

import numpy as np

from gps.hardware import GPUProfile
from gps.traces import LoadSeries, TokenTrace


def gpu() -> GPUProfile:
    """Round-number GPU: 1e15 FLOP/s bf16 at efficiency 1, 1e12 B/s, 1 us launch."""
    return GPUProfile(
        name="test-gpu",
        peak_flops={"bf16": 1e15},
        hbm_bandwidth=1e12,
        hbm_capacity=80e9,
        sm_count=100,
        launch_overhead_s=1e-6,
        compute_efficiency=1.0,
        memory_efficiency=1.0,
    )


def make_trace(experts: np.ndarray, token_id: np.ndarray, num_experts: int, seq_len: int = 50):
    """TokenTrace from ``experts [T, L, k]`` and ``token_id [T]``; sequences of ``seq_len``."""
    t = experts.shape[0]
    return TokenTrace(
        experts=np.ascontiguousarray(experts, dtype=np.int16),
        token_id=np.asarray(token_id, dtype=np.int32),
        sequence_id=(np.arange(t) // seq_len).astype(np.int32),
        position=(np.arange(t) % seq_len).astype(np.int32),
        num_experts=num_experts,
    )


def id_mapped_trace(
    num_tokens: int = 4000, layers: int = 4, experts: int = 8, vocab: int = 200, seed: int = 0
) -> tuple[TokenTrace, np.ndarray]:
    """Deterministic token id -> top-2 map per layer (distinct experts). Returns the map too."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, experts, (vocab, layers))
    second = (first + 1 + rng.integers(0, experts - 1, (vocab, layers))) % experts
    table = np.stack([first, second], axis=-1)  # [V, L, 2]
    ids = rng.integers(0, vocab, num_tokens)
    return make_trace(table[ids], ids, experts), table


def layer_chained_trace(
    num_tokens: int = 4000, layers: int = 4, experts: int = 8, seed: int = 0
) -> TokenTrace:
    """Layer 0 random (distinct top-2); layer l = (layer l-1 + 1 + l) mod E slot-wise."""
    rng = np.random.default_rng(seed)
    e0 = rng.integers(0, experts, num_tokens)
    e1 = (e0 + 1 + rng.integers(0, experts - 1, num_tokens)) % experts
    out = np.empty((num_tokens, layers, 2), dtype=np.int64)
    out[:, 0] = np.stack([e0, e1], axis=-1)
    for layer in range(1, layers):
        out[:, layer] = (out[:, layer - 1] + 1 + layer) % experts
    ids = rng.integers(0, 1000, num_tokens)  # uninformative ids
    return make_trace(out, ids, experts)


def random_trace(
    num_tokens: int = 2000, layers: int = 3, experts: int = 8, k: int = 2, seed: int = 0
) -> TokenTrace:
    """Popularity-skewed random top-k (distinct within a token)."""
    rng = np.random.default_rng(seed)
    w = np.log(np.linspace(1.0, 4.0, experts))
    keys = w - np.log(-np.log(rng.random((num_tokens, layers, experts))))
    top = np.argsort(-keys, axis=-1)[..., :k]
    return make_trace(top, rng.integers(0, 300, num_tokens), experts)


def constant_loads(n: int = 60, layers: int = 3, experts: int = 8, seed: int = 0) -> np.ndarray:
    """``[n, L, E]`` counts with the same distribution every batch."""
    p = np.random.default_rng(seed).dirichlet(np.ones(experts), size=layers)
    return np.broadcast_to(np.round(p * 10_000), (n, layers, experts)).astype(np.int64).copy()


def periodic_loads(
    n: int = 240, period: int = 4, layers: int = 2, experts: int = 8, seed: int = 0
) -> np.ndarray:
    """``[n, L, E]`` proportions cycling through ``period`` fixed distributions."""
    base = np.random.default_rng(seed).dirichlet(np.ones(experts) * 0.5, size=(period, layers))
    return base[np.arange(n) % period]


def load_series(counts: np.ndarray) -> LoadSeries:
    return LoadSeries(
        counts=np.asarray(counts, dtype=np.int64), step=np.arange(counts.shape[0], dtype=np.int64)
    )
