"""Validation of :class:`TokenTrace` and :class:`LoadSeries`; errors name the file and field.

Nothing is clipped or cast: a trace either satisfies the contract of ``gps/traces/trace.py``
exactly (shapes, dtypes, ranges) or :class:`TraceError` says what is wrong and where.
Large arrays (memory-mapped traces) are scanned in chunks of tokens so that the checks
never hold more than a few tens of MB of temporaries.
"""

from __future__ import annotations

import json

import numpy as np

from gps.traces.trace import LoadSeries, TokenTrace

# Elements of a [T, L, k] array scanned per chunk: small temporaries are reused from the
# heap (fresh multi-MB arrays cost page faults; measured ~2x slower at 1 << 24).
_CHUNK_ELEMENTS = 1 << 18


class TraceError(ValueError):
    """A trace that breaks the format contract.

    Attributes:
        origin: file (or ``"<memory>"``, or ``"file:line"``) the bad data came from.
        field: the field at fault (``"experts"``, ``"scores"``, ...).
    """

    def __init__(self, origin: str, field: str, message: str) -> None:
        self.origin = str(origin)
        self.field = field
        super().__init__(f"{self.origin}: field {field!r}: {message}")


def _check_array(
    value: object, origin: str, field: str, dtype: np.dtype | type, shape: tuple[int | None, ...]
) -> np.ndarray:
    """Check ``value`` is an ndarray of exactly ``dtype`` and ``shape`` (``None`` = any size)."""
    if not isinstance(value, np.ndarray):
        raise TraceError(origin, field, f"expected a numpy array, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise TraceError(origin, field, f"dtype {value.dtype} != required {np.dtype(dtype)}")
    if value.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
    ):
        want = tuple("?" if s is None else s for s in shape)
        raise TraceError(origin, field, f"shape {value.shape} != required {want}")
    return value


