"""Importers: routing as serving stacks, papers and recorders publish it -> trace ``.npz``.

One function per ``gps-trace convert --format NAME`` (``FORMATS`` maps the names):

========================== ============================================ ==================
format                     input                                        result
========================== ============================================ ==================
``jsonl``                  JSON Lines, one record per (token, layer)    ``TokenTrace``
``arrays``                 ``.npz``/``.npy``: ``[T, L, k]`` expert ids  ``TokenTrace``
``esft``                   ESFT ``expert_scores/<task>/expert_weights_  ``TokenTrace``
                           <layer>.txt`` folders
``hf-router-logits``       per-layer ``[T, E]`` router logits +         ``TokenTrace``
                           the model's ``config.json``
``sglang-expert-distri     SGLang ``expert_distribution_recorder_*.pt`` ``LoadSeries``
bution``                   dump (per-step counts)
``counts``                 aggregate ``[L, E]`` counts (JSON / ``.npz``) ``LoadSeries``
========================== ============================================ ==================

Every error is a :class:`~gps.traces.validate.TraceError` naming the file and the field.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from gps.traces.routing import logits_to_trace, read_hf_config, rule_from_config
from gps.traces.trace import LoadSeries, TokenTrace
from gps.traces.validate import TraceError, validate_load_series, validate_token_trace

# Member names tried in order for each field of an ``arrays`` file.
ARRAY_ALIASES: dict[str, tuple[str, ...]] = {
    "experts": ("experts", "expert_ids", "topk_ids", "selected_experts"),
    "scores": ("scores", "gate_weights", "topk_weights", "routing_weights"),
    "sequence_id": ("sequence_id", "seq", "sequence", "request_id"),
    "position": ("position", "pos", "positions"),
    "token_id": ("token_id", "token_ids", "input_ids"),
    "domain": ("domain", "dataset"),
    "domains": ("domains", "domain_names"),
    "num_experts": ("num_experts",),
}


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Members of a ``.npz`` (or a ``.npy`` as ``{"experts": ...}``), pickles refused."""
    if not path.is_file():
        raise TraceError(str(path), "<file>", "no such file")
    try:
        if path.suffix == ".npy":
            return {"experts": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (ValueError, OSError, EOFError) as exc:
        raise TraceError(str(path), "<file>", f"not a readable .npz/.npy: {exc}") from None


def _pick(arrays: Mapping[str, np.ndarray], field: str, name: str | None) -> str | None:
    """The member holding ``field``: ``name`` if given (must exist), else the first alias."""
    if name is not None:
        return name if name in arrays else ""
    return next((a for a in ARRAY_ALIASES[field] if a in arrays), None)


def _ints(
    origin: str, field: str, values: np.ndarray, shape: tuple, low: int, high: int
) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise TraceError(origin, field, f"expected integers, got dtype {values.dtype}")
    if values.shape != shape:
        raise TraceError(origin, field, f"shape {values.shape} != required {shape}")
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo < low or hi >= high:
            bad = int(np.flatnonzero((values.ravel() < low) | (values.ravel() >= high))[0])
            index = np.unravel_index(bad, values.shape)
            raise TraceError(
                origin, field,
                f"value {int(values.ravel()[bad])} at index {tuple(int(i) for i in index)} "
                f"outside [{low}, {high})",
            )  # fmt: skip
    return values


def _sequence_ids(keys: np.ndarray) -> np.ndarray:
    """Dense ids in first-seen order of per-token key rows ``[T, c]``."""
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.ravel()].astype(np.int32)


