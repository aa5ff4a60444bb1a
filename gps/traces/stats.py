"""Statistics of routing traces: load balance, concentration, temporal and cross-layer structure.

Shapes: ``T`` tokens, ``L`` MoE layers, ``k`` top-k, ``E`` experts per layer, ``G`` GPUs of
the expert-parallel group, ``N`` batches (or steps of a load series).

Elementwise load statistics (:func:`imbalance_ratio`, :func:`load_entropy`,
:func:`coefficient_of_variation`) take token counts ``[..., E]`` and reduce the last axis.
They share one convention: an all-zero row (no token routed) counts as perfectly balanced
(imbalance 1.0, entropy ``log2(E)``, CV 0.0), so empty batches never produce NaN.

Trace-level statistics (:func:`transition_matrix`, :func:`cross_layer_mutual_information`,
:func:`token_id_predictability`) stream over the tokens in chunks, so a memory-mapped trace
is never copied whole. :func:`trace_stats` / :func:`load_series_stats` gather everything a
user reads into a :class:`TraceStats`; :func:`format_stats_table` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from gps.model import home_gpu_share
from gps.traces.batching import batch_loads
from gps.traces.trace import LoadSeries, TokenTrace
from gps.traces.validate import TraceError

# Expert assignments turned into bincount indices per chunk (as in batching.py).
_CHUNK_ELEMENTS = 1 << 18
# token_id_predictability: dense [L, U, E] counter up to this many cells, sparse above.
_DENSE_TOKEN_ID_CELLS = 1 << 24
# Lags of the stored autocorrelation function, and time points kept for the over-time plot.
_MAX_LAGS = 16
_MAX_TIME_POINTS = 512


# ----------------------------------------------------------------------------------------
# elementwise load statistics
# ----------------------------------------------------------------------------------------


def _as_loads(loads: np.ndarray, name: str = "loads") -> np.ndarray:
    """``loads`` as float64 ``[..., E]`` with ``E >= 1``, finite and non-negative."""
    values = np.asarray(loads, dtype=np.float64)
    if values.ndim < 1 or values.shape[-1] < 1:
        raise ValueError(f"{name} must have shape [..., E] with E >= 1, got {values.shape}")
    if values.size and not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite")
    if values.size and values.min() < 0:
        raise ValueError(f"{name} must be non-negative token counts, min is {values.min():g}")
    return values


def imbalance_ratio(loads: np.ndarray, ep_degree: int | None = None) -> np.ndarray:
    """Max over mean load, per row: how much slower the busiest unit is than a balanced one.

    Args:
        loads: ``[..., E]`` tokens routed to each expert (non-negative).
        ep_degree: ``G``, the expert-parallel degree. GPU ``g`` holds the experts of
            :func:`gps.model.home_slot_expert` (the placement ``gps`` starts from: contiguous
            ``ceil(E/G)`` per GPU, fewer on the last GPUs when ``G`` does not divide ``E``;
            copies share an expert's tokens when ``E < G``); the ratio is then max GPU load
            over mean GPU load. ``None``: max expert load over mean expert load (``G = E``).

    Returns:
        ``[...]`` float64 ratios in ``[1, G]`` (``[1, E]`` without ``ep_degree``); an
        all-zero row gives 1.0 (nothing routed counts as balanced).

    Raises:
        ValueError: negative or non-finite loads, ``ep_degree`` not an integer >= 1.
    """
    values = _as_loads(loads)
    e = values.shape[-1]
    if ep_degree is not None:
        if isinstance(ep_degree, bool) or not isinstance(ep_degree, int | np.integer):
            raise ValueError(f"ep_degree must be an int or None, got {ep_degree!r}")
        if ep_degree < 1:
            raise ValueError(f"ep_degree must be >= 1, got {ep_degree}")
        values = values @ home_gpu_share(e, int(ep_degree))
    mean = values.mean(axis=-1)
    peak = values.max(axis=-1)
    return np.divide(peak, mean, out=np.ones_like(mean), where=mean > 0)


def load_entropy(loads: np.ndarray) -> np.ndarray:
    """Shannon entropy, in bits, of the load proportions of each row.

    Args:
        loads: ``[..., E]`` tokens routed to each expert (non-negative).

    Returns:
        ``[...]`` float64 in ``[0, log2(E)]``: 0 when one expert gets everything,
        ``log2(E)`` (e.g. 3 bits for ``E = 8``) for a uniform load and for an all-zero row.
        ``0 * log 0`` is taken as 0.

    Raises:
        ValueError: negative or non-finite loads.
    """
    values = _as_loads(loads)
    e = values.shape[-1]
    total = values.sum(axis=-1, keepdims=True)
    p = np.divide(values, total, out=np.full_like(values, 1.0 / e), where=total > 0)
    terms = np.zeros_like(p)
    np.multiply(p, np.log2(p, out=np.zeros_like(p), where=p > 0), out=terms, where=p > 0)
    return np.maximum(-terms.sum(axis=-1), 0.0)


def coefficient_of_variation(loads: np.ndarray) -> np.ndarray:
    """Population standard deviation over mean of each row (0 = perfectly balanced).

    Args:
        loads: ``[..., E]`` tokens routed to each expert (non-negative).

    Returns:
        ``[...]`` float64 ``std / mean`` (``ddof = 0``, so at most ``sqrt(E - 1)``); an
        all-zero row gives 0.0.

    Raises:
        ValueError: negative or non-finite loads.
    """
    values = _as_loads(loads)
    mean = values.mean(axis=-1)
    std = values.std(axis=-1)
    return np.divide(std, mean, out=np.zeros_like(mean), where=mean > 0)


def _proportions(loads: np.ndarray) -> np.ndarray:
    """``[..., E]`` counts -> proportions summing to 1 per row (all-zero rows uniform)."""
    values = _as_loads(loads)
    total = values.sum(axis=-1, keepdims=True)
    return np.divide(
        values, total, out=np.full_like(values, 1.0 / values.shape[-1]), where=total > 0
    )


def load_autocorrelation(loads: np.ndarray, lag: int = 1) -> np.ndarray:
    """Lag-``lag`` autocorrelation of each layer's load proportions over batches.

    For each layer and expert, the Pearson correlation between the expert's share of the
    batch (load / batch total; an all-zero batch counts as uniform) at batch ``n`` and at
    batch ``n + lag`` over ``n = 0 .. N-lag-1``; then the mean over experts. Experts whose
    share is constant over either window (zero variance) are skipped.

    Args:
        loads: ``[N, L, E]`` tokens per batch, layer and expert.
        lag: batches between the two samples, ``>= 1``.

    Returns:
        ``[L]`` float64 in ``[-1, 1]``; NaN for a layer where every expert was skipped.
        Near 1: the load drifts slowly (yesterday's histogram predicts today's); near 0:
        batches are independent; negative: alternating.

    Raises:
        ValueError: ``loads`` not 3-D, negative, ``lag < 1`` or ``N <= lag``.
    """
    if isinstance(lag, bool) or not isinstance(lag, int | np.integer) or lag < 1:
        raise ValueError(f"lag must be an int >= 1, got {lag!r}")
    values = np.asarray(loads)
    if values.ndim != 3:
        raise ValueError(f"loads must have shape [N, L, E], got {values.shape}")
    n = values.shape[0]
    if n <= lag:
        raise ValueError(f"need more than lag={lag} batches for the autocorrelation, got N={n}")
    return _lagged_correlation(_proportions(values), lag)


def _lagged_correlation(p: np.ndarray, lag: int) -> np.ndarray:
    """``[N, L, E]`` proportions -> ``[L]`` lag-``lag`` Pearson correlation, mean over experts."""
    x, y = p[:-lag], p[lag:]
    # Exact constancy test (max == min) so rounding noise in a mean never fakes a variance.
    valid = (np.ptp(x, axis=0) > 0) & (np.ptp(y, axis=0) > 0)  # [L, E]
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    cov = np.einsum("nle,nle->le", xc, yc)
    norm = np.sqrt(np.einsum("nle,nle->le", xc, xc) * np.einsum("nle,nle->le", yc, yc))
    r = np.divide(cov, norm, out=np.zeros_like(cov), where=valid & (norm > 0))
    r = np.clip(r, -1.0, 1.0)
    count = valid.sum(axis=-1)
    total = np.where(valid, r, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


# ----------------------------------------------------------------------------------------
# cross-layer and token-id statistics (streamed over tokens)
# ----------------------------------------------------------------------------------------


def _checked_chunk(trace: TokenTrace, t0: int, t1: int) -> np.ndarray:
    """``experts[t0:t1]`` as ``intp``, with ids checked against ``[0, E)``."""
    chunk = np.asarray(trace.experts[t0:t1])
    e = trace.num_experts
    if chunk.size and (chunk.min() < 0 or chunk.max() >= e):
        raise TraceError(
            "<memory>",
            "experts",
            f"ids outside [0, {e}) among tokens {t0}..{t1 - 1}; validate the trace first",
        )
    return chunk.astype(np.intp, copy=False)


def _pair_counts(trace: TokenTrace) -> np.ndarray:
    """``[L-1, E, E]`` int64: (expert at layer l, expert at layer l+1) pairs over all tokens.

    Every token contributes its ``k * k`` (slot at ``l``, slot at ``l+1``) pairs.
    """
    t, layers, k = trace.experts.shape
    e = trace.num_experts
    cells = (layers - 1) * e * e
    out = np.zeros(cells, dtype=np.int64)
    if layers < 2 or t == 0:
        return out.reshape(max(layers - 1, 0), e, e)
    step = max(1, _CHUNK_ELEMENTS // ((layers - 1) * k * k))
    base = (np.arange(layers - 1, dtype=np.intp) * (e * e))[None, :, None, None]
    for t0 in range(0, t, step):
        chunk = _checked_chunk(trace, t0, min(t, t0 + step))  # [c, L, k]
        index = base + chunk[:, :-1, :, None] * e + chunk[:, 1:, None, :]  # [c, L-1, k, k]
        out += np.bincount(index.ravel(), minlength=cells)
    return out.reshape(layers - 1, e, e)


def _row_stochastic(pairs: np.ndarray) -> np.ndarray:
    """Normalise ``[..., E, E]`` counts per row; rows without counts become uniform."""
    e = pairs.shape[-1]
    rows = pairs.sum(axis=-1, keepdims=True)
    return np.divide(
        pairs.astype(np.float64),
        rows,
        out=np.full(pairs.shape, 1.0 / e),
        where=rows > 0,
    )


def _mutual_information(pairs: np.ndarray) -> np.ndarray:
    """``[..., E, E]`` joint counts -> ``[...]`` mutual information in bits (NaN if empty)."""
    joint = pairs.astype(np.float64)
    total = joint.sum(axis=(-2, -1), keepdims=True)
    joint = np.divide(joint, total, out=np.zeros_like(joint), where=total > 0)
    px = joint.sum(axis=-1, keepdims=True)
    py = joint.sum(axis=-2, keepdims=True)
    outer = px * py
    ratio = np.divide(joint, outer, out=np.ones_like(joint), where=joint > 0)
    terms = joint * np.log2(ratio)
    mi = np.maximum(terms.sum(axis=(-2, -1)), 0.0)
    return np.where(total[..., 0, 0] > 0, mi, np.nan)


def transition_matrix(trace: TokenTrace) -> np.ndarray:
    """Cross-layer expert transitions ``P(expert j at layer l+1 | expert i at layer l)``.

    Every token contributes all ``k * k`` pairs (slot at ``l``, slot at ``l+1``); counts are
    normalised per row. Streams over the tokens in chunks (memory-mapped traces stay mapped).

    Args:
        trace: token trace, ``experts [T, L, k]``.

    Returns:
        ``[L-1, E, E]`` float64, row-stochastic; a row whose expert ``i`` is never chosen at
        layer ``l`` is uniform ``1/E``. ``L = 1`` gives shape ``[0, E, E]``.

    Raises:
        TraceError: expert ids outside ``[0, E)``.
    """
    return _row_stochastic(_pair_counts(trace))


def cross_layer_mutual_information(trace: TokenTrace) -> np.ndarray:
    """Mutual information ``I(X_l; X_{l+1})`` in bits between consecutive layers' experts.

    ``(X_l, X_{l+1})`` is distributed as the ``k * k`` (slot at ``l``, slot at ``l+1``)
    pairs of all tokens (the joint counts of :func:`transition_matrix`, normalised). 0: the
    next layer's routing is independent of this one's; ``log2(E)``: fully determined
    (possible only for ``k = 1``). How much a cross-layer (token-to-expert) predictor can
    learn from the previous layer's routing.

    This is the plug-in estimate: on a finite trace it is biased upwards by roughly
    ``(E-1)^2 / (2 n ln 2)`` bits for ``n = T * k^2`` pairs (~0.015 bits for 577 tokens,
    top-2 of 8; ~0.2 bits for 4096 tokens, top-8 of 256), so compare traces of similar size.

    Args:
        trace: token trace, ``experts [T, L, k]``.

    Returns:
        ``[L-1]`` float64 bits, ``>= 0``; NaN for an empty trace.

    Raises:
        TraceError: expert ids outside ``[0, E)``.
    """
    return _mutual_information(_pair_counts(trace))


def token_id_predictability(trace: TokenTrace) -> np.ndarray:
    """In-sample top-k hit rate of a lookup table ``token_id -> its k most frequent experts``.

    For each layer, every vocabulary id is mapped to the ``k`` experts it was routed to most
    often in the trace; the hit rate is the fraction of the tokens' actual top-k
    assignments the table predicts, ``sum |predicted ∩ actual| / (k * T_id)``. Fitted and
    scored on the same tokens, it is the upper bound a token-id lookup predictor reaches.
    Tokens with ``token_id == -1`` are excluded.

    Args:
        trace: token trace, ``experts [T, L, k]``, ``token_id [T]``.

    Returns:
        ``[L]`` float64 in ``[k/E, 1]``; all NaN when no token has an id.

    Raises:
        TraceError: expert ids outside ``[0, E)``.
    """
    t, layers, k = trace.experts.shape
    e = trace.num_experts
    token_id = np.asarray(trace.token_id)
    known = token_id >= 0
    n_known = int(known.sum())
    if n_known == 0:
        return np.full(layers, np.nan)
    ids, inverse = np.unique(token_id[known], return_inverse=True)
    group = np.full(t, -1, dtype=np.intp)  # token -> index of its id among `ids`
    group[known] = inverse.ravel()
    u = ids.size
    cells = layers * u * e
    dense = cells <= _DENSE_TOKEN_ID_CELLS
    counts = np.zeros(cells if dense else 0, dtype=np.int64)
    keys_parts: list[np.ndarray] = []
    counts_parts: list[np.ndarray] = []
    # Dense: chunks of at least half the counter, so the per-chunk bincount over all cells
    # costs no more than the chunk's own work.
    step = max(1, max(_CHUNK_ELEMENTS, cells // 2 if dense else 0) // (layers * k))
    layer_base = (np.arange(layers, dtype=np.intp) * u)[None, :, None]
    for t0 in range(0, t, step):
        t1 = min(t, t0 + step)
        sel = known[t0:t1]
        if not sel.any():
            continue
        chunk = _checked_chunk(trace, t0, t1)[sel]  # [c, L, k]
        key = (layer_base + group[t0:t1][sel][:, None, None]) * e + chunk  # (l, id, expert)
        if dense:
            counts += np.bincount(key.ravel(), minlength=cells)
        else:
            uniq, cnt = np.unique(key.ravel(), return_counts=True)
            keys_parts.append(uniq)
            counts_parts.append(cnt)
    if dense:
        top = np.sort(counts.reshape(layers, u, e), axis=-1)[..., e - k :]
        hits = top.sum(axis=(1, 2))
    else:  # sparse: distinct (layer, id, expert) keys with their counts, top k per (l, id)
        keys, where = np.unique(np.concatenate(keys_parts), return_inverse=True)
        cnt = np.bincount(where.ravel(), weights=np.concatenate(counts_parts)).astype(np.int64)
        cell = keys // e  # layer * U + id
        order = np.lexsort((-cnt, cell))
        cell, cnt = cell[order], cnt[order]
        starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
        rank = np.arange(cell.size) - np.repeat(starts, np.diff(np.r_[starts, cell.size]))
        keep = rank < k
        hits = np.bincount(cell[keep] // u, weights=cnt[keep], minlength=layers)
    return hits.astype(np.float64) / (k * n_known)


# ----------------------------------------------------------------------------------------
# the summary a user reads
# ----------------------------------------------------------------------------------------


@dataclass
class TraceStats:
    """Per-layer statistics of a token trace or load series (what ``gps-trace inspect`` prints).

    A "batch" is ``batch_size`` consecutive tokens of a token trace, or one step of a load
    series. Ratios are max/mean (1 = perfectly balanced); entropies are in bits.

    Attributes:
        kind: ``"token_trace"`` or ``"load_series"``.
        num_layers: ``L``.
        num_experts: ``E``.
        ep_degree: ``G``, GPUs of the expert-parallel group (contiguous expert placement).
        num_tokens: ``T`` (token traces), else ``None``.
        top_k: ``k`` (token traces), else ``None``.
        num_steps: ``S`` (load series), else ``None``.
        batch_size: tokens per batch (token traces), else ``None``.
        num_batches: full batches (or steps) the per-batch statistics average over.
        note: how the batching deviated from the request (e.g. fewer tokens than one batch);
            empty when it did not.
        model: ``meta["model"]`` of the trace, or ``""``.
        proportions: ``[L, E]`` share of each layer's routed assignments per expert, whole
            trace (rows sum to 1).
        imbalance: ``[L]`` mean over batches of the per-batch max/mean GPU load at
            ``batch_size`` and ``ep_degree`` (what the slowest GPU costs).
        imbalance_expert_batch: ``[L]`` mean over batches of the per-batch max/mean expert load.
        imbalance_expert: ``[L]`` max/mean expert load over the whole trace.
        entropy: ``[L]`` bits of the whole-trace proportions (``log2(E)`` = uniform).
        cv: ``[L]`` coefficient of variation of the whole-trace expert loads.
        autocorrelation: ``[L]`` lag-1 autocorrelation of per-batch proportions (NaN with
            fewer than 3 batches).
        autocorrelation_lags: ``[M, L]`` lags ``1..M`` of the same (``M`` up to 16).
        mutual_information: ``[L-1]`` bits, ``I(X_l; X_{l+1})`` (token traces), else ``None``.
        token_id_predictability: ``[L]`` in-sample top-k hit rate of a token-id lookup table
            (all NaN without token ids; ``None`` for load series).
        transitions: ``[L-1, E, E]`` row-stochastic cross-layer transition matrices (token
            traces), else ``None``.
        time_index: ``[P]`` batch index or step of each row of ``load_over_time``.
        load_over_time: ``[P, L, E]`` per-batch (per-step) proportions, averaged into at most
            512 consecutive bins.
    """

    kind: str
    num_layers: int
    num_experts: int
    ep_degree: int
    num_tokens: int | None
    top_k: int | None
    num_steps: int | None
    batch_size: int | None
    num_batches: int
    note: str
    model: str
    proportions: np.ndarray
    imbalance: np.ndarray
    imbalance_expert_batch: np.ndarray
    imbalance_expert: np.ndarray
    entropy: np.ndarray
    cv: np.ndarray
    autocorrelation: np.ndarray
    autocorrelation_lags: np.ndarray
    mutual_information: np.ndarray | None
    token_id_predictability: np.ndarray | None
    transitions: np.ndarray | None
    time_index: np.ndarray
    load_over_time: np.ndarray

    # Per-layer fields summarised by `summary` (median across layers), in table order.
    PER_LAYER = (
        "imbalance",
        "imbalance_expert_batch",
        "imbalance_expert",
        "entropy",
        "cv",
        "autocorrelation",
        "mutual_information",
        "token_id_predictability",
    )

    @property
    def summary(self) -> dict[str, float | None]:
        """Median across layers of each per-layer statistic (NaN-skipping; ``None`` if absent)."""
        out: dict[str, float | None] = {}
        for name in self.PER_LAYER:
            values = getattr(self, name)
            out[name] = None if values is None else _nan_median(values)
        return out

    def to_dict(self, *, include_transitions: bool = False) -> dict[str, Any]:
        """JSON-serialisable dict (arrays as nested lists, NaN as ``None``), plus ``summary``.

        The ``[L-1, E, E]`` transition matrices and the over-time proportions are left out
        unless ``include_transitions`` (they can be large: ``L * E^2`` numbers).
        """
        skip = {"transitions", "time_index", "load_over_time"} if not include_transitions else set()
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in skip:
                continue
            out[f.name] = _jsonable(getattr(self, f.name))
        out["summary"] = _jsonable(self.summary)
        return out


def _nan_median(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def _jsonable(value: Any) -> Any:
    """numpy arrays/scalars -> lists/Python scalars, NaN/inf -> ``None``, recursively."""
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _autocorrelations(loads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lag-1 ``[L]`` and lags ``1..M`` ``[M, L]`` autocorrelation of ``[N, L, E]`` loads."""
    n, layers, _ = loads.shape
    lags = min(_MAX_LAGS, max(0, n - 2))  # keep at least 2 pairs per lag
    p = _proportions(loads) if lags else loads
    by_lag = np.array([_lagged_correlation(p, lag) for lag in range(1, lags + 1)])
    by_lag = by_lag.reshape(lags, layers)
    lag1 = by_lag[0] if lags else np.full(layers, np.nan)
    return lag1, by_lag


def _binned_over_time(loads: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch proportions ``[N, L, E]`` averaged into at most 512 bins, and bin indices."""
    n = loads.shape[0]
    if n == 0:
        return index[:0].astype(np.float64), np.zeros((0, *loads.shape[1:]))
    p = _proportions(loads)
    bins = min(n, _MAX_TIME_POINTS)
    edges = np.linspace(0, n, bins + 1).astype(np.intp)
    sums = np.add.reduceat(p, edges[:-1], axis=0)
    widths = np.diff(edges).astype(np.float64)
    centres = np.add.reduceat(index.astype(np.float64), edges[:-1]) / widths
    return centres, sums / widths[:, None, None]


def _common(loads: np.ndarray, total: np.ndarray, ep_degree: int) -> dict[str, np.ndarray | int]:
    """Statistics shared by token traces and load series (``loads [N, L, E]``, ``total [L, E]``)."""
    n, layers, _ = loads.shape
    if n:
        imbalance = imbalance_ratio(loads, ep_degree).mean(axis=0)
        expert_batch = imbalance_ratio(loads).mean(axis=0)
    else:
        imbalance_ratio(total, ep_degree)  # still reject a bad ep_degree
        imbalance = expert_batch = np.full(layers, np.nan)
    lag1, by_lag = _autocorrelations(loads)
    return {
        "num_batches": n,
        "proportions": _proportions(total),
        "imbalance": imbalance,
        "imbalance_expert_batch": expert_batch,
        "imbalance_expert": imbalance_ratio(total),
        "entropy": load_entropy(total),
        "cv": coefficient_of_variation(total),
        "autocorrelation": lag1,
        "autocorrelation_lags": by_lag,
    }


def trace_stats(trace: TokenTrace, batch_size: int = 64, ep_degree: int = 8) -> TraceStats:
    """Statistics of a token trace, batched into ``batch_size`` consecutive tokens.

    Per-batch statistics (GPU and expert imbalance, autocorrelation) use the full batches of
    :func:`~gps.traces.batching.batch_loads` (a final partial batch only counts towards the
    whole-trace statistics). A trace with fewer than ``batch_size`` tokens is treated as one
    batch of all its tokens, which ``TraceStats.note`` says.

    Args:
        trace: token trace, ``experts [T, L, k]``.
        batch_size: tokens per batch, ``>= 1``.
        ep_degree: ``G`` GPUs of the expert-parallel group, any ``G >= 1`` (placement:
            :func:`imbalance_ratio`).

    Raises:
        ValueError: empty trace, bad ``batch_size`` or ``ep_degree``.
    """
    t, layers, k = trace.experts.shape
    if t == 0:
        raise ValueError("trace has no tokens")
    imbalance_ratio(np.zeros(trace.num_experts), ep_degree)  # fail fast on a bad G
    every = batch_loads(trace, batch_size, drop_last=False)  # one pass over the tokens
    total = every.sum(axis=0)
    full = t // batch_size
    note = ""
    if full == 0:
        loads = every
        note = (
            f"only {t} tokens, fewer than batch_size={batch_size}: "
            f"per-batch statistics use one batch of all {t} tokens"
        )
    else:
        loads = every[:full]
        if t % batch_size:
            note = (
                f"last {t % batch_size} tokens (a partial batch) count only towards "
                "whole-trace statistics"
            )
    time_index, over_time = _binned_over_time(loads, np.arange(loads.shape[0]))
    pairs = _pair_counts(trace)  # one pass for both transitions and mutual information
    return TraceStats(
        kind="token_trace",
        num_layers=layers,
        num_experts=trace.num_experts,
        ep_degree=int(ep_degree),
        num_tokens=t,
        top_k=k,
        num_steps=None,
        batch_size=int(batch_size),
        note=note,
        model=str(trace.meta.get("model", "")),
        mutual_information=_mutual_information(pairs),
        token_id_predictability=token_id_predictability(trace),
        transitions=_row_stochastic(pairs),
        time_index=time_index,
        load_over_time=over_time,
        **_common(loads, total, ep_degree),
    )


def load_series_stats(series: LoadSeries, ep_degree: int = 8) -> TraceStats:
    """Statistics of a load series; each step is one batch.

    Cross-layer and token-id statistics need per-token routing, so they are ``None``.

    Args:
        series: ``counts [S, L, E]``, ``step [S]``.
        ep_degree: ``G`` GPUs of the expert-parallel group, any ``G >= 1`` (placement:
            :func:`imbalance_ratio`).

    Raises:
        ValueError: negative counts or a bad ``ep_degree``.
    """
    counts = np.asarray(series.counts)
    s, layers, e = counts.shape
    total = counts.sum(axis=0, dtype=np.int64) if s else np.zeros((layers, e), np.int64)
    time_index, over_time = _binned_over_time(counts, np.asarray(series.step))
    return TraceStats(
        kind="load_series",
        num_layers=layers,
        num_experts=e,
        ep_degree=int(ep_degree),
        num_tokens=None,
        top_k=None,
        num_steps=s,
        batch_size=None,
        note="" if s > 2 else f"only {s} step(s): no autocorrelation (needs 3)",
        model=str(series.meta.get("model", "")),
        mutual_information=None,
        token_id_predictability=None,
        transitions=None,
        time_index=time_index,
        load_over_time=over_time,
        **_common(counts, total, ep_degree),
    )


def _cell(value: float, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if not np.isfinite(value) else f"{value:>{width}.{digits}f}"


def format_stats_table(stats: TraceStats) -> str:
    """Plain-text table: a definitions header, one row per layer, then median/min/max rows."""
    b, g, e = stats.batch_size, stats.ep_degree, stats.num_experts
    unit = f"batch of {b} tokens" if stats.kind == "token_trace" else "step"
    lines = [
        f"statistics per MoE layer ({stats.num_batches} x {unit}, EP degree G={g}, E={e})",
        f"  gpu_imb   mean over batches of max/mean GPU load, G={g}, contiguous placement "
        "(1 = balanced)",
        "  exp_imb   mean over batches of max/mean expert load",
        "  trace_imb max/mean expert load over the whole trace",
        f"  H_bits    entropy of the whole-trace load proportions, bits (uniform = "
        f"{np.log2(e):.2f})",
        "  cv        std/mean of the whole-trace expert loads",
        "  acf1      lag-1 autocorrelation of per-batch load proportions (mean over experts)",
    ]
    columns = [
        ("gpu_imb", stats.imbalance, 3),
        ("exp_imb", stats.imbalance_expert_batch, 3),
        ("trace_imb", stats.imbalance_expert, 3),
        ("H_bits", stats.entropy, 3),
        ("cv", stats.cv, 3),
        ("acf1", stats.autocorrelation, 3),
    ]
    if stats.mutual_information is not None:
        lines.append("  MI_next   mutual information with the next layer's experts, bits")
        mi = np.append(stats.mutual_information, np.nan)  # the last layer has no next
        columns.append(("MI_next", mi, 3))
    if stats.token_id_predictability is not None:
        lines.append(
            "  tokid_hit in-sample top-k hit rate of a token-id lookup table ('-' = no ids)"
        )
        columns.append(("tokid_hit", stats.token_id_predictability, 3))
    if stats.note:
        lines.append(f"  note: {stats.note}")
    width = 10
    lines.append(f"{'layer':>6}" + "".join(f"{name:>{width}}" for name, _, _ in columns))
    for layer in range(stats.num_layers):
        row = "".join(_cell(float(v[layer]), width, d) for _, v, d in columns)
        lines.append(f"{layer:>6}{row}")
    for label, reduce in (("median", _nan_median), ("min", np.nanmin), ("max", np.nanmax)):
        cells = []
        for _, values, digits in columns:
            finite = np.asarray(values, dtype=np.float64)
            finite = finite[np.isfinite(finite)]
            cells.append(_cell(float(reduce(finite)) if finite.size else np.nan, width, digits))
        lines.append(f"{label:>6}" + "".join(cells))
    return "\n".join(lines)