def _chunks(num_rows: int, per_row: int) -> list[slice]:
    """Slices of leading-axis rows holding about ``_CHUNK_ELEMENTS`` elements each."""
    step = max(1, _CHUNK_ELEMENTS // max(1, per_row))
    return [slice(start, start + step) for start in range(0, num_rows, step)]


def _check_meta(meta: object, origin: str) -> None:
    if not isinstance(meta, dict):
        raise TraceError(origin, "meta", f"expected a dict, got {type(meta).__name__}")
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TraceError(origin, "meta", f"not JSON-serialisable: {exc}") from None


def _check_experts(experts: np.ndarray, num_experts: int, origin: str) -> None:
    """Ids in ``[0, E)`` and no id repeated within one token's top-k, scanned by chunks."""
    t, layers, k = experts.shape
    for rows in _chunks(t, layers * k):
        start, chunk = rows.start, np.asarray(experts[rows])
        lo, hi = int(chunk.min()), int(chunk.max())
        if lo < 0 or hi >= num_experts:
            bad = np.argwhere((chunk < 0) | (chunk >= num_experts))[0]
            tok, layer, slot = int(bad[0]) + start, int(bad[1]), int(bad[2])
            raise TraceError(
                origin,
                "experts",
                f"expert id {int(experts[tok, layer, slot])} at token {tok}, layer {layer}, "
                f"slot {slot} outside [0, {num_experts}) (num_experts={num_experts})",
            )
        for i in range(k - 1):  # k(k-1)/2 vectorised compares beat sorting tiny rows
            dup = (chunk[..., i : i + 1] == chunk[..., i + 1 :]).any(axis=-1)
            if dup.any():
                tok, layer = (int(v) for v in np.argwhere(dup)[0])
                raise TraceError(
                    origin,
                    "experts",
                    f"token {tok + start}, layer {layer} repeats an expert in its top-{k}: "
                    f"{experts[tok + start, layer].tolist()}",
                )


def _check_scores(scores: np.ndarray, origin: str) -> None:
    """Finite, non-negative float16 gate weights, scanned by chunks on the raw bits.

    IEEE half: exponent bits ``0x7C00`` all set = inf/NaN; sign bit ``0x8000`` with a
    non-zero magnitude = negative (``-0.0`` passes). Integer tests avoid float16 arithmetic.
    """
    t, layers, k = scores.shape
    for rows in _chunks(t, layers * k):
        start = rows.start
        bits = np.asarray(scores[rows]).view(np.uint16)
        for bad, what in (((bits & 0x7C00) == 0x7C00, "non-finite"), (bits > 0x8000, "negative")):
            if bad.any():
                tok, layer, slot = (int(v) for v in np.argwhere(bad)[0])
                raise TraceError(
                    origin,
                    "scores",
                    f"{what} score {scores[tok + start, layer, slot]} at token {tok + start}, "
                    f"layer {layer}, slot {slot}",
                )


def _first_bad(values: np.ndarray, bad: np.ndarray) -> str:
    i = int(np.flatnonzero(bad)[0])
    return f"value {int(values[i])} at index {i}"


def validate_token_trace(trace: TokenTrace, origin: str = "<memory>") -> TokenTrace:
    """Check ``trace`` against the :class:`TokenTrace` contract; return it unchanged.

    Checks: ``experts`` int16 ``[T, L, k]`` with ``L, k >= 1``, ``k <= E``, ids in ``[0, E)``
    and distinct within each token's top-k; ``token_id`` (``>= -1``), ``sequence_id``
    (``>= 0``) and ``position`` (``>= 0``) int32 ``[T]``; ``scores`` ``None`` or float16
    ``[T, L, k]``, finite and ``>= 0``; ``domain`` ``None`` or int16 ``[T]`` indexing
    ``meta["domains"]`` (``-1`` = unknown); ``meta`` a JSON-serialisable dict; ``hidden`` and
    ``hidden_layers`` both ``None`` or both given (see :func:`_check_hidden`).

    Raises:
        TraceError: naming ``origin`` and the first field at fault.
    """
    if not isinstance(trace, TokenTrace):
        raise TraceError(origin, "<trace>", f"expected TokenTrace, got {type(trace).__name__}")
    num_experts = trace.num_experts
    if isinstance(num_experts, bool) or not isinstance(num_experts, int | np.integer):
        raise TraceError(origin, "num_experts", f"expected an int, got {num_experts!r}")
    if not 1 <= num_experts <= np.iinfo(np.int16).max:
        raise TraceError(origin, "num_experts", f"{num_experts} outside [1, 32767]")
    experts = _check_array(trace.experts, origin, "experts", np.int16, (None, None, None))
    t, layers, k = experts.shape
    if layers < 1 or k < 1:
        raise TraceError(origin, "experts", f"shape {experts.shape}: need L >= 1 and k >= 1")
    if k > num_experts:
        raise TraceError(origin, "experts", f"top-k {k} > num_experts {num_experts}")
    for name, low in (("token_id", -1), ("sequence_id", 0), ("position", 0)):
        values = _check_array(getattr(trace, name), origin, name, np.int32, (t,))
        bad = values < low
        if bad.any():
            raise TraceError(origin, name, f"{_first_bad(values, bad)} below {low}")
    _check_meta(trace.meta, origin)
    if trace.domain is not None:
        domain = _check_array(trace.domain, origin, "domain", np.int16, (t,))
        names = trace.meta.get("domains")
        if not isinstance(names, list):
            raise TraceError(origin, "meta.domains", "a domain array needs meta['domains'] (list)")
        bad = (domain < -1) | (domain >= len(names))
        if bad.any():
            raise TraceError(
                origin, "domain", f"{_first_bad(domain, bad)} outside [-1, {len(names)})"
            )
    _check_experts(experts, num_experts, origin)
    if trace.scores is not None:
        scores = _check_array(trace.scores, origin, "scores", np.float16, (t, layers, k))
        _check_scores(scores, origin)
    _check_hidden(trace, origin, t, layers)
    return trace


def _check_hidden(trace: TokenTrace, origin: str, t: int, layers: int) -> None:
    """``hidden`` float16/float32 ``[T, H, d]`` (``H, d >= 1``), finite, scanned by chunks;
    ``hidden_layers`` int16 ``[H]`` strictly increasing in ``[0, L)``; both or neither."""
    if trace.hidden is None and trace.hidden_layers is None:
        return
    if trace.hidden is None or trace.hidden_layers is None:
        given, missing = ("hidden", "hidden_layers")[:: 1 if trace.hidden is not None else -1]
        raise TraceError(origin, missing, f"missing: required when {given!r} is given")
    hidden = trace.hidden
    if not isinstance(hidden, np.ndarray) or hidden.dtype not in (np.float16, np.float32):
        what = hidden.dtype if isinstance(hidden, np.ndarray) else type(hidden).__name__
        raise TraceError(origin, "hidden", f"{what}: need a float16 or float32 numpy array")
    if hidden.ndim != 3 or hidden.shape[0] != t or 0 in hidden.shape[1:]:
        raise TraceError(origin, "hidden", f"shape {hidden.shape} != required ({t}, H>=1, d>=1)")
    h = hidden.shape[1]
    ids = _check_array(trace.hidden_layers, origin, "hidden_layers", np.int16, (h,))
    if ids.min() < 0 or ids.max() >= layers or (np.diff(ids) <= 0).any():
        raise TraceError(
            origin, "hidden_layers", f"{ids.tolist()}: need increasing ids in [0, {layers})"
        )
    for rows in _chunks(t, h * hidden.shape[2]):
        bad = ~np.isfinite(np.asarray(hidden[rows]))
        if bad.any():
            tok, j, dim = (int(v) for v in np.argwhere(bad)[0])
            where = f"token {tok + rows.start}, slice {j}, dim {dim}"
            raise TraceError(origin, "hidden", f"non-finite value at {where}")


def validate_load_series(series: LoadSeries, origin: str = "<memory>") -> LoadSeries:
    """Check ``series`` against the :class:`LoadSeries` contract; return it unchanged.

    Checks: ``counts`` an integer-dtype ``[S, L, E]`` array with ``L, E >= 1`` and no
    negative count; ``step`` int64 ``[S]`` strictly increasing; ``meta`` a JSON-serialisable
    dict.

    Raises:
        TraceError: naming ``origin`` and the first field at fault.
    """
    if not isinstance(series, LoadSeries):
        raise TraceError(origin, "<series>", f"expected LoadSeries, got {type(series).__name__}")
    counts = series.counts
    if not isinstance(counts, np.ndarray):
        raise TraceError(origin, "counts", f"expected a numpy array, got {type(counts).__name__}")
    if counts.dtype.kind not in "iu":
        raise TraceError(origin, "counts", f"dtype {counts.dtype} is not an integer dtype")
    if counts.ndim != 3 or counts.shape[1] < 1 or counts.shape[2] < 1:
        raise TraceError(origin, "counts", f"shape {counts.shape}: need [S, L>=1, E>=1]")
    s = counts.shape[0]
    step = _check_array(series.step, origin, "step", np.int64, (s,))
    if s and counts.dtype.kind == "i":
        for rows in _chunks(s, counts.shape[1] * counts.shape[2]):
            start, chunk = rows.start, np.asarray(counts[rows])
            if (chunk < 0).any():
                i, layer, e = (int(v) for v in np.argwhere(chunk < 0)[0])
                raise TraceError(
                    origin,
                    "counts",
                    f"negative count {int(chunk[i, layer, e])} at step index {i + start}, "
                    f"layer {layer}, expert {e}",
                )
    if s > 1:
        bad = np.diff(step) <= 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TraceError(
                origin,
                "step",
                f"not strictly increasing: step[{i}]={int(step[i])}, "
                f"step[{i + 1}]={int(step[i + 1])}",
            )
    _check_meta(series.meta, origin)
    return series
