"""Warm-up and dummy passes in imported routing logs: detect them, drop them, say so.

Serving engines run forward passes before any real request (vLLM's profile run and CUDA-graph
capture, SGLang's warm-up request, a benchmark's first prompts), and a per-layer routing logger
records them like any other pass. One public vLLM-based log held 8,448 such tokens, 66% of its
records: its "top-3 experts take 51% of tokens" was that artifact, not the model's routing.

:func:`drop_warmup` removes whole sequences (requests) that are

* ``skip_first``: the first ``N`` sequences in log order (``gps-trace convert --skip-first N``);
* ``flagged``: marked by the logger (a truthy ``warmup``/``is_warmup``/``dummy``/``is_dummy``
  field in a JSON Lines record, :data:`WARMUP_FIELDS`, or ``--warmup-field NAME``);
* ``constant_input``: at least ``min_tokens`` tokens of one input repeated: every token id
  the same, or, without token ids, every token routed to the same experts in every layer (a
  transformer's causal attention over identical inputs gives identical hidden states, so a
  dummy batch of one repeated token routes every token identically; real text does not).

A real prompt sent several times is kept: its repeats are load the server really carried.

and records what it dropped in ``meta["warmup"]`` (counts per reason, examples), which
``gps-trace convert`` prints in its summary.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gps.traces.batching import take_tokens
from gps.traces.trace import TokenTrace

#: Record fields a logger may use to flag warm-up / dummy records (JSON Lines).
WARMUP_FIELDS: tuple[str, ...] = ("warmup", "is_warmup", "dummy", "is_dummy")
_EXAMPLES = 10


def _sequences(trace: TokenTrace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids [S] in first-seen order, order [T], bounds [S + 1])``: token indices of each
    sequence, by position, are ``order[bounds[i]:bounds[i + 1]]``."""
    seq = np.asarray(trace.sequence_id)
    _, first = np.unique(seq, return_index=True)
    ids = seq[np.sort(first)]
    rank = np.empty(ids.max() + 1 if ids.size else 0, dtype=np.int64)
    rank[ids] = np.arange(ids.size)
    order = np.lexsort((np.asarray(trace.position), rank[seq]))
    counts = np.bincount(rank[seq], minlength=ids.size)
    return ids, order, np.concatenate([[0], np.cumsum(counts)])


def drop_warmup(
    trace: TokenTrace,
    *,
    skip_first: int = 0,
    flagged: np.ndarray | None = None,
    detect: bool = True,
    min_tokens: int = 4,
    origin: str = "<memory>",
) -> TokenTrace:
    """``trace`` without its warm-up and dummy sequences, ``meta["warmup"]`` saying what went.

    Args:
        trace: an imported token trace.
        skip_first: drop the first ``N`` sequences (first-seen order) whatever they hold.
        flagged: ``[T]`` bool, tokens the logger flagged; their whole sequences go.
        detect: also drop ``constant_input`` sequences (module docstring).
        min_tokens: a sequence needs at least this many tokens to count as constant input.
        origin: file name for error messages.

    Returns:
        The kept tokens (order unchanged); ``meta["warmup"]``: ``dropped_sequences``,
        ``dropped_tokens``, ``by_reason`` (sequences per reason), ``examples`` (sequence,
        reason, tokens; first ten).

    Raises:
        ValueError: ``skip_first`` < 0, ``min_tokens`` < 1, or every sequence dropped (naming
            ``origin`` and the reasons, so the user can pass ``--keep-warmup``).
    """
    if isinstance(skip_first, bool) or not isinstance(skip_first, int) or skip_first < 0:
        raise ValueError(f"skip_first must be an integer >= 0, got {skip_first!r}")
    if min_tokens < 1:
        raise ValueError(f"min_tokens must be >= 1, got {min_tokens}")
    ids, order, bounds = _sequences(trace)
    reason: dict[int, str] = {int(s): "skip_first" for s in ids[:skip_first]}
    if flagged is not None:
        hit = np.unique(np.asarray(trace.sequence_id)[np.asarray(flagged, dtype=bool)])
        for s in hit:
            reason.setdefault(int(s), "flagged")
    if detect:
        _detect(trace, ids, order, bounds, min_tokens, reason)
    lengths = np.diff(bounds)
    length_of = dict(zip(ids.tolist(), lengths.tolist(), strict=True))
    dropped = np.array(sorted(reason), dtype=np.int64)
    by_reason: dict[str, int] = {}
    for r in reason.values():
        by_reason[r] = by_reason.get(r, 0) + 1
    report = {
        "dropped_sequences": len(reason),
        "dropped_tokens": int(sum(length_of[s] for s in reason)),
        "by_reason": by_reason,
        "examples": [
            {"sequence": s, "reason": reason[s], "tokens": length_of[s]}
            for s in list(reason)[:_EXAMPLES]
        ],
    }
    if len(reason) == ids.size and ids.size:
        raise ValueError(
            f"{origin}: field 'sequence_id': every one of the {ids.size} sequences looks like "
            f"warm-up ({', '.join(f'{k} {v}' for k, v in by_reason.items())}); if they are "
            "real requests, convert with --keep-warmup (and no --skip-first)"
        )
    keep = ~np.isin(np.asarray(trace.sequence_id), dropped)
    out = take_tokens(trace, keep) if not keep.all() else trace
    return dataclasses.replace(out, meta={**out.meta, "warmup": report})


def _detect(trace: TokenTrace, ids: np.ndarray, order: np.ndarray, bounds: np.ndarray,
            min_tokens: int, reason: dict[int, str]) -> None:  # fmt: skip
    """Add the ``constant_input`` sequences to ``reason`` (module docstring)."""
    token_id = np.asarray(trace.token_id)
    experts = np.sort(np.asarray(trace.experts), axis=-1)  # expert sets, slot order ignored
    for i, s in enumerate(ids.tolist()):
        rows = order[bounds[i] : bounds[i + 1]]
        if rows.size < min_tokens:
            continue
        ids_known = bool((token_id[rows] >= 0).all())
        content = token_id[rows] if ids_known else experts[rows]
        if (content == content[0]).all():
            reason.setdefault(s, "constant_input")


def describe_warmup(meta: dict) -> str | None:
    """One line for an import summary, or ``None`` when nothing was dropped."""
    report = meta.get("warmup") or {}
    if not report.get("dropped_sequences"):
        return None
    reasons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report["by_reason"].items())
    return (
        f"warm-up/dummy passes dropped: {report['dropped_sequences']} sequences, "
        f"{report['dropped_tokens']:,} tokens ({reasons}); --keep-warmup keeps them"
    )
