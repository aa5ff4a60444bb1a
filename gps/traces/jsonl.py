"""Convert routing logs in JSON Lines (one record per token and layer) into a :class:`TokenTrace`.

The default field names read the vLLM logs of ``shared/traces/mixtral_8x7b_vllm``::

    {"dataset": "gsm8k", "problem_id": 0, "layer": 0, "experts": [7, 0],
     "gating_probs": [0.80, 0.20], "token_idx": 0}

Other vLLM/SGLang logs convert the same way by naming their fields. A token is identified by
its sequence key (the values of ``sequence_fields``) and its position (``token_field``).

Logs as people have them:

* **Header and metadata lines** (a JSON object with none of the layer, experts and position
  fields, e.g. ``{"model": ..., "num_layers": 24}``) and ``#`` comment lines are skipped and
  reported (``meta["skipped_lines"]``, ``meta["header"]``), not mistaken for records.
* **Runs that each logged some layers** (several files over the same prompts) merge: a token
  is its sequence key and position in every file, its token id (when logged) must agree
  between files, and ``layer_map`` maps the logged layer numbers onto the model's MoE layers
  (``meta["moe_layers"]``; ``meta["runs"]`` lists each file's layers). A trace covering a
  subset of the model's MoE layers is priced on those layers (``gps.advisor.data``).
* **Warm-up and dummy passes** are dropped (:func:`gps.traces.clean.drop_warmup`: the first
  ``skip_first`` sequences, records a ``warmup_fields`` flag marks, constant-input sequences)
  with the count in ``meta["warmup"]``; ``keep_warmup=True`` keeps them.

Missing layers: the rule is ``missing_layers="drop"`` (default) — a token that lacks a record
for some layer is dropped whole, a ``UserWarning`` says how many, and ``meta`` records the
count and the first few dropped tokens; ``missing_layers="error"`` raises instead. Nothing is
filled in. Duplicate (token, layer) records, ragged top-k lists, out-of-range or repeated
expert ids and non-integer ids are errors naming ``file:line``.
"""

from __future__ import annotations

import json
import os
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from gps.traces.clean import WARMUP_FIELDS, drop_warmup
from gps.traces.trace import TokenTrace
from gps.traces.validate import TraceError, validate_token_trace

_MAX_DROPPED_EXAMPLES = 20
_MAX_HEADERS = 5


class _Records:
    """Columns of the parsed records (flat Python lists, turned into arrays once)."""

    def __init__(self) -> None:
        self.layer: list = []
        self.experts: list = []  # flat, k per record
        self.scores: list = []  # flat, k per record
        self.position: list = []
        self.sequence: list[int] = []
        self.token_id: list = []
        self.domain: list[int] = []
        self.file: list[int] = []
        self.line: list[int] = []
        self.flagged: list[bool] = []
        self.skipped: list[str] = []  # "file:line" of header / metadata / comment lines
        self.headers: list[dict] = []
        self.sequence_keys: dict[tuple, int] = {}
        self.domain_names: dict[str, int] = {}
        self.k: int | None = None


