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
``sglang-expert-distri     SGLang expert-distribution statistics:       ``LoadSeries``
bution``                   the recorder's ``.pt`` dump or the same
                           statistics as JSON (``logical_count``)
``counts``                 aggregate ``[L, E]`` counts (JSON / ``.npz``) ``LoadSeries``
``pickle``                 a pickled dict of per-layer arrays (expert   ``TokenTrace``
                           ids ``[T, k]`` or router logits ``[T, E]``),
                           read without running the pickle's code
========================== ============================================ ==================

Every error is a :class:`~gps.traces.validate.TraceError` naming the file and the field.
Token-trace readers take ``layer_map`` (logged layer -> the model's MoE-layer index: a subset
of layers, ``meta["moe_layers"]``) where their input numbers layers, and drop warm-up and dummy
passes (``skip_first``, ``keep_warmup``; :mod:`gps.traces.clean`).

Helpers other readers may reuse (stable names):

* :func:`whole_counts` -- token counts as ``int64``: integers or whole-number floats (SGLang and
  vLLM write some counts as floats), non-negative, a non-integral value named by its index;
* :func:`load_dump` -- a ``.json`` object or a ``torch.save`` ``.pt`` file as Python objects
  with numpy arrays, without torch and without running pickled code;
* :func:`load_pickle` -- a plain pickle of numpy arrays and containers, restricted the same way;
* :func:`parse_layer_map` -- ``"0:3,1:7"`` -> ``{0: 3, 1: 7}``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gps.model import hf_moe_layer_indices
from gps.traces.clean import drop_warmup
from gps.traces.jsonl import map_layers
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


# ---------------------------------------------------------------- shared helpers


def whole_counts(
    values: Any, origin: str, field: str, *, ndim: int | tuple[int, ...] | None = None
) -> np.ndarray:
    """Token counts as an ``int64`` array: integers, or floats that are whole numbers (engines
    such as SGLang write counts as floats); refused with a :class:`TraceError` naming
    ``origin``, ``field`` and the first bad index: a non-integral, non-finite or negative
    value, booleans, strings, ragged lists, or (``ndim``) the wrong number of dimensions."""
    try:
        a = np.asarray(values)
    except ValueError:
        raise TraceError(origin, field, "ragged lists: every row needs the same length") from None
    if a.dtype == object:
        raise TraceError(origin, field, "ragged lists or non-numbers: expected a numeric array")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.round(a)) | (np.abs(a) > 2.0**62)
        if bad.any():
            i = tuple(int(v) for v in np.argwhere(bad)[0])
            raise TraceError(origin, field, f"value {float(a[i])!r} at index {i} is not a whole "
                             "number of tokens")  # fmt: skip
        a = a.astype(np.int64)
    elif a.dtype.kind in "iu":
        a = a.astype(np.int64)
    else:
        raise TraceError(origin, field, f"expected counts (integers), got dtype {a.dtype}")
    wanted = (ndim,) if isinstance(ndim, int) else ndim
    if wanted is not None and a.ndim not in wanted:
        dims = " or ".join(f"{n}-D" for n in wanted)
        raise TraceError(origin, field, f"shape {a.shape}: expected {dims} counts")
    if a.size and a.min() < 0:
        i = tuple(int(v) for v in np.argwhere(a < 0)[0])
        raise TraceError(origin, field, f"negative count {int(a[i])} at index {i}")
    return a


def load_dump(path: str | os.PathLike) -> Any:
    """The object in ``path``: JSON (``.json``) or a ``torch.save`` file (``.pt``/``.pth``, read by
    :func:`gps.traces.torch_pickle.load_torch_file` without torch); tensors come back as numpy
    arrays, JSON lists as lists.

    Raises:
        TraceError: naming the file: missing, unreadable, not JSON, not a torch zip archive,
            or a pickle naming anything but tensors and containers.
    """
    from gps.traces.torch_pickle import load_torch_file

    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise TraceError(origin, "<file>", "no such file")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise TraceError(origin, "<file>", f"not readable JSON: {exc}") from None
    return load_torch_file(path)


# numpy's own reconstructors (numpy 1.x and 2.x module names) and plain containers: what a
# pickle of numpy arrays in dicts/lists names; anything else could run code when loaded.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
}  # fmt: skip


