"""Token trace -> per-batch expert loads; token selection and leak-free train/test splits."""

from __future__ import annotations

import numpy as np

from gps.traces.trace import TokenTrace
from gps.traces.validate import TraceError

# Expert assignments ([t, L, k] elements) turned into bincount indices per chunk.
_CHUNK_ELEMENTS = 1 << 18  # small enough to stay in cache


def batch_loads(trace: TokenTrace, batch_size: int, *, drop_last: bool = True) -> np.ndarray:
    """Tokens routed to each expert per batch of consecutive tokens.

    Batch ``n`` holds tokens ``[n * batch_size, (n + 1) * batch_size)`` in trace order (use
    :func:`decode_order` first to batch concurrent sequences step by step). Each token adds
    1 to each of its ``k`` experts in every layer. Works in chunks of whole batches, so a
    memory-mapped trace is never copied whole.

    Args:
        trace: token trace, ``experts [T, L, k]``.
        batch_size: tokens per batch, ``>= 1``.
        drop_last: drop the final partial batch; otherwise it is kept (fewer tokens).

    Returns:
        ``[N, L, E]`` int64 counts, ``N = T // batch_size`` (or ``ceil`` without
        ``drop_last``); each row of a full batch sums to ``batch_size * k``. ``N`` may be 0.

    Raises:
        ValueError: ``batch_size`` not a positive int; ``TraceError`` for expert ids outside
            ``[0, E)``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    t, layers, k = trace.experts.shape
    e = trace.num_experts
    n = t // batch_size if drop_last else -(-t // batch_size)
    used = min(t, n * batch_size)
    out = np.zeros((n, layers, e), dtype=np.int64)
    per_chunk = max(1, _CHUNK_ELEMENTS // (batch_size * layers * k))  # whole batches
    width = min(used, per_chunk * batch_size)  # tokens per chunk
    # Flat counter of (batch within chunk, layer, expert) = offset + expert id, reused by
    # every chunk; the index buffer is reused too (fresh big arrays cost page faults).
    offset = (np.arange(width, dtype=np.intp) // batch_size * (layers * e))[:, None, None] + (
        np.arange(layers, dtype=np.intp) * e
    )[None, :, None]
    index = np.empty((width, layers, k), dtype=np.intp)
    for b0 in range(0, n, per_chunk):
        b1 = min(n, b0 + per_chunk)
        t0, t1 = b0 * batch_size, min(b1 * batch_size, used)
        chunk = np.asarray(trace.experts[t0:t1])
        if chunk.min() < 0 or chunk.max() >= e:
            raise TraceError(
                "<memory>",
                "experts",
                f"ids outside [0, {e}) among tokens {t0}..{t1 - 1}; validate the trace first",
            )
        np.add(chunk, offset[: t1 - t0], out=index[: t1 - t0])
        counts = np.bincount(index[: t1 - t0].ravel(), minlength=(b1 - b0) * layers * e)
        out[b0:b1] = counts.reshape(b1 - b0, layers, e)
    return out


def take_tokens(trace: TokenTrace, index: slice | np.ndarray) -> TokenTrace:
    """The tokens ``index`` selects (slice, int indices or a ``[T]`` bool mask), all fields kept.

    A slice of a memory-mapped trace stays a view; indices and masks copy the selection.

    Raises:
        ValueError: mask of the wrong length, non-integer indices, or indices out of range.
    """
    t = trace.num_tokens
    if not isinstance(index, slice):
        index = np.asarray(index)
        if index.ndim != 1:
            raise ValueError(f"index must be 1-D, got shape {index.shape}")
        if index.dtype == np.bool_:
            if index.shape[0] != t:
                raise ValueError(f"bool mask has {index.shape[0]} entries for {t} tokens")
        elif index.dtype.kind in "iu":
            if index.size and (index.min() < -t or index.max() >= t):
                raise ValueError(f"token index outside [-{t}, {t})")
        else:
            raise ValueError(f"index dtype {index.dtype} is neither bool nor integer")

    def pick(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[index]

    return TokenTrace(
        experts=trace.experts[index],
        token_id=trace.token_id[index],
        sequence_id=trace.sequence_id[index],
        position=trace.position[index],
        num_experts=trace.num_experts,
        scores=pick(trace.scores),
        domain=pick(trace.domain),
        meta=dict(trace.meta),
        hidden=pick(trace.hidden),
        hidden_layers=trace.hidden_layers,
    )


def decode_order(trace: TokenTrace) -> TokenTrace:
    """Tokens reordered by ``(position, sequence_id)``: decode step by decode step.

    Consecutive tokens then come from different concurrent sequences at the same position,
    which is what a continuous-batching decode step routes (all sequences starting together).
    """
    return take_tokens(trace, np.lexsort((trace.sequence_id, trace.position)))


def split_by_sequence(
    trace: TokenTrace, test_fraction: float, seed: int
) -> tuple[TokenTrace, TokenTrace]:
    """Split into (train, test) by whole sequences; no sequence appears on both sides.

    ``round(test_fraction * num_sequences)`` sequences (clamped to ``[1, num_sequences - 1]``)
    drawn uniformly with ``np.random.default_rng(seed)`` go to test. Token order inside
    each part is the trace's.

    Raises:
        ValueError: ``test_fraction`` outside ``(0, 1)`` or fewer than two sequences.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    sequences = np.unique(trace.sequence_id)
    if sequences.size < 2:
        raise ValueError(f"need at least 2 sequences to split, trace has {sequences.size}")
    n_test = min(sequences.size - 1, max(1, round(test_fraction * sequences.size)))
    test_sequences = np.random.default_rng(seed).choice(sequences, n_test, replace=False)
    is_test = np.isin(trace.sequence_id, test_sequences)
    return take_tokens(trace, ~is_test), take_tokens(trace, is_test)