def _best_first(experts: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each token's ``k`` slots by descending score (gate order, best first)."""
    order = np.argsort(-scores.astype(np.float32), axis=-1, kind="stable")
    return np.take_along_axis(experts, order, -1), np.take_along_axis(scores, order, -1)


def _provenance(fmt: str, converted_from: list[str], model: str | None, source: str | None,
                license: str | None, **extra) -> dict:  # fmt: skip
    """The ``meta`` every importer writes: model, source, licence, input names, format."""
    return {"model": model, "source": source, "license": license,
            "converted_from": converted_from, "format": fmt, **extra}  # fmt: skip


def _finish(
    origin: str,
    experts: np.ndarray,
    scores: np.ndarray | None,
    num_experts: int | None,
    *,
    sequence_id: np.ndarray,
    position: np.ndarray,
    token_id: np.ndarray | None,
    domain: np.ndarray | None,
    domains: list[str] | None,
    meta: dict,
    sort_by_score: bool,
    renormalise: bool,
) -> TokenTrace:
    """Checks shared by the token-trace importers, then the validated trace."""
    if experts.ndim != 3 or 0 in experts.shape[1:]:
        raise TraceError(origin, "experts", f"shape {experts.shape}: need [T, L >= 1, k >= 1]")
    t, layers, k = experts.shape
    inferred = num_experts is None
    if inferred:
        num_experts = int(experts.max()) + 1 if experts.size else k
        warnings.warn(
            f"{origin}: num_experts not given; inferred {num_experts} from the largest id",
            stacklevel=3,
        )
    experts = _ints(origin, "experts", experts, (t, layers, k), 0, num_experts).astype(np.int16)
    if scores is not None:
        scores = np.asarray(scores)
        if scores.shape != experts.shape or scores.dtype.kind != "f":
            raise TraceError(
                origin, "scores", f"expected floats of shape {experts.shape}, got "
                f"{scores.dtype}{scores.shape}",
            )  # fmt: skip
        scores = scores.astype(np.float32)
        if not np.isfinite(scores).all() or (scores < 0).any():
            raise TraceError(origin, "scores", "negative or non-finite gate weight")
        if sort_by_score:
            experts, scores = _best_first(experts, scores)
        if renormalise:
            total = scores.sum(axis=-1, keepdims=True)
            meta["raw_score_sum_median"] = float(np.median(total)) if total.size else 0.0
            scores = scores / np.maximum(total, 1e-30)
        scores = scores.astype(np.float16)
    meta = {
        **meta,
        "num_experts_inferred": inferred,
        "scores_renormalised": bool(renormalise and scores is not None),
        "slots_sorted_by_score": bool(sort_by_score and scores is not None),
    }
    if domain is not None:
        meta["domains"] = list(domains or [])
    trace = TokenTrace(
        experts=experts,
        token_id=(
            np.full(t, -1, dtype=np.int32)
            if token_id is None
            else _ints(origin, "token_id", token_id, (t,), -1, 2**31 - 1).astype(np.int32)
        ),
        sequence_id=_ints(origin, "sequence_id", sequence_id, (t,), 0, 2**31 - 1).astype(np.int32),
        position=_ints(origin, "position", position, (t,), 0, 2**31 - 1).astype(np.int32),
        num_experts=int(num_experts),
        scores=scores,
        domain=None
        if domain is None
        else _ints(origin, "domain", domain, (t,), -1, len(domains or [])).astype(np.int16),
        meta=meta,
    )
    return validate_token_trace(trace, origin)


def read_arrays(
    path: str | os.PathLike,
    *,
    num_experts: int | None = None,
    fields: Mapping[str, str] | None = None,
    sort_by_score: bool = True,
    renormalise: bool = True,
    model: str = "",
    source: str = "",
    license: str = "",
) -> TokenTrace:
    """A token trace from arrays in a ``.npz`` (or a lone ``[T, L, k]`` ``.npy``).

    Members (first alias found, or the name given in ``fields[field]``):

    * ``experts`` ``[T, L, k]`` integer expert ids (``expert_ids``, ``topk_ids``, ...);
    * optional ``scores`` ``[T, L, k]`` gate weights (``gate_weights``, ``topk_weights``);
    * optional ``sequence_id`` / ``seq``, ``position`` / ``pos``, ``token_id`` /
      ``input_ids``, ``domain`` ``[T]`` integers, ``domains`` (names), ``num_experts``.

    A sequence is identified by ``(domain, sequence)`` when both are present (so sequence
    numbers that restart in each domain, as in ESFT's arrays, stay distinct), else by the
    sequence array; without one, every token is one sequence. Without positions, tokens are
    numbered ``0, 1, ...`` within their sequence in file order.

    Args:
        path: ``.npz`` or ``.npy``.
        num_experts: ``E`` (default: a ``num_experts`` member, else largest id + 1 with a
            warning).
        fields: member-name overrides, e.g. ``{"experts": "ids"}``.
        sort_by_score: reorder each token's slots best first by gate weight (routers that use
            ``topk(sorted=False)``, such as DeepSeek-V2's, log them in arbitrary order).
        renormalise: divide the ``k`` weights by their sum (the trace stores renormalised
            weights; the raw median sum goes to ``meta["raw_score_sum_median"]``).
        model, source, license: provenance into ``meta``.

    Raises:
        TraceError: naming ``path`` and the member at fault.
    """
    path = Path(path)
    origin = str(path)
    arrays = _load_arrays(path)
    fields = dict(fields or {})
    unknown = set(fields) - set(ARRAY_ALIASES)
    if unknown:
        raise ValueError(f"fields: unknown field(s) {sorted(unknown)} ({sorted(ARRAY_ALIASES)})")
    name = {f: _pick(arrays, f, fields.get(f)) for f in ARRAY_ALIASES}
    for f, member in name.items():
        if member == "":
            raise TraceError(origin, fields[f], f"missing (members: {sorted(arrays)})")
    if name["experts"] is None:
        raise TraceError(origin, "experts", f"missing: none of {ARRAY_ALIASES['experts']} in "
                         f"{sorted(arrays)}")  # fmt: skip
    experts = arrays[name["experts"]]
    if experts.ndim != 3:
        raise TraceError(origin, name["experts"], f"shape {experts.shape}: need [T, L, k]")
    t = experts.shape[0]

    def get(f: str) -> np.ndarray | None:
        return None if name[f] is None else arrays[name[f]]

    if num_experts is None and name["num_experts"] is not None:
        num_experts = int(arrays[name["num_experts"]])
    domain, domains = get("domain"), None
    if domain is not None:
        names = get("domains")
        domains = (
            [str(d) for d in np.asarray(names).ravel()]
            if names is not None
            else [str(i) for i in range(int(np.max(domain, initial=-1)) + 1)]
        )
        domain = _ints(origin, name["domain"], domain, (t,), -1, len(domains))
    seq = get("sequence_id")
    if seq is not None:
        seq = _ints(origin, name["sequence_id"], seq, (t,), 0, 2**31 - 1)
    key_columns = [c for c in (domain, seq) if c is not None]
    sequence_id = (
        _sequence_ids(np.stack(key_columns, axis=1).astype(np.int64))
        if key_columns and seq is not None
        else np.zeros(t, dtype=np.int32)
    )
    position = get("position")
    if position is None:
        position = _positions_in_order(sequence_id)
    meta = _provenance("arrays", [path.name], model, source, license,
                       members={f: m for f, m in name.items() if m})  # fmt: skip
    return _finish(
        origin, experts, get("scores"), num_experts, sequence_id=sequence_id,
        position=position, token_id=get("token_id"), domain=domain, domains=domains,
        meta=meta, sort_by_score=sort_by_score, renormalise=renormalise,
    )  # fmt: skip


def _positions_in_order(sequence_id: np.ndarray) -> np.ndarray:
    """``0, 1, ...`` within each sequence, in file order."""
    order = np.argsort(sequence_id, kind="stable")
    ranks = np.arange(sequence_id.size)
    starts = np.searchsorted(sequence_id[order], sequence_id[order], side="left")
    position = np.empty(sequence_id.size, dtype=np.int64)
    position[order] = ranks - starts
    return position


_ESFT_FILE = re.compile(r"expert_weights_(\d+)\.txt")


def read_esft(
    root: str | os.PathLike,
    *,
    num_experts: int = 64,
    tasks: Sequence[str] | None = None,
    sort_by_score: bool = True,
    renormalise: bool = True,
    model: str = "deepseek-ai/ESFT-vanilla-lite",
    source: str = "",
    license: str = "",
) -> TokenTrace:
    """A token trace from ESFT's ``expert_scores/<task>/expert_weights_<layer>.txt`` folders.

    ESFT's ``scripts/expert/get_expert_scores.py`` (github.com/deepseek-ai/ESFT) writes, per
    task and MoE layer ``l`` (1-based), one line per sequence: the ``k`` expert ids of every
    token (tab-separated, ``T_s * k`` numbers), then ``"\\t\\t"``, then the matching gate
    weights. Row ``t`` of every layer file is the same token. Each task becomes a domain,
    each line a sequence.

    Args:
        root: the ``expert_scores`` folder (or a folder above it holding exactly one).
        num_experts: ``E`` (64 for DeepSeek-V2-Lite / ESFT-vanilla-lite).
        tasks: task sub-folders to read (default: all, sorted).
        sort_by_score, renormalise, model, source, license: as :func:`read_arrays`.

    Raises:
        TraceError: naming the file (``file:line``) and the field: a layer file missing in
            some task, ragged lines, a token count that differs between layers, bad numbers.
    """
    root = Path(root)
    if not root.is_dir():
        raise TraceError(str(root), "<folder>", "no such folder")
    found = sorted(root.rglob("expert_weights_*.txt"))
    if not found:
        raise TraceError(str(root), "expert_weights_<layer>.txt", "no ESFT layer file found")
    task_dirs = sorted({p.parent for p in found})
    if tasks is not None:
        by_name = {d.name: d for d in task_dirs}
        missing = [t for t in tasks if t not in by_name]
        if missing:
            raise TraceError(str(root), "<task>", f"{missing} not among {sorted(by_name)}")
        task_dirs = [by_name[t] for t in tasks]
    layer_sets = {
        d: sorted(int(m.group(1)) for p in d.iterdir() if (m := _ESFT_FILE.fullmatch(p.name)))
        for d in task_dirs
    }
    layers = sorted(set().union(*layer_sets.values()))
    for d, present in layer_sets.items():
        missing = sorted(set(layers) - set(present))
        if missing:
            raise TraceError(str(d), f"expert_weights_{missing[0]}.txt", "missing layer file")
    if layers != list(range(layers[0], layers[0] + len(layers))):
        raise TraceError(str(root), "<layers>", f"layer numbers not contiguous: {layers}")
    experts_parts, scores_parts, seq_parts, pos_parts, dom_parts = [], [], [], [], []
    next_sequence = 0
    k: int | None = None
    for di, d in enumerate(task_dirs):
        per_layer_ids, per_layer_w, lengths = [], [], None
        for layer in layers:
            file = d / f"expert_weights_{layer}.txt"
            ids, weights, lens = _read_esft_file(file, k)
            k = ids.shape[1]
            if lengths is None:
                lengths = lens
            elif not np.array_equal(lens, lengths):
                bad = int(np.flatnonzero(lens != lengths)[0]) if lens.size == lengths.size else -1
                where = f"{file}:{bad + 1}" if bad >= 0 else str(file)
                raise TraceError(where, "experts", "token count differs from the first layer file")
            per_layer_ids.append(ids)
            per_layer_w.append(weights)
        experts_parts.append(np.stack(per_layer_ids, axis=1))
        scores_parts.append(np.stack(per_layer_w, axis=1))
        n_seq = lengths.size
        seq_parts.append(np.repeat(np.arange(next_sequence, next_sequence + n_seq), lengths))
        pos_parts.append(np.concatenate([np.arange(n) for n in lengths]) if n_seq else [])
        dom_parts.append(np.full(int(lengths.sum()), di))
        next_sequence += n_seq
    meta = _provenance(
        "esft", [str(d.name) for d in task_dirs], model,
        source or "ESFT expert_scores (github.com/deepseek-ai/ESFT results/expert_scores)",
        license, layers=layers,
    )  # fmt: skip
    return _finish(
        str(root), np.concatenate(experts_parts), np.concatenate(scores_parts), num_experts,
        sequence_id=np.concatenate(seq_parts), position=np.concatenate(pos_parts),
        token_id=None, domain=np.concatenate(dom_parts), domains=[d.name for d in task_dirs],
        meta=meta, sort_by_score=sort_by_score, renormalise=renormalise,
    )  # fmt: skip


def _read_esft_file(path: Path, k: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids [T, k] int64, weights [T, k] float32, tokens per line [S])`` of one layer file."""
    ids, weights, lengths = [], [], []
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            where = f"{path}:{line_no}"
            parts = line.split("\t\t")
            if len(parts) != 2:
                raise TraceError(where, "<line>", "expected ids, a double tab, then weights")
            try:
                a = np.array(parts[0].split("\t"), dtype=np.int64)
                b = np.array(parts[1].split("\t"), dtype=np.float32)
            except ValueError as exc:
                raise TraceError(where, "experts", f"not a number: {exc}") from None
            if a.size != b.size:
                raise TraceError(where, "scores", f"{b.size} weights for {a.size} expert ids")
            if k is None:
                k = _esft_top_k(a, where)
            if a.size % k:
                raise TraceError(where, "experts", f"{a.size} ids: not a multiple of top-k {k}")
            ids.append(a.reshape(-1, k))
            weights.append(b.reshape(-1, k))
            lengths.append(a.size // k)
    if not ids:
        raise TraceError(str(path), "<file>", "no sequences")
    return np.concatenate(ids), np.concatenate(weights), np.asarray(lengths)


def _esft_top_k(ids: np.ndarray, where: str) -> int:
    """The top-k of the first line: the largest ``k`` dividing it whose groups never repeat."""
    for k in range(min(ids.size, 16), 0, -1):
        if ids.size % k == 0:
            rows = np.sort(ids.reshape(-1, k), axis=1)
            if not (rows[:, 1:] == rows[:, :-1]).any():
                return k
    raise TraceError(where, "experts", "cannot tell the top-k")


def read_hf_router_logits(
    path: str | os.PathLike,
    config: str | os.PathLike | Mapping,
    *,
    model: str = "",
    source: str = "",
    license: str = "",
) -> TokenTrace:
    """A token trace from router logits as Hugging Face ``transformers`` returns them.

    ``model(..., output_router_logits=True).router_logits`` is a tuple with one
    ``[batch * seq, E]`` tensor per MoE layer; save it as a ``.npz`` with members
    ``layer_0, layer_1, ...`` (each ``[T, E]``) or one ``router_logits [L, T, E]``, plus
    optional ``input_ids``/``attention_mask`` ``[batch, seq]`` (padding tokens, mask 0, are
    dropped; a row is a sequence) or ``sequence_id``/``position``/``token_id`` ``[T]``, and
    for DeepSeek-V3 ``e_score_correction_bias`` ``[L, E]``. The model's routing rule (top-k,
    softmax or sigmoid, DeepSeek's grouped top-k) comes from its ``config.json``.

    Raises:
        TraceError: naming ``path`` and the field: a missing ``layer_<l>``, a layer whose
            expert count is not the config's, a mask/ids shape that does not fit.
    """
    path = Path(path)
    origin = str(path)
    if isinstance(config, Mapping):
        cfg, cfg_origin = dict(config), "<config>"
    else:
        cfg, cfg_origin = read_hf_config(config), str(config)
    try:
        rule = rule_from_config(cfg, cfg_origin)
    except ValueError as exc:
        raise TraceError(cfg_origin, "model_type", str(exc)) from None
    arrays = _load_arrays(path)
    if "router_logits" in arrays:
        stacked = arrays["router_logits"]
        if stacked.ndim != 3:
            raise TraceError(origin, "router_logits", f"shape {stacked.shape}: need [L, T, E]")
        logits = list(stacked)
    else:
        numbers = sorted(int(m.group(1)) for n in arrays if (m := re.fullmatch(r"layer_(\d+)", n)))
        if not numbers:
            raise TraceError(origin, "layer_0", f"missing: no layer_<l> or router_logits member "
                             f"(members: {sorted(arrays)})")  # fmt: skip
        for expect in range(numbers[-1] + 1):
            if expect not in numbers:
                raise TraceError(origin, f"layer_{expect}", f"missing (layers present: {numbers})")
        logits = [arrays[f"layer_{i}"] for i in numbers]
    t = int(np.shape(logits[0])[0]) if np.ndim(logits[0]) == 2 else -1
    keep = np.ones(max(t, 0), dtype=bool)
    sequence_id = arrays.get("sequence_id")
    position = arrays.get("position")
    token_id = arrays.get("token_id")
    if "attention_mask" in arrays or ("input_ids" in arrays and np.ndim(arrays["input_ids"]) == 2):
        shape = np.shape(arrays.get("attention_mask", arrays.get("input_ids")))
        if len(shape) != 2 or shape[0] * shape[1] != t:
            raise TraceError(origin, "attention_mask", f"shape {shape}: need [batch, seq] with "
                             f"batch * seq = T = {t}")  # fmt: skip
        mask = np.asarray(arrays.get("attention_mask", np.ones(shape, dtype=np.int64))) != 0
        keep = mask.ravel()
        sequence_id = np.repeat(np.arange(shape[0]), shape[1])
        position = (np.cumsum(mask, axis=1) - 1).ravel()
        if "input_ids" in arrays:
            token_id = _ints(origin, "input_ids", arrays["input_ids"], shape, 0, 2**31 - 1).ravel()
    elif "input_ids" in arrays:
        token_id = arrays["input_ids"]
    biases = None
    if "e_score_correction_bias" in arrays:
        bias = arrays["e_score_correction_bias"]
        if bias.shape != (len(logits), rule.num_experts):
            raise TraceError(origin, "e_score_correction_bias", f"shape {bias.shape} != "
                             f"[L={len(logits)}, E={rule.num_experts}]")  # fmt: skip
        biases = list(bias)
    meta = _provenance("hf-router-logits", [path.name], model, source, license)
    trace = logits_to_trace(
        logits, rule, sequence_id=sequence_id, position=position, token_id=token_id,
        biases=biases, origin=origin, meta=meta,
    )  # fmt: skip
    if keep.all():
        return trace
    from gps.traces.batching import take_tokens

    return take_tokens(trace, keep)


def read_sglang_expert_distribution(
    path: str | os.PathLike, *, model: str = "", source: str = "", license: str = ""
) -> LoadSeries:
    """A :class:`LoadSeries` from an SGLang expert-distribution recorder dump (``.pt``).

    SGLang (``python/sglang/srt/eplb/expert_distribution.py``, sgl-project/sglang) dumps with
    ``torch.save`` after ``/dump_expert_distribution_record``:

    * ``--expert-distribution-recorder-mode stat`` (or ``stat_approx``): a dict with
      ``logical_count`` ``[S, L, E]`` int32, one row per forward pass (step) of the buffer
      (``--expert-distribution-recorder-buffer-size``), summed over ranks, plus ``rank`` and
      ``average_utilization_rate_over_window``. Rows that are all zero (buffer slots never
      filled) are dropped; ``step`` keeps the row index.
    * ``per_pass`` / ``per_token``: a dict with ``records`` (one per forward pass:
      ``forward_pass_id``, ``rank``, ``global_physical_count [L, P]``, ...) and
      ``last_physical_to_logical_map [L, P]``: physical counts are summed onto logical
      experts, ranks of the same forward pass added, ``step`` = ``forward_pass_id``.

    Read without torch (:mod:`gps.traces.torch_pickle`).

    Raises:
        TraceError: naming ``path`` and the field (``logical_count``, ``records``, ...).
    """
    from gps.traces.torch_pickle import load_torch_file

    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise TraceError(origin, "<file>", "no such file")
    try:
        data = load_torch_file(path)
    except ValueError as exc:
        raise TraceError(origin, "<file>", str(exc)) from None
    if not isinstance(data, dict):
        raise TraceError(origin, "<file>", f"expected a dict, got {type(data).__name__}")
    meta = _provenance("sglang-expert-distribution", [path.name], model, source, license)
    if "logical_count" in data:
        counts = np.asarray(data["logical_count"])
        if counts.ndim != 3 or counts.dtype.kind not in "iu":
            raise TraceError(origin, "logical_count", f"expected integer [S, L, E], got "
                             f"{counts.dtype}{counts.shape}")  # fmt: skip
        filled = counts.reshape(counts.shape[0], -1).any(axis=1)
        step = np.flatnonzero(filled).astype(np.int64)
        meta["mode"] = "stat"
        meta["dropped_empty_steps"] = int((~filled).sum())
        return validate_load_series(
            LoadSeries(counts=counts[filled].astype(np.int64), step=step, meta=meta), origin
        )
    if "records" in data:
        mapping = np.asarray(data.get("last_physical_to_logical_map"))
        if mapping.ndim != 2 or mapping.dtype.kind not in "iu":
            raise TraceError(origin, "last_physical_to_logical_map", "expected integer [L, P]")
        layers, physical = mapping.shape
        num_logical = int(mapping.max()) + 1
        by_pass: dict[int, np.ndarray] = {}
        for i, record in enumerate(data["records"]):
            count = np.asarray(record.get("global_physical_count"))
            if count.shape != (layers, physical):
                raise TraceError(origin, f"records[{i}].global_physical_count",
                                 f"shape {count.shape} != [L={layers}, P={physical}]")  # fmt: skip
            logical = np.zeros((layers, num_logical), dtype=np.int64)
            np.add.at(logical, (np.arange(layers)[:, None], mapping), count)
            pass_id = int(record.get("forward_pass_id", i))
            by_pass[pass_id] = by_pass.get(pass_id, 0) + logical
        if not by_pass:
            raise TraceError(origin, "records", "empty")
        steps = sorted(by_pass)
        meta["mode"] = "per_pass"
        series = LoadSeries(counts=np.stack([by_pass[s] for s in steps]),
                            step=np.asarray(steps, dtype=np.int64), meta=meta)  # fmt: skip
        return validate_load_series(series, origin)
    raise TraceError(origin, "logical_count", f"missing: neither 'logical_count' (stat mode) nor "
                     f"'records' (per_pass/per_token) in {sorted(data)}")  # fmt: skip


def read_counts(
    path: str | os.PathLike,
    *,
    prefix: str = "",
    layers: Sequence[int] | None = None,
    model: str = "",
    source: str = "",
    license: str = "",
) -> LoadSeries:
    """Aggregate ``[L, E]`` expert counts (e.g. per domain) as a :class:`LoadSeries`.

    Input: a JSON object mapping names to ``[L][E]`` integer lists (at the top level or under
    ``"counts"``, as in OLMoE's ``scripts/routing_output`` counts turned into JSON), or a
    ``.npz`` of ``[L, E]`` members, or a ``.npy`` ``[L, E]`` / ``[S, L, E]``. Each selected
    entry (name starts with ``prefix``, sorted) becomes one step; ``meta["step_names"]``
    names them and ``meta["layers"]`` gives the model layer of each row (``layers``).

    Raises:
        TraceError: naming ``path`` and the entry at fault (ragged, negative, non-integer,
            or an ``E`` that differs between entries).
    """
    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise TraceError(origin, "<file>", "no such file")
    entries: dict[str, np.ndarray]
    if path.suffix == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TraceError(origin, "<file>", f"not readable JSON: {exc}") from None
        if isinstance(obj, dict) and isinstance(obj.get("counts"), dict):
            obj = obj["counts"]
        if not isinstance(obj, dict):
            raise TraceError(origin, "<file>", "expected an object of name -> [L][E] counts")
        entries = {}
        for name, value in obj.items():
            if not name.startswith(prefix) or not isinstance(value, list):
                continue
            try:
                entries[name] = np.asarray(value)
            except ValueError:
                raise TraceError(origin, name, "ragged [L][E] lists") from None
    elif path.suffix == ".npy":
        array = _load_arrays(path)["experts"]
        entries = {str(i): a for i, a in enumerate(array if array.ndim == 3 else [array])}
    else:
        entries = {n: a for n, a in _load_arrays(path).items() if n.startswith(prefix)}
    if not entries:
        raise TraceError(origin, prefix or "<entries>", "no [L, E] counts selected")
    names = sorted(entries)
    shape = entries[names[0]].shape
    for name in names:
        a = entries[name]
        if a.ndim != 2 or a.dtype.kind not in "iu":
            raise TraceError(
                origin, name, f"expected integer [L, E] counts, got {a.dtype}{a.shape}"
            )
        if a.shape != shape:
            raise TraceError(origin, name, f"shape {a.shape} != {shape} of {names[0]}")
    if layers is not None and len(layers) != shape[0]:
        raise TraceError(origin, "layers", f"{len(layers)} layer numbers for {shape[0]} rows")
    meta = _provenance(
        "counts", [path.name], model, source, license, step_names=names,
        layers=list(layers) if layers is not None else list(range(shape[0])),
    )  # fmt: skip
    series = LoadSeries(
        counts=np.stack([entries[n] for n in names]).astype(np.int64),
        step=np.arange(len(names), dtype=np.int64),
        meta=meta,
    )
    return validate_load_series(series, origin)


def _read_jsonl(paths: Sequence[Path], **kwargs: object) -> TokenTrace:
    from gps.traces.jsonl import read_routing_jsonl

    return read_routing_jsonl(paths, **kwargs)  # type: ignore[arg-type]


#: ``gps-trace convert --format NAME`` -> reader (first argument: the input path(s)).
FORMATS: dict[str, Callable[..., TokenTrace | LoadSeries]] = {
    "jsonl": _read_jsonl,
    "arrays": read_arrays,
    "esft": read_esft,
    "hf-router-logits": read_hf_router_logits,
    "sglang-expert-distribution": read_sglang_expert_distribution,
    "counts": read_counts,
}