class _NumpyUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only :data:`_PICKLE_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        if module.split(".")[0] == "torch":
            raise pickle.UnpicklingError(
                f"holds torch objects ({module}.{name}); save them with torch.save (read "
                "torch-free here) or as numpy arrays (tensor.cpu().numpy())"
            )
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy "
                                     "arrays and plain containers are read")  # fmt: skip

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")


def load_pickle(path: str | os.PathLike) -> Any:
    """The object in a pickle of numpy arrays and plain containers (dict, list, tuple, sets,
    ``OrderedDict``), or in a ``torch.save`` file, without running the pickle's code and
    without torch: a pickle naming any other global (a torch tensor, a class, a function) is
    refused.

    Raises:
        TraceError: naming the file: missing, not a pickle, a refused global, object arrays.
    """
    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise TraceError(origin, "<file>", "no such file")
    if zipfile.is_zipfile(path):
        return load_dump(path)
    try:
        with open(path, "rb") as f:
            obj = _NumpyUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, MemoryError, OverflowError) as exc:  # fmt: skip
        raise TraceError(origin, "<pickle>", f"not a readable pickle of arrays: {exc}") from None
    return obj


def parse_layer_map(text: str | Mapping | None) -> dict[int, int] | None:
    """``"0:3,1:7"`` (logged layer ``:`` the model's MoE-layer index, comma-separated) ->
    ``{0: 3, 1: 7}``; a mapping is checked and returned; ``None`` stays ``None``.

    Raises:
        ValueError: naming ``--layer-map``: bad syntax, negative or repeated numbers.
    """
    if text is None:
        return None
    if isinstance(text, Mapping):
        pairs = list(text.items())
    else:
        try:
            pairs = [tuple(int(v) for v in item.split(":")) for item in str(text).split(",")]
        except ValueError:
            pairs = [()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"--layer-map {text!r}: expected LOGGED:MOE pairs, e.g. 0:0,5:12")
    out: dict[int, int] = {}
    for logged, moe in pairs:
        if isinstance(logged, bool) or isinstance(moe, bool) or not (
            isinstance(logged, int | np.integer) and isinstance(moe, int | np.integer)
        ) or logged < 0 or moe < 0:  # fmt: skip
            raise ValueError(f"--layer-map: {logged}:{moe}: layers are integers >= 0")
        if int(logged) in out:
            raise ValueError(f"--layer-map: logged layer {logged} mapped twice")
        out[int(logged)] = int(moe)
    if len(set(out.values())) != len(out):
        raise ValueError(f"--layer-map: two logged layers map to one MoE layer: {out}")
    return out


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
    if experts.shape[0] == 0:
        raise TraceError(origin, "experts", "no tokens (T = 0): nothing to import")
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
    layer_map: Mapping[int, int] | None = None,
    skip_first: int = 0,
    keep_warmup: bool = False,
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
        layer_map: layer ``l`` of the file -> the model's MoE-layer index (a file holding a
            subset of the layers; ``meta["moe_layers"]``).
        skip_first, keep_warmup: warm-up handling (:func:`gps.traces.clean.drop_warmup`).

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
        member = np.asarray(arrays[name["num_experts"]])
        if member.size != 1 or member.dtype.kind not in "iu":
            raise TraceError(origin, name["num_experts"], f"expected one integer E, got "
                             f"{member.dtype}{member.shape}")  # fmt: skip
        num_experts = int(member.reshape(()))
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
    scores = get("scores")
    if layer_map is not None:
        experts, scores, meta["moe_layers"] = _mapped(experts, scores, layer_map, origin)
    trace = _finish(
        origin, experts, scores, num_experts, sequence_id=sequence_id,
        position=position, token_id=get("token_id"), domain=domain, domains=domains,
        meta=meta, sort_by_score=sort_by_score, renormalise=renormalise,
    )  # fmt: skip
    return drop_warmup(trace, skip_first=skip_first, detect=not keep_warmup, origin=origin)


def _mapped(
    experts: np.ndarray, scores: np.ndarray | None, layer_map: Mapping[int, int], origin: str
) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Layers ``0 .. L-1`` of an array put in MoE-layer order by ``layer_map``; the order."""
    positions = np.arange(np.shape(experts)[1])
    index, moe_layers = map_layers(positions, parse_layer_map(layer_map), "layer_map",
                                   lambda i: origin, origin)  # fmt: skip
    order = np.argsort(index, kind="stable")
    return (np.asarray(experts)[:, order], None if scores is None
            else np.asarray(scores)[:, order], moe_layers)  # fmt: skip


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
    top_k: int | None = None,
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
        top_k: ``k`` (6 for DeepSeek-V2-Lite). ``None``: inferred from every line of the first
            layer file, the largest ``k <= 16`` that divides each line's id count and never
            repeats an id within a token (a warning says so; ``meta["top_k_inferred"]``).
            Every line of every file is checked against it either way.
        sort_by_score, renormalise, model, source, license: as :func:`read_arrays`.

    Raises:
        TraceError: naming the file (``file:line``) and the field: a layer file missing in
            some task, a line whose id count is not a multiple of ``k`` or that repeats an
            expert within a token, a token count that differs between layers, bad numbers.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):  # fmt: skip
        raise ValueError(f"--top-k must be an integer >= 1, got {top_k!r}")
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
    k = top_k
    if k is None:
        first = task_dirs[0] / f"expert_weights_{layers[0]}.txt"
        k = _esft_top_k(first)
        warnings.warn(f"{first}: top-k not given; inferred k = {k} from its lines (pass "
                      "--top-k to check against the model's)", stacklevel=2)  # fmt: skip
    for di, d in enumerate(task_dirs):
        per_layer_ids, per_layer_w, lengths = [], [], None
        for layer in layers:
            file = d / f"expert_weights_{layer}.txt"
            ids, weights, lens = _read_esft_file(file, k)
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
        license, layers=layers, top_k_inferred=top_k is None,
    )  # fmt: skip
    return _finish(
        str(root), np.concatenate(experts_parts), np.concatenate(scores_parts), num_experts,
        sequence_id=np.concatenate(seq_parts), position=np.concatenate(pos_parts),
        token_id=None, domain=np.concatenate(dom_parts), domains=[d.name for d in task_dirs],
        meta=meta, sort_by_score=sort_by_score, renormalise=renormalise,
    )  # fmt: skip


def _esft_lines(path: Path):
    """``(where, ids int64, weights float32)`` of each non-empty line of an ESFT layer file."""
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
            yield where, a, b


def _read_esft_file(path: Path, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids [T, k] int64, weights [T, k] float32, tokens per line [S])`` of one layer file;
    every line is checked against ``k``."""
    ids, weights, lengths = [], [], []
    for where, a, b in _esft_lines(path):
        if a.size % k:
            raise TraceError(where, "experts", f"{a.size} ids: not a multiple of top-k {k}")
        rows = a.reshape(-1, k)
        ordered = np.sort(rows, axis=1)
        repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if repeated.size:
            raise TraceError(where, "experts", f"token {int(repeated[0])} repeats an expert "
                             f"in its top-{k}: {rows[repeated[0]].tolist()} "
                             "(wrong --top-k?)")  # fmt: skip
        ids.append(rows)
        weights.append(b.reshape(-1, k))
        lengths.append(rows.shape[0])
    if not ids:
        raise TraceError(str(path), "<file>", "no sequences")
    return np.concatenate(ids), np.concatenate(weights), np.asarray(lengths)


def _esft_top_k(path: Path) -> int:
    """The largest ``k <= 16`` dividing every line's id count of ``path`` whose groups never
    repeat an id (one short line alone no longer decides: a 2-token line of top-6 reads as
    ``k = 12`` unless the other lines rule it out)."""
    lines = [a for _, a, _ in _esft_lines(path)]
    if not lines:
        raise TraceError(str(path), "<file>", "no sequences")
    for k in range(16, 0, -1):
        if all(a.size % k == 0 for a in lines):
            if all(not (np.diff(np.sort(a.reshape(-1, k), axis=1), axis=1) == 0).any()
                   for a in lines):  # fmt: skip
                return k
    raise TraceError(str(path), "experts", "cannot tell the top-k from the lines; pass --top-k")


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
    rule = rule_from_config(cfg, cfg_origin)  # TraceError naming the config and its field
    # the config's MoE-layer count (a ModelSpecError naming the config and its field)
    moe_layers = len(hf_moe_layer_indices(cfg, cfg_origin))
    arrays = _load_arrays(path)
    if "router_logits" in arrays:
        stacked = arrays["router_logits"]
        if stacked.ndim != 3:
            raise TraceError(origin, "router_logits", f"shape {stacked.shape}: need [L, T, E]")
        logits = list(stacked)
        name_of = first_name = "router_logits"
    else:
        numbers = sorted(int(m.group(1)) for n in arrays if (m := re.fullmatch(r"layer_(\d+)", n)))
        if not numbers:
            raise TraceError(origin, "layer_0", f"missing: no layer_<l> or router_logits member "
                             f"(members: {sorted(arrays)})")  # fmt: skip
        for expect in range(numbers[-1] + 1):
            if expect not in numbers:
                raise TraceError(origin, f"layer_{expect}", f"missing (layers present: {numbers})")
        logits = [arrays[f"layer_{i}"] for i in numbers]
        name_of, first_name = f"layer_{numbers[-1]}", "layer_0"
    if len(logits) != moe_layers:
        raise TraceError(
            origin, name_of,
            f"{len(logits)} layers of router logits, but {cfg_origin} describes "
            f"{moe_layers} MoE layers ({rule.model_type}, num_hidden_layers and its dense "
            "layers): the file and the config are not of the same model",
        )  # fmt: skip
    t = int(np.shape(logits[0])[0]) if np.ndim(logits[0]) == 2 else -1
    if t == 0:
        raise TraceError(origin, first_name, "no tokens (T = 0): nothing to import")
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
    if not keep.any():
        raise TraceError(origin, "attention_mask", "every token is padding: nothing to import")
    from gps.traces.batching import take_tokens

    return take_tokens(trace, keep)


def read_sglang_expert_distribution(
    path: str | os.PathLike, *, model: str = "", source: str = "", license: str = ""
) -> LoadSeries:
    """A :class:`LoadSeries` from SGLang's expert-distribution statistics: the recorder's
    ``torch.save`` dump (``.pt``) or the same statistics as JSON (``.json``), read by
    :func:`gps.traces.engine_stats.read_sglang_dump` (the one SGLang reader; its docstring
    gives the format and the SGLang version):

    * ``stat`` / ``stat_approx``: ``logical_count [S, L, E]`` (or one ``[L, E]`` total, as
      ``--init-expert-location`` reads it); rows never written are dropped, ``step`` keeps
      the row index;
    * ``per_pass`` / ``per_token``: ``records`` mapped onto logical experts with
      ``last_physical_to_logical_map``, ranks of a pass added, ``step`` = ``forward_pass_id``.

    Counts may be floats when they are whole numbers (:func:`whole_counts`). ``meta``: the
    provenance (``model``, ``source``, ``license``, ``converted_from``, ``format``), the
    recording ``mode``, ``engine_format`` and the reader's notes (dropped empty steps, ...).

    Raises:
        TraceError: naming ``path`` and the field once (``logical_count``,
            ``records[i].global_physical_count``, ``last_physical_to_logical_map``, ...).
    """
    from gps.traces.engine_stats import read_sglang_dump

    path = Path(path)
    stats = read_sglang_dump(path)
    meta = _provenance(
        "sglang-expert-distribution", [path.name], model, source, license,
        mode=stats.mode, engine_format=stats.format_version, **stats.meta,
    )  # fmt: skip
    series = LoadSeries(counts=stats.counts, step=stats.step, meta=meta)
    return validate_load_series(series, str(path))


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

    Input: a JSON object mapping names to ``[L][E]`` count lists (at the top level or under
    ``"counts"``, as in OLMoE's ``scripts/routing_output`` counts turned into JSON), or a
    ``.npz`` of ``[L, E]`` members, or a ``.npy`` ``[L, E]`` / ``[S, L, E]``. Counts are
    integers or whole-number floats (:func:`whole_counts`). Each selected
    entry (name starts with ``prefix``, sorted) becomes one step; ``meta["step_names"]``
    names them and ``meta["layers"]`` gives the model layer of each row (``layers``).

    Raises:
        TraceError: naming ``path`` and the entry at fault (ragged, negative, not a whole
            number, empty, or an ``E`` that differs between entries).
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
        entries = {
            name: value for name, value in obj.items()
            if name.startswith(prefix) and isinstance(value, list)
        }  # fmt: skip
    elif path.suffix == ".npy":
        array = _load_arrays(path)["experts"]
        entries = {str(i): a for i, a in enumerate(array if array.ndim == 3 else [array])}
    else:
        entries = {n: a for n, a in _load_arrays(path).items() if n.startswith(prefix)}
    if not entries:
        raise TraceError(origin, prefix or "<entries>", "no [L, E] counts selected")
    names = sorted(entries)
    entries = {name: whole_counts(entries[name], origin, name, ndim=2) for name in names}
    shape = entries[names[0]].shape
    for name in names:
        a = entries[name]
        if 0 in a.shape:
            raise TraceError(origin, name, f"shape {a.shape}: empty [L, E] counts")
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


_LAYER_KEY = re.compile(r"(\d+)(?!.*\d)")  # the last number in a key: "model.layers.3.mlp" -> 3


def _layer_number(key: Any) -> int | None:
    """The layer a dict key names: an int, or the last number in a string key."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int | np.integer):
        return int(key)
    m = _LAYER_KEY.search(key) if isinstance(key, str) else None
    return int(m.group(1)) if m else None


def _per_layer(obj: Any, origin: str) -> tuple[dict[int, Any], dict[str, Any]]:
    """``({layer: value}, {other key: value})`` of a pickled dict: layers keyed by number
    (``3``, ``"layer_3"``, ``"model.layers.3.mlp.gate"``), or a dict of such dicts under an
    expert-id alias (``{"topk_ids": {0: ...}, "topk_weights": {0: ...}}``)."""
    if not isinstance(obj, Mapping):
        raise TraceError(origin, "<pickle>", f"expected a dict of per-layer arrays, got "
                         f"{type(obj).__name__}")  # fmt: skip
    alias = next((a for a in ARRAY_ALIASES["experts"] if isinstance(obj.get(a), Mapping)), None)
    if alias is not None:  # {"topk_ids": {layer: [T, k]}, "topk_weights": {layer: [T, k]}}
        weights = next(
            (obj[a] for a in ARRAY_ALIASES["scores"] if isinstance(obj.get(a), Mapping)), {}
        )
        weight_of = {_layer_number(k): v for k, v in weights.items()}
        layers = {}
        for key, value in obj[alias].items():
            n = _layer_number(key)
            if n is None:
                raise TraceError(origin, f"{alias}[{key!r}]", "the key names no layer")
            w = weight_of.get(n)
            layers[n] = {"experts": value, **({"scores": w} if w is not None else {})}
        rest = {str(k): v for k, v in obj.items() if not isinstance(v, Mapping)}
        return layers, rest
    layers, rest = {}, {}
    for key, value in obj.items():
        n = _layer_number(key)
        if n is not None and (isinstance(value, Mapping) or np.ndim(value) == 2):
            if n in layers:
                raise TraceError(origin, str(key), f"layer {n} given twice")
            layers[n] = value
        else:
            rest[str(key)] = value
    if not layers:
        raise TraceError(
            origin,
            "<pickle>",
            f"no per-layer arrays: keys {sorted(map(str, obj))}"
            " (expected layer numbers, 'layer_<l>' or module names ending in one)",
        )
    return layers, rest


def read_pickled_arrays(
    path: str | os.PathLike,
    *,
    num_experts: int | None = None,
    hf_config: str | os.PathLike | Mapping | None = None,
    layer_map: Mapping[int, int] | None = None,
    sort_by_score: bool = True,
    renormalise: bool = True,
    skip_first: int = 0,
    keep_warmup: bool = False,
    model: str = "",
    source: str = "",
    license: str = "",
) -> TokenTrace:
    """A token trace from a pickled dict of per-layer arrays, as profiling scripts dump them.

    The pickle (``pickle.dump``) or ``torch.save`` file is read by :func:`load_pickle`: numpy
    arrays and plain containers only, torch-free, never running the file's code. Accepted
    layouts (``T`` tokens, the same in every layer):

    * ``{layer: ids}``: ``[T, k]`` integer expert ids per layer; keys are layer numbers,
      ``"layer_3"`` or module names such as ``"model.layers.3.mlp.gate"`` (the last number);
    * ``{layer: {"topk_ids": ids, "topk_weights": w}}`` (any :data:`ARRAY_ALIASES` names), or
      ``{"topk_ids": {layer: ids}, "topk_weights": {layer: w}}``;
    * ``{layer: logits}``: ``[T, E]`` float router logits, routed with the model's rule from
      ``hf_config`` (as ``hf-router-logits``).

    Other top-level ``[T]`` arrays named as in :data:`ARRAY_ALIASES` (``sequence_id``,
    ``position``, ``token_id``/``input_ids``) become the per-token fields; without a sequence
    array every token is one sequence. Layer numbers must be ``0 .. L-1`` unless ``layer_map``
    maps them onto the model's MoE layers (``meta["moe_layers"]``).

    Raises:
        TraceError: naming ``path`` and the key at fault: a refused global, no per-layer
            arrays, a layer whose shape or token count differs, logits without ``hf_config``.
    """
    path = Path(path)
    origin = str(path)
    layers, rest = _per_layer(load_pickle(path), origin)
    numbers = np.array(sorted(layers))
    index, moe_layers = map_layers(numbers, parse_layer_map(layer_map), "layer",
                                   lambda i: origin, origin)  # fmt: skip
    ordered = [int(n) for n in numbers[np.argsort(index, kind="stable")]]
    ids, weights, logits = [], [], []
    for n in ordered:
        value = layers[n]
        if isinstance(value, Mapping):
            member = {f: next((value[a] for a in ARRAY_ALIASES[f] if a in value), None)
                      for f in ("experts", "scores")}  # fmt: skip
            if member["experts"] is None:
                raise TraceError(
                    origin,
                    f"layer {n}",
                    f"no expert ids: none of "
                    f"{ARRAY_ALIASES['experts']} in {sorted(map(str, value))}",
                )
            value, w = np.asarray(member["experts"]), member["scores"]
        else:
            value, w = np.asarray(value), None
        if value.ndim != 2:
            raise TraceError(origin, f"layer {n}", f"shape {value.shape}: need [T, k] ids or "
                             "[T, E] logits")  # fmt: skip
        if value.dtype.kind == "f" and w is None:
            logits.append(value)
        else:
            ids.append(value)
            weights.append(None if w is None else np.asarray(w))
    if ids and logits:
        raise TraceError(origin, f"layer {ordered[len(ids)]}", "mixes expert ids and logits")
    t = {np.shape(a)[0] for a in (ids or logits)}
    if len(t) != 1:
        raise TraceError(origin, "layer", f"layers hold different token counts {sorted(t)}")
    (t,) = t

    def token_field(field: str) -> np.ndarray | None:
        member = next((rest[a] for a in ARRAY_ALIASES[field] if a in rest), None)
        if member is None:
            return None
        member = np.asarray(member)
        if member.ndim == 2 and member.size == t:  # [batch, seq] input_ids
            member = member.ravel()
        return _ints(origin, field, member, (t,), -1 if field == "token_id" else 0, 2**31 - 1)

    seq = token_field("sequence_id")
    sequence_id = np.zeros(t, dtype=np.int64) if seq is None else _sequence_ids(seq[:, None])
    position = token_field("position")
    position = _positions_in_order(sequence_id) if position is None else position
    meta = _provenance("pickle", [path.name], model, source, license,
                       layer_keys=[str(n) for n in ordered])  # fmt: skip
    if moe_layers is not None:
        meta["moe_layers"] = moe_layers
    if logits:
        if hf_config is None:
            raise TraceError(
                origin,
                f"layer {ordered[0]}",
                "[T, E] floats (router logits) "
                "need the model's routing rule: pass --hf-config config.json",
            )
        if isinstance(hf_config, Mapping):
            cfg, cfg_origin = dict(hf_config), "<config>"
        else:
            cfg, cfg_origin = read_hf_config(hf_config), str(hf_config)
        if t == 0:
            raise TraceError(origin, f"layer {ordered[0]}", "no tokens (T = 0): nothing to import")
        trace = logits_to_trace(
            logits, rule_from_config(cfg, cfg_origin), sequence_id=sequence_id,
            position=position, token_id=token_field("token_id"), origin=origin, meta=meta,
        )  # fmt: skip
    else:
        scores = None
        if all(w is not None for w in weights):
            scores = np.stack(weights, axis=1) if weights else None
        trace = _finish(
            origin, np.stack(ids, axis=1), scores, num_experts, sequence_id=sequence_id,
            position=position, token_id=token_field("token_id"), domain=None, domains=None,
            meta=meta, sort_by_score=sort_by_score, renormalise=renormalise,
        )  # fmt: skip
    return drop_warmup(trace, skip_first=skip_first, detect=not keep_warmup, origin=origin)


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
    "pickle": read_pickled_arrays,
}