def _as_paths(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(path, str | os.PathLike):
        return [Path(path)]
    paths = [Path(p) for p in path]
    if not paths:
        raise ValueError("read_routing_jsonl: no input file given")
    return paths


def _parse_file(
    path: Path,
    file_index: int,
    rec: _Records,
    fields: dict[str, str | None],
    sequence_fields: tuple[str, ...],
    warmup_fields: tuple[str, ...],
) -> None:
    """Append every record of ``path`` to ``rec``; per-record checks that need the line."""
    record_keys = {fields["layer"], fields["experts"], fields["token"]}
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            if line.lstrip().startswith("#"):
                rec.skipped.append(f"{path.name}:{line_no}")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(where, "<json>", f"invalid JSON: {exc}") from None
            except RecursionError:
                raise TraceError(where, "<json>", "invalid JSON: nested too deeply") from None
            if not isinstance(obj, dict):
                raise TraceError(where, "<json>", f"expected an object, got {type(obj).__name__}")
            if not record_keys & obj.keys():  # a header / metadata line, not a routing record
                rec.skipped.append(f"{path.name}:{line_no}")
                if len(rec.headers) < _MAX_HEADERS:
                    scalars = {k: v for k, v in obj.items()
                               if isinstance(v, str | int | float | bool) or v is None}  # fmt: skip
                    rec.headers.append({"line": f"{path.name}:{line_no}", **scalars})
                continue

            def get(name: str, obj: dict = obj, where: str = where) -> object:
                if name not in obj:
                    raise TraceError(where, name, f"missing (record keys: {sorted(obj)})")
                return obj[name]

            experts = get(fields["experts"])
            if not isinstance(experts, list) or not experts:
                raise TraceError(where, fields["experts"], f"expected a non-empty list: {experts}")
            if rec.k is None:
                rec.k = len(experts)
            elif len(experts) != rec.k:
                raise TraceError(
                    where, fields["experts"], f"{len(experts)} experts, earlier records {rec.k}"
                )
            rec.experts.extend(experts)
            if fields["scores"] is not None:
                scores = get(fields["scores"])
                if not isinstance(scores, list) or len(scores) != rec.k:
                    raise TraceError(
                        where, fields["scores"], f"expected a list of {rec.k} numbers: {scores}"
                    )
                rec.scores.extend(scores)
            rec.layer.append(get(fields["layer"]))
            rec.position.append(get(fields["token"]))
            key = tuple(get(name) for name in sequence_fields)
            try:
                rec.sequence.append(rec.sequence_keys.setdefault(key, len(rec.sequence_keys)))
            except TypeError:
                raise TraceError(
                    where, ",".join(sequence_fields), f"sequence key {key} is not hashable"
                ) from None
            if fields["token_id"] is not None:
                rec.token_id.append(get(fields["token_id"]))
            if fields["domain"] is not None:
                name = str(get(fields["domain"]))
                rec.domain.append(rec.domain_names.setdefault(name, len(rec.domain_names)))
            rec.file.append(file_index)
            rec.line.append(line_no)
            rec.flagged.append(any(bool(obj.get(name)) for name in warmup_fields))


def _array(values: list | np.ndarray) -> np.ndarray:
    """``values`` as an array; ragged or mixed lists as a 1-D object array (never raises)."""
    try:
        return np.array(values)
    except (ValueError, TypeError):
        return np.array(values, dtype=object)


def _first_bad(values: list | np.ndarray, kind: type | types.UnionType) -> int:
    """Index of the first value that is a bool, a list, a string... rather than a ``kind``, or
    an integer beyond 64 bits (0 if none is)."""

    def bad(v: object) -> bool:
        return isinstance(v, bool) or not isinstance(v, kind) or (
            isinstance(v, int) and not -(2**63) <= v < 2**63
        )  # fmt: skip

    return next((i for i, v in enumerate(values) if bad(v)), 0)


def _int_column(
    values: list | np.ndarray, field: str, where: Callable[[int], str], low: int, high: int
) -> np.ndarray:
    """``values`` as int64 after checking each is a JSON integer in ``[low, high)``."""
    arr = _array(values)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        i = _first_bad(values, int)
        raise TraceError(where(i), field, f"not an integer: {values[i]!r}")
    out = (arr < low) | (arr >= high)  # before the cast: a uint64 above 2**63 keeps its value
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise TraceError(where(i), field, f"value {int(arr[i])} outside [{low}, {high})")
    return arr.astype(np.int64)


def read_routing_jsonl(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    layer_field: str = "layer",
    experts_field: str = "experts",
    scores_field: str | None = "gating_probs",
    token_field: str = "token_idx",
    sequence_fields: Sequence[str] = ("dataset", "problem_id"),
    token_id_field: str | None = None,
    domain_field: str | None = "dataset",
    num_experts: int | None = None,
    model: str = "",
    source: str = "",
    license: str = "",
    missing_layers: Literal["drop", "error"] = "drop",
    layer_map: Mapping[int, int] | None = None,
    skip_first: int = 0,
    keep_warmup: bool = False,
    warmup_fields: Sequence[str] = WARMUP_FIELDS,
) -> TokenTrace:
    """Read one or more JSON Lines routing logs (one record per token and layer) as one trace.

    Args:
        path: a file or a list of files; sequence ids are shared across them, so runs that
            each logged some layers of the same prompts merge token by token.
        layer_field: MoE layer index (0-based int). Without ``layer_map`` the logged layers
            must be ``0 .. L-1``; a log of other layer numbers is refused with the
            ``--layer-map`` that would import it.
        experts_field: list of the ``k`` chosen expert ids, gate order (best first).
        scores_field: list of the ``k`` gate weights, or ``None`` for logs without them.
        token_field: position of the token in its sequence (int >= 0).
        sequence_fields: fields whose values together identify a sequence (request); each
            distinct key becomes a ``sequence_id`` in first-seen order (``meta["sequence_keys"]``).
        token_id_field: vocabulary id field, or ``None`` (``token_id`` = -1).
        domain_field: field naming the token's domain/subject, or ``None``.
        num_experts: ``E``; ``None`` infers largest id + 1 (with a warning: it undercounts
            if the top experts were never chosen).
        model, source, license: copied into ``meta``.
        missing_layers: ``"drop"`` tokens lacking some layer (warned and counted in ``meta``)
            or ``"error"``.
        layer_map: logged layer number -> the model's MoE-layer index (0-based, dense layers
            not counted). The trace's layers are the mapped ones in MoE-layer order and
            ``meta["moe_layers"]`` lists them: a subset of the model is priced on those layers.
            Records of a layer the map does not name are an error.
        skip_first: drop the first ``N`` sequences (first-seen order) as warm-up.
        keep_warmup: keep flagged and constant-input sequences (:mod:`gps.traces.clean`).
        warmup_fields: record fields whose truthy value flags a warm-up / dummy record.

    Returns:
        Tokens sorted by (sequence id, position).

    Raises:
        TraceError: naming ``file:line`` and the field at fault.
    """
    paths = _as_paths(path)
    if missing_layers not in ("drop", "error"):
        raise ValueError(f"missing_layers must be 'drop' or 'error', got {missing_layers!r}")
    if num_experts is not None and (
        isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1
    ):
        raise ValueError(f"num_experts must be a positive int or None, got {num_experts!r}")
    sequence_fields = tuple(sequence_fields)
    fields = {
        "layer": layer_field,
        "experts": experts_field,
        "scores": scores_field,
        "token": token_field,
        "token_id": token_id_field,
        "domain": domain_field,
    }
    rec = _Records()
    for i, p in enumerate(paths):
        if not p.is_file():
            raise TraceError(str(p), "<file>", "no such file")
        _parse_file(p, i, rec, fields, sequence_fields, tuple(warmup_fields))
    origin = ", ".join(str(p) for p in paths)
    if not rec.layer:
        skipped = f" ({len(rec.skipped)} header/metadata lines)" if rec.skipped else ""
        raise TraceError(origin, layer_field, f"no routing records{skipped}: no line has "
                         f"{layer_field!r}, {experts_field!r} and {token_field!r}")  # fmt: skip
    k = rec.k
    num_records = len(rec.layer)

    def where(i: int) -> str:
        """``file:line`` of record ``i``."""
        return f"{paths[rec.file[i]]}:{rec.line[i]}"

    def where_flat(i: int) -> str:
        """``file:line`` of flat (record, slot) element ``i``."""
        return where(i // k)

    i32 = int(np.iinfo(np.int32).max)
    experts = _int_column(rec.experts, experts_field, where_flat, 0, 1 << 15).reshape(-1, k)
    inferred = num_experts is None
    if inferred:
        num_experts = int(experts.max()) + 1
        warnings.warn(
            f"{origin}: num_experts not given; inferred {num_experts} from the largest id",
            stacklevel=2,
        )
    experts = _int_column(experts.ravel(), experts_field, where_flat, 0, num_experts)
    experts = experts.reshape(num_records, k)
    ordered = np.sort(experts, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        raise TraceError(where(i), experts_field, f"repeated expert in {experts[i].tolist()}")
    logged_layer = _int_column(rec.layer, layer_field, where, 0, 1 << 15)
    position = _int_column(rec.position, token_field, where, 0, i32)
    layer, moe_layers = map_layers(logged_layer, layer_map, layer_field, where, origin)
    num_layers = int(layer.max()) + 1

    sequence = np.asarray(rec.sequence, dtype=np.int64)
    token_keys, token_of = np.unique(sequence << 32 | position, return_inverse=True)
    num_tokens = token_keys.size
    cell = token_of * num_layers + layer
    order = np.argsort(cell, kind="stable")
    dup = np.flatnonzero(cell[order][1:] == cell[order][:-1])
    if dup.size:
        a, b = order[dup[0]], order[dup[0] + 1]
        raise TraceError(
            where(b), layer_field, f"duplicate record for this token and layer (also {where(a)})"
        )
    layers_present = np.bincount(token_of, minlength=num_tokens)
    complete = layers_present == num_layers
    first_record = np.unique(token_of, return_index=True)[1]
    keys = [list(key) for key in rec.sequence_keys]
    token_sequence = (token_keys >> 32).astype(np.int32)
    token_position = (token_keys & 0xFFFFFFFF).astype(np.int32)
    dropped = []
    for t in np.flatnonzero(~complete)[:_MAX_DROPPED_EXAMPLES]:
        dropped.append(
            {
                "sequence_key": keys[token_sequence[t]],
                "position": int(token_position[t]),
                "layers_present": int(layers_present[t]),
            }
        )
    if dropped and missing_layers == "error":
        t = int(np.flatnonzero(~complete)[0])
        raise TraceError(
            where(int(first_record[t])),
            layer_field,
            f"token at position {token_position[t]} of sequence {keys[token_sequence[t]]} has "
            f"{layers_present[t]} of {num_layers} layers (missing_layers='error')",
        )
    if dropped:
        warnings.warn(
            f"{origin}: dropped {int((~complete).sum())} of {num_tokens} tokens that miss "
            f"some of the {num_layers} layers (missing_layers='drop')",
            stacklevel=2,
        )

    full = np.zeros((num_tokens, num_layers, k), dtype=np.int16)
    full[token_of, layer] = experts
    scores = None
    if scores_field is not None:
        flat = _array(rec.scores)
        if flat.dtype.kind not in "iuf" or flat.ndim != 1:
            bad = _first_bad(rec.scores, int | float)
            raise TraceError(where_flat(bad), scores_field, f"not a number: {rec.scores[bad]!r}")
        scores = np.zeros((num_tokens, num_layers, k), dtype=np.float16)
        with np.errstate(over="ignore"):  # overflow -> inf, rejected by validation
            scores[token_of, layer] = flat.reshape(num_records, k).astype(np.float16)
        scores = scores[complete]
    token_id = np.full(num_tokens, -1, dtype=np.int32)
    if token_id_field is not None:
        ids = _int_column(rec.token_id, token_id_field, where, 0, i32)
        _check_per_token(ids, token_of, first_record, where, token_id_field)
        token_id[token_of] = ids
    domain = None
    meta_domains = {}
    if domain_field is not None:
        if len(rec.domain_names) > np.iinfo(np.int16).max:
            raise TraceError(origin, domain_field, f"{len(rec.domain_names)} domains > 32767")
        labels = np.asarray(rec.domain, dtype=np.int64)
        _check_per_token(labels, token_of, first_record, where, domain_field)
        domain = np.zeros(num_tokens, dtype=np.int16)
        domain[token_of] = labels
        domain = domain[complete]
        meta_domains = {"domains": list(rec.domain_names)}
    file_of = np.asarray(rec.file)
    runs = [{"file": p.name, "layers": np.unique(logged_layer[file_of == i]).tolist()}
            for i, p in enumerate(paths)]  # fmt: skip
    meta = {
        "model": model,
        "source": source,
        "license": license,
        "converted_from": [p.name for p in paths],
        "sequence_fields": list(sequence_fields),
        "sequence_keys": keys,
        "num_experts_inferred": inferred,
        "dropped_tokens": int((~complete).sum()),
        "dropped_token_examples": dropped,
        "skipped_lines": len(rec.skipped),
        "skipped_line_examples": rec.skipped[:_MAX_HEADERS],
        "header": rec.headers,
        **({"moe_layers": moe_layers} if moe_layers is not None else {}),
        **({"runs": runs} if len(paths) > 1 else {}),
        **meta_domains,
    }
    trace = TokenTrace(
        experts=full[complete],
        token_id=token_id[complete],
        sequence_id=token_sequence[complete],
        position=token_position[complete],
        num_experts=int(num_experts),
        scores=scores,
        domain=domain,
        meta=meta,
    )
    trace = validate_token_trace(trace, origin)
    flagged = np.zeros(num_tokens, dtype=bool)
    np.logical_or.at(flagged, token_of, np.asarray(rec.flagged, dtype=bool))
    return drop_warmup(trace, skip_first=skip_first, origin=origin, detect=not keep_warmup,
                       flagged=None if keep_warmup else flagged[complete])  # fmt: skip


def map_layers(
    logged: np.ndarray,
    layer_map: Mapping[int, int] | None,
    field: str,
    where: Callable[[int], str],
    origin: str,
) -> tuple[np.ndarray, list[int] | None]:
    """``(trace layer index of each record, meta["moe_layers"] or None)`` (shared by the
    importers: ``gps.traces.importers`` maps array layers the same way).

    Without a map the logged numbers must be ``0 .. L-1``; with one, each logged number maps to
    an MoE-layer index and the trace's layers are the mapped ones in order."""
    present = np.unique(logged)
    if layer_map is None:
        if np.array_equal(present, np.arange(present.size)):
            return logged, None
        hint = ",".join(f"{v}:{v}" for v in present[:8].tolist()) + (
            ",..." if present.size > 8 else ""
        )
        raise TraceError(
            origin, field,
            f"layers {_short(present)} were logged, not 0..{present.size - 1}: the log covers "
            f"a subset of the model's layers (or numbers them its own way). Map each logged "
            f"layer onto the model's MoE-layer index with --layer-map LOGGED:MOE,... (e.g. "
            f"--layer-map {hint} if they already are MoE-layer indices); the run is then "
            "priced on those layers",
        )  # fmt: skip
    mapped = {int(k): int(v) for k, v in layer_map.items()}
    unmapped = present[~np.isin(present, list(mapped))]
    if unmapped.size:
        i = int(np.flatnonzero(logged == unmapped[0])[0])
        raise TraceError(where(i), field, f"layer {int(unmapped[0])} is not in --layer-map "
                         f"(it maps {sorted(mapped)})")  # fmt: skip
    moe = [mapped[int(v)] for v in present]
    if len(set(moe)) != len(moe):
        raise TraceError(origin, "--layer-map", f"two logged layers map to one MoE layer: {moe}")
    order = sorted(moe)
    index = np.zeros(int(present.max()) + 1, dtype=np.int64)
    index[present] = [order.index(m) for m in moe]
    return index[logged], order


def _short(values: np.ndarray) -> str:
    items = values.tolist()
    return str(items) if len(items) <= 12 else f"[{', '.join(map(str, items[:12]))}, ...]"


def _check_per_token(
    values: np.ndarray,
    token_of: np.ndarray,
    first_record: np.ndarray,
    where: Callable[[int], str],
    field: str,
) -> None:
    """Raise if a per-token field (token id, domain) differs between a token's layer records."""
    differs = values != values[first_record[token_of]]
    if differs.any():
        i = int(np.flatnonzero(differs)[0])
        j = int(first_record[token_of[i]])
        raise TraceError(
            where(i), field,
            f"{int(values[i])} differs from {int(values[j])} at {where(j)} for the same token "
            "(same sequence key and position): the logs disagree on this token; runs that "
            "each logged some layers must replay the same prompts, and --sequence-fields must "
            "name the request",
        )  # fmt: skip
