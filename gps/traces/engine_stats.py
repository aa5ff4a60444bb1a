"""Expert-load statistics as serving engines record them -> :class:`EngineLoadStats`.

EPLB-style balancers in vLLM, SGLang and TensorRT-LLM count, at every forward pass, how many
token copies each expert received. Those counts are the input of ``gps-eplb``
(``docs/eplb.md``). This module reads the engines' own dumps, without torch, into one typed
aggregate: per recorded step (forward pass) and MoE layer, token copies per *logical* expert.

========================= ======================================================= ==========
reader                    input (format of the version named in the docstring)    mode
========================= ======================================================= ==========
:func:`read_sglang_dump`  SGLang expert-distribution recorder dump, ``.pt`` or    ``stat``,
                          ``.json``: ``logical_count [S, L, E]`` (``stat`` /      ``per_pass``,
                          ``stat_approx``) or ``records`` + physical->logical     ``per_token``
                          map (``per_pass`` / ``per_token``); one file per rank
:func:`read_vllm_eplb`    vLLM EPLB state tensors saved by the user:             ``window``,
                          ``expert_load_window [W, L, P]`` / ``expert_load_pass`` ``pass``
                          ``[L, P]`` + ``physical_to_logical_map [L, P]``
:func:`read_trtllm_       TensorRT-LLM expert statistic folder:                   ``statistic``
statistic`                ``meta_info.json`` + ``rank<r>.safetensors``
:func:`stats_from_trace`  a moe-gps :class:`~gps.traces.trace.TokenTrace`, cut    ``token_trace``
                          into steps of consecutive tokens
========================= ======================================================= ==========

:func:`read_engine_stats` detects the format. Every error is one
:class:`~gps.traces.validate.TraceError` naming the file and the field: a wrong number of
dimensions, negative counts, non-integral floats, a layer count that differs between fields,
files or the model, no recorded step.

Shapes: ``S`` recorded steps, ``L`` MoE layers, ``E`` logical experts, ``P`` physical experts
(``E`` + redundant), ``W`` ring-buffer rows. Counts are token copies (a token routed to ``k``
experts counts ``k`` times per layer).

The converters at the end (:func:`sglang_stat_dump`, :func:`trace_to_sglang_stat`,
:func:`write_sglang_dump`) write the SGLang layout from moe-gps data, so a test can build a
recorder file and an example can be walked from a real trace (``docs/eplb.md``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gps.traces.importers import load_dump, whole_counts
from gps.traces.trace import LoadSeries, TokenTrace
from gps.traces.validate import TraceError

ENGINES = ("sglang", "vllm", "trtllm", "gps")

#: Format versions read (docstrings of the readers give the source files).
SGLANG_FORMAT = (
    "SGLang expert_distribution.py dump (sgl-project/sglang python/sglang/srt/eplb/"
    "expert_distribution.py @02295fe5, the v0.5 series; dict layout unchanged since the recorder "
    "moved to srt/eplb/)"
)
VLLM_FORMAT = (
    "vLLM EPLB state tensors (vllm/distributed/eplb/eplb_state.py: expert_load_pass, "
    "expert_load_window, physical_to_logical_map; vllm-project/vllm main @0014ec6c..50feac95)"
)
TRTLLM_FORMAT = (
    "TensorRT-LLM ExpertStatistic dump of the PyTorch backend, as read by NVIDIA/TensorRT-LLM "
    "examples/wide_ep/ep_load_balancer @76a646e9: meta_info.json + rank<r>.safetensors, keys "
    "'<iter>_<layer>'"
)


@dataclass(frozen=True)
class EngineLoadStats:
    """Expert loads an engine recorded, per step and MoE layer, on logical experts.

    Attributes:
        counts: ``[S, L, E]`` int64 token copies per logical expert at each recorded step.
        step: ``[S]`` int64 strictly increasing step (forward-pass) index.
        engine: which engine wrote the data (``ENGINES``).
        mode: the engine's recording mode (``stat``, ``per_pass``, ``per_token``, ``window``,
            ``pass``, ``statistic``, ``token_trace``).
        format_version: the engine version whose format was read.
        source: file names read, in order.
        physical_to_logical: ``[L, P]`` int64 physical -> logical expert map of the recording
            when the dump has one (the *last* map for SGLang per-pass dumps), else ``None``.
        physical_counts: ``[S, L, P]`` int64 counts per physical expert when recorded so,
            else ``None``.
        layers: model layer number of each of the ``L`` rows when the dump names them.
        meta: anything else worth keeping (JSON-serialisable): dropped empty rows, ranks
            summed, whether a ring buffer's order is known, ...
    """

    counts: np.ndarray
    step: np.ndarray
    engine: str
    mode: str
    format_version: str
    source: list[str]
    physical_to_logical: np.ndarray | None = None
    physical_counts: np.ndarray | None = None
    layers: list[int] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.counts.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.counts.shape[1])

    @property
    def num_experts(self) -> int:
        return int(self.counts.shape[2])

    def copies_per_step(self) -> np.ndarray:
        """``[S]`` token copies per step (layer mean: layers may drop or pad differently)."""
        return self.counts.sum(axis=-1).mean(axis=-1)

    def proportions(self) -> np.ndarray:
        """``[S, L, E]`` float64 share of each step's copies per expert (rows sum to 1; an
        all-zero row stays zero)."""
        total = self.counts.sum(axis=-1, keepdims=True)
        return np.divide(self.counts, total, out=np.zeros(self.counts.shape), where=total > 0)

    def to_load_series(self) -> LoadSeries:
        """The same counts as a :class:`LoadSeries` (what the predictors consume)."""
        meta = {
            "engine": self.engine,
            "mode": self.mode,
            "format": self.format_version,
            "converted_from": list(self.source),
            **self.meta,
        }
        if self.layers is not None:
            meta["layers"] = list(self.layers)
        return LoadSeries(counts=self.counts, step=self.step, meta=meta)


# ----------------------------------------------------------------------------- checks


def _map(origin: str, name: str, value: Any, num_experts: int | None) -> np.ndarray:
    """A ``[L, P]`` physical -> logical map with ids in ``[0, E)``."""
    try:
        a = np.asarray(value)
    except ValueError:
        raise TraceError(origin, name, "ragged lists: every row needs the same length") from None
    if a.dtype.kind in "iuf" and a.size and (a < 0).any():
        i = tuple(int(v) for v in np.argwhere(a < 0)[0])
        raise TraceError(origin, name, f"expert id {a[i].item()!r} at index {i}: physical "
                         "slots map to logical experts >= 0")  # fmt: skip
    m = whole_counts(value, origin, name, ndim=2)
    if m.size == 0:
        raise TraceError(origin, name, f"empty map, shape {m.shape}")
    if num_experts is not None and m.max() >= num_experts:
        i = tuple(int(v) for v in np.argwhere(m >= num_experts)[0])
        raise TraceError(
            origin, name, f"logical id {int(m[i])} at {i} >= num_experts {num_experts}"
        )
    return m


def _check_shape(
    origin: str, name: str, counts: np.ndarray, layers: int | None, experts: int | None
) -> None:
    if layers is not None and counts.shape[1] != layers:
        raise TraceError(
            origin,
            name,
            f"{counts.shape[1]} layers, expected {layers} (layer mismatch: shape {counts.shape})",
        )
    if experts is not None and counts.shape[2] != experts:
        raise TraceError(
            origin, name, f"{counts.shape[2]} experts, expected {experts} (shape {counts.shape})"
        )


def _to_logical(physical: np.ndarray, mapping: np.ndarray, num_experts: int) -> np.ndarray:
    """``[S, L, P]`` physical counts summed onto ``[S, L, E]`` logical experts."""
    s, layers, p = physical.shape
    out = np.zeros((s, layers, num_experts), dtype=np.int64)
    idx = (np.arange(layers)[:, None] * num_experts + mapping).ravel()  # [L*P]
    flat = physical.reshape(s, layers * p)
    for i in range(s):  # S bincounts of L*P values: vectorised per step
        out[i] = np.bincount(idx, weights=flat[i], minlength=layers * num_experts).reshape(
            layers, num_experts
        )
    return out


def _drop_empty(counts: np.ndarray) -> np.ndarray:
    """Mask ``[S]`` of steps with any count (ring-buffer rows never written are all zero)."""
    return counts.reshape(counts.shape[0], -1).any(axis=1)


def _nonempty(origin: str, name: str, counts: np.ndarray) -> None:
    if counts.shape[0] == 0 or counts.size == 0:
        raise TraceError(
            origin, name, f"empty: no recorded step with any count (shape {counts.shape})"
        )


def _load_dict(path: Path) -> dict:
    """A ``.pt`` (torch-free), ``.json`` (``gps.traces.importers.load_dump``) or ``.npz``
    file's top-level dict; errors name the file once."""
    origin = str(path)
    if path.suffix == ".npz" and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise TraceError(origin, "<file>", f"not a readable .npz: {exc}") from None
    else:
        data = load_dump(path)
    if not isinstance(data, dict):
        raise TraceError(origin, "<file>", f"expected a dict at the top, got {type(data).__name__}")
    return data


def _paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise TraceError("<arguments>", "<file>", "no file given")
    return [Path(p) for p in items]


# ----------------------------------------------------------------------------- SGLang


def read_sglang_dump(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    num_layers: int | None = None,
    num_experts: int | None = None,
) -> EngineLoadStats:
    """Load statistics from SGLang's expert-distribution recorder (``.pt`` or ``.json``).

    Format (:data:`SGLANG_FORMAT`): ``POST /dump_expert_distribution_record`` writes
    ``expert_distribution_recorder_<time>[_<rank>].pt`` with ``torch.save``:

    * ``--expert-distribution-recorder-mode stat`` / ``stat_approx``: one file (rank 0) with
      ``logical_count [S, L, E]`` int32 -- the circular buffer of
      ``--expert-distribution-recorder-buffer-size`` forward passes (default: the rebalance
      interval, 1000), already summed over ranks -- plus ``rank`` and
      ``average_utilization_rate_over_window``. Rows never written are all zero and are
      dropped (``meta["dropped_empty_steps"]``). The dump does not record the ring's write
      position: when it wrapped (no empty row), rows are a rotation of time order
      (``meta["ring_order_known"]`` false). A ``[L, E]`` array is one step (as SGLang's
      ``--init-expert-location`` accepts). Several files are successive dumps, concatenated.
    * ``per_pass`` / ``per_token``: one file per rank with ``records`` (per forward pass:
      ``forward_pass_id``, ``rank``, ``global_physical_count [L, P]`` of that rank's tokens;
      ``per_token`` adds ``topk_ids_of_layer``, ``input_ids``, ...) and
      ``last_physical_to_logical_map [L, P]``. Records of the same pass are summed over ranks
      and files; physical counts are mapped to logical experts with the last map (exact unless
      EPLB re-balanced during the recording).

    The JSON form holds the same keys with lists; whole-number floats are accepted.

    Args:
        paths: one file or several (ranks of a per-pass dump, or successive stat dumps).
        num_layers, num_experts: the model's ``L_moe`` / ``E``, checked when given.

    Raises:
        TraceError: naming the file and the field (``logical_count``, ``records[i].
            global_physical_count``, ``last_physical_to_logical_map``).
    """
    files = _paths(paths)
    dicts = [(str(p), _load_dict(p)) for p in files]
    kinds = {
        ("stat" if "logical_count" in d else "records" if "records" in d else "?") for _, d in dicts
    }
    for origin, d in dicts:
        if "logical_count" not in d and "records" not in d:
            raise TraceError(
                origin,
                "logical_count",
                f"missing: neither 'logical_count' (stat) nor 'records' (per_pass): {sorted(d)}",
            )
    if len(kinds) > 1:
        raise TraceError(dicts[0][0], "<file>", "mixes stat and per_pass/per_token dumps")
    if "stat" in kinds:
        return _sglang_stat(dicts, num_layers, num_experts)
    return _sglang_records(dicts, num_layers, num_experts)


def _sglang_stat(
    dicts: list[tuple[str, dict]], num_layers: int | None, num_experts: int | None
) -> EngineLoadStats:
    """``stat`` dumps: rows never written dropped; ``step`` = the row's index in the
    concatenated buffers."""
    parts, steps, dropped, wrapped, offset = [], [], 0, False, 0
    for origin, d in dicts:
        c = whole_counts(d["logical_count"], origin, "logical_count", ndim=(2, 3))
        if c.ndim == 2:  # one [L, E] total, as --init-expert-location accepts
            c = c[None]
        if 0 in c.shape:
            raise TraceError(origin, "logical_count", f"shape {c.shape}: empty")
        _check_shape(origin, "logical_count", c, num_layers, num_experts)
        if parts and c.shape[1:] != parts[0][1].shape[1:]:
            first, shape = parts[0][0], parts[0][1].shape[1:]
            raise TraceError(
                origin,
                "logical_count",
                f"shape {c.shape[1:]} != {shape} of {first} (layer mismatch between dumps)",
            )
        keep = _drop_empty(c)
        dropped += int((~keep).sum())
        wrapped |= bool(keep.all() and c.shape[0] > 1)
        parts.append((origin, c[keep]))
        steps.append(offset + np.flatnonzero(keep))
        offset += c.shape[0]
    counts = np.concatenate([c for _, c in parts])
    if counts.shape[0] == 0:
        raise TraceError(
            dicts[0][0],
            "logical_count",
            f"all {offset} steps count zero tokens: the recorder saw no forward pass (start "
            "it with /start_expert_distribution_record before the requests)",
        )
    return EngineLoadStats(
        counts=counts,
        step=np.concatenate(steps).astype(np.int64),
        engine="sglang",
        mode="stat",
        format_version=SGLANG_FORMAT,
        source=[Path(o).name for o, _ in dicts],
        meta={"dropped_empty_steps": dropped, "ring_order_known": not wrapped, "dumps": len(dicts)},
    )


def _sglang_records(
    dicts: list[tuple[str, dict]], num_layers: int | None, num_experts: int | None
) -> EngineLoadStats:
    mapping, map_origin = None, ""
    by_pass: dict[int, np.ndarray] = {}
    per_token = False
    ranks: set[int] = set()
    for origin, d in dicts:
        if "last_physical_to_logical_map" not in d:
            raise TraceError(
                origin,
                "last_physical_to_logical_map",
                "missing (needed to map physical expert counts to logical experts)",
            )
        m = _map(
            origin, "last_physical_to_logical_map", d["last_physical_to_logical_map"], num_experts
        )
        if mapping is None:
            mapping, map_origin = m, origin
        elif m.shape != mapping.shape:
            raise TraceError(
                origin,
                "last_physical_to_logical_map",
                f"shape {m.shape} != {mapping.shape} of {map_origin} (layer mismatch)",
            )
        records = d["records"]
        if not isinstance(records, list | tuple) or not records:
            raise TraceError(origin, "records", "expected a non-empty list of forward passes")
        for i, rec in enumerate(records):
            name = f"records[{i}].global_physical_count"
            if not isinstance(rec, dict):
                raise TraceError(origin, f"records[{i}]",
                                 f"expected a dict, got {type(rec).__name__}")  # fmt: skip
            if "global_physical_count" not in rec:
                raise TraceError(origin, name, "missing")
            c = whole_counts(rec["global_physical_count"], origin, name, ndim=2)
            if c.shape != mapping.shape:
                raise TraceError(
                    origin, name, f"shape {c.shape} != map {mapping.shape} [L, P] (layer mismatch)"
                )
            per_token |= "topk_ids_of_layer" in rec
            ranks.add(int(rec.get("rank", -1)))
            pid = rec.get("forward_pass_id", i)
            if isinstance(pid, bool) or not isinstance(pid, int | np.integer) or pid < 0:
                raise TraceError(origin, f"records[{i}].forward_pass_id",
                                 f"expected an integer >= 0, got {pid!r}")  # fmt: skip
            pid = int(pid)
            by_pass[pid] = by_pass[pid] + c if pid in by_pass else c
    steps = sorted(by_pass)
    physical = np.stack([by_pass[s] for s in steps])
    e = int(num_experts if num_experts is not None else mapping.max() + 1)
    counts = _to_logical(physical, mapping, e)
    _check_shape(dicts[0][0], "records", counts, num_layers, num_experts)
    keep = _drop_empty(counts)
    if not keep.any():
        raise TraceError(
            dicts[0][0], "records", f"all {len(steps)} forward passes count zero tokens"
        )
    return EngineLoadStats(
        counts=counts[keep],
        step=np.asarray(steps, dtype=np.int64)[keep],
        engine="sglang",
        mode="per_token" if per_token else "per_pass",
        format_version=SGLANG_FORMAT,
        source=[Path(o).name for o, _ in dicts],
        physical_to_logical=mapping,
        physical_counts=physical[keep],
        meta={"ranks": sorted(ranks), "dropped_empty_steps": int((~keep).sum())},
    )


# ----------------------------------------------------------------------------- vLLM


def read_vllm_eplb(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    num_layers: int | None = None,
    num_experts: int | None = None,
) -> EngineLoadStats:
    """Load statistics from vLLM's EPLB state, saved by the user (``.pt``, ``.npz``, ``.json``).

    Format (:data:`VLLM_FORMAT`): vLLM keeps, per model, ``expert_load_pass [L, P]`` (token
    copies each physical expert received in this forward pass, from this rank's tokens),
    a ring buffer ``expert_load_window [W, L, P]`` of the last ``window_size`` passes
    (``--eplb-config.window_size``, default 1000) written at ``expert_load_window_step``,
    and ``physical_to_logical_map [L, P]``. vLLM writes no file of its own (its offline-EPLB
    save/load was proposed in PRs #26176, closed, and #41141, open at the time of writing, in
    formats that are not released); save these attributes of ``EplbState`` (or its per-model
    state) with ``torch.save`` / ``numpy.savez`` / JSON under the same names:

    * ``expert_load_window [W, L, P]``, optionally ``expert_load_window_step`` (the next row
      to write: rows are rolled so the oldest comes first; without it the order is the
      buffer's and ``meta["ring_order_known"]`` is false); all-zero rows (never written) are
      dropped; or
    * ``expert_load_pass`` ``[L, P]`` (one pass) or ``[S, L, P]`` (passes you logged);
    * ``physical_to_logical_map [L, P]``; without it, physical experts are taken as logical
      ones only if ``P == num_experts`` (no redundant experts).

    Older vLLM kept ``expert_load_pass`` per *local* physical expert ``[L, P / EP]``; give
    such a file an ``ep_rank`` entry and its columns are placed at ``ep_rank * P / EP``.
    Several files (one per EP rank) are summed row by row (ranks step in lock-step).

    Raises:
        TraceError: naming the file and the field.
    """
    files = _paths(paths)
    total, mapping, ring_known, origin0 = None, None, True, str(files[0])
    mode = ""
    for path in files:
        origin = str(path)
        d = _load_dict(path)
        if "expert_load_window" in d:
            name, mode = "expert_load_window", "window"
            c = whole_counts(d[name], origin, name, ndim=3)
            if "expert_load_window_step" in d:
                at = whole_counts(
                    d["expert_load_window_step"], origin, "expert_load_window_step", ndim=0
                )
                c = np.roll(c, -int(at) % max(c.shape[0], 1), axis=0)
            else:
                ring_known = False
        elif "expert_load_pass" in d:
            name, mode = "expert_load_pass", "pass"
            c = whole_counts(d[name], origin, name, ndim=(2, 3))
            c = c[None] if c.ndim == 2 else c
        else:
            raise TraceError(
                origin,
                "expert_load_window",
                f"missing: neither 'expert_load_window' nor 'expert_load_pass' in {sorted(d)}",
            )
        m = None
        if "physical_to_logical_map" in d:
            m = _map(origin, "physical_to_logical_map", d["physical_to_logical_map"], num_experts)
            if m.shape[0] != c.shape[1]:
                raise TraceError(
                    origin,
                    "physical_to_logical_map",
                    f"{m.shape[0]} layers != {c.shape[1]} of {name} (layer mismatch)",
                )
            if m.shape[1] != c.shape[2]:
                if "ep_rank" not in d or m.shape[1] % c.shape[2]:
                    raise TraceError(
                        origin,
                        name,
                        f"{c.shape[2]} physical experts != "
                        f"{m.shape[1]} of physical_to_logical_map (a per-rank "
                        f"[L, P/EP] buffer needs an 'ep_rank' entry)",
                    )
                rank = int(whole_counts(d["ep_rank"], origin, "ep_rank", ndim=0))
                full = np.zeros((c.shape[0], c.shape[1], m.shape[1]), dtype=np.int64)
                lo = rank * c.shape[2]
                if lo + c.shape[2] > m.shape[1]:
                    raise TraceError(
                        origin,
                        "ep_rank",
                        f"{rank} outside the map's {m.shape[1] // c.shape[2]} ranks",
                    )
                full[:, :, lo : lo + c.shape[2]] = c
                c = full
            if mapping is None:
                mapping = m
            elif not np.array_equal(m, mapping):
                raise TraceError(
                    origin,
                    "physical_to_logical_map",
                    f"differs from the map of {origin0} (ranks of one recording share one map)",
                )
        if total is None:
            total = c
        elif c.shape != total.shape:
            raise TraceError(
                origin,
                name,
                f"shape {c.shape} != {total.shape} of {origin0} (layer mismatch between ranks)",
            )
        else:
            total = total + c
    if mapping is None:
        if num_experts is None or total.shape[2] != num_experts:
            raise TraceError(
                origin0,
                "physical_to_logical_map",
                f"missing, and the "
                f"{total.shape[2]} physical experts are not the model's "
                f"{num_experts} logical ones",
            )
        mapping = np.broadcast_to(np.arange(num_experts), total.shape[1:]).copy()
    e = int(num_experts if num_experts is not None else mapping.max() + 1)
    counts = _to_logical(total, mapping, e)
    _check_shape(
        origin0,
        "expert_load_window" if mode == "window" else "expert_load_pass",
        counts,
        num_layers,
        num_experts,
    )
    keep = _drop_empty(counts)
    _nonempty(
        origin0, "expert_load_window" if mode == "window" else "expert_load_pass", counts[keep]
    )
    return EngineLoadStats(
        counts=counts[keep],
        step=np.flatnonzero(keep).astype(np.int64),
        engine="vllm",
        mode=mode,
        format_version=VLLM_FORMAT,
        source=[p.name for p in files],
        physical_to_logical=mapping,
        physical_counts=total[keep],
        meta={
            "ring_order_known": ring_known,
            "dropped_empty_steps": int((~keep).sum()),
            "ranks_summed": len(files),
        },
    )


# ----------------------------------------------------------------------------- TensorRT-LLM

_SAFETENSORS_DTYPES = {
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "U8": "u1",
    "I8": "i1",
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
}
_TRT_KEY = re.compile(r"(\d+)_(\d+)")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a ``.safetensors`` file (the published layout: 8-byte little-endian header
    length, a JSON header ``{name: {dtype, shape, data_offsets}}``, then the raw bytes)."""
    origin = str(path)
    try:
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise TraceError(origin, "<header>", f"not a safetensors file: {exc}") from None
    if not isinstance(header, dict):
        raise TraceError(origin, "<header>", "not a safetensors header")
    data, out = raw[8 + n :], {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            begin, end = (int(v) for v in info["data_offsets"])
            shape = tuple(int(v) for v in info["shape"])
            out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceError(origin, name, f"unreadable tensor entry {info!r}: {exc}") from None
    return out


def read_trtllm_statistic(
    folder: str | os.PathLike, *, num_layers: int | None = None, num_experts: int | None = None
) -> EngineLoadStats:
    """Load statistics from TensorRT-LLM's expert statistic folder (:data:`TRTLLM_FORMAT`).

    ``EXPERT_STATISTIC_ITER_RANGE=<start>-<stop>`` and ``EXPERT_STATISTIC_PATH=<folder>`` make
    each rank write ``rank<r>.safetensors`` holding, per iteration and MoE layer, a tensor
    ``"<iter>_<layer>"`` of ``E`` token-copy counts (``torch.bincount`` of that rank's
    ``token_selected_experts``), and rank 0 writes ``meta_info.json`` (``num_experts``,
    ``num_experts_per_token``). Ranks are summed; steps are the iterations, rows the layers
    (``layers`` keeps their numbers). Every (iteration, layer) pair must be present.

    Raises:
        TraceError: naming the file and the field.
    """
    root = Path(folder)
    origin = str(root)
    if not root.is_dir():
        raise TraceError(origin, "<folder>", "no such folder")
    meta_path = root / "meta_info.json"
    if not meta_path.is_file():
        raise TraceError(origin, "meta_info.json", "missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        e = int(meta["num_experts"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TraceError(str(meta_path), "num_experts", f"unreadable: {exc}") from None
    if num_experts is not None and e != num_experts:
        raise TraceError(str(meta_path), "num_experts", f"{e} != the model's {num_experts}")
    ranks = sorted(root.glob("rank*.safetensors"))
    if not ranks:
        raise TraceError(origin, "rank<r>.safetensors", "no rank file")
    total: dict[tuple[int, int], np.ndarray] = {}
    for path in ranks:
        for key, value in _read_safetensors(path).items():
            m = _TRT_KEY.fullmatch(key)
            if not m:
                raise TraceError(str(path), key, "expected a '<iter>_<layer>' tensor name")
            c = whole_counts(value, str(path), key, ndim=1)
            if c.shape != (e,):
                raise TraceError(str(path), key, f"shape {c.shape} != [num_experts={e}]")
            k = (int(m.group(1)), int(m.group(2)))
            total[k] = total[k] + c if k in total else c
    if not total:
        raise TraceError(origin, "rank<r>.safetensors", "empty: no '<iter>_<layer>' tensor")
    iters = sorted({i for i, _ in total})
    layer_ids = sorted({layer for _, layer in total})
    for i in iters:
        for layer in layer_ids:
            if (i, layer) not in total:
                raise TraceError(
                    origin,
                    f"{i}_{layer}",
                    "missing in every rank file (layer mismatch between iterations)",
                )
    counts = np.stack([np.stack([total[(i, layer)] for layer in layer_ids]) for i in iters])
    _check_shape(origin, "<iter>_<layer>", counts, num_layers, num_experts)
    keep = _drop_empty(counts)
    _nonempty(origin, "<iter>_<layer>", counts[keep])
    return EngineLoadStats(
        counts=counts[keep],
        step=np.asarray(iters, dtype=np.int64)[keep],
        engine="trtllm",
        mode="statistic",
        format_version=TRTLLM_FORMAT,
        source=["meta_info.json", *(p.name for p in ranks)],
        layers=layer_ids,
        meta={
            "num_experts_per_token": meta.get("num_experts_per_token"),
            "dropped_empty_steps": int((~keep).sum()),
        },
    )


# ----------------------------------------------------------------------------- moe-gps traces


def stats_from_trace(
    trace: TokenTrace, tokens_per_step: int, source: str = "<memory>"
) -> EngineLoadStats:
    """A token trace cut into steps of ``tokens_per_step`` consecutive tokens (the last partial
    step dropped), counted as an engine's recorder would (``gps.traces.batching.batch_loads``).

    Raises:
        TraceError: fewer tokens than one step.
    """
    from gps.traces.batching import batch_loads

    counts = batch_loads(trace, int(tokens_per_step))
    if counts.shape[0] == 0:
        raise TraceError(
            source,
            "experts",
            f"{trace.num_tokens} tokens: fewer than one step of {tokens_per_step}",
        )
    return EngineLoadStats(
        counts=counts,
        step=np.arange(counts.shape[0], dtype=np.int64),
        engine="gps",
        mode="token_trace",
        format_version="moe-gps TokenTrace (docs/traces.md)",
        source=[Path(source).name],
        meta={"tokens_per_step": int(tokens_per_step), "model": trace.meta.get("model")},
    )


# ----------------------------------------------------------------------------- detection


def detect_format(paths: Sequence[Path]) -> str:
    """``sglang``, ``vllm``, ``trtllm`` or ``gps`` from the first path's content.

    Raises:
        TraceError: nothing recognisable.
    """
    first = paths[0]
    if first.is_dir():
        if (first / "meta_info.json").is_file():
            return "trtllm"
        raise TraceError(
            str(first), "<folder>", "not a TensorRT-LLM statistic folder (no meta_info.json)"
        )
    if first.suffix == ".npz":
        try:
            with np.load(first, allow_pickle=False) as z:
                names = set(z.files)
        except (OSError, ValueError, EOFError) as exc:
            raise TraceError(str(first), "<file>", f"not a readable .npz: {exc}") from None
        if "experts" in names:
            return "gps"
    keys = set(_load_dict(first))
    if keys & {"logical_count", "records"}:
        return "sglang"
    if keys & {"expert_load_window", "expert_load_pass"}:
        return "vllm"
    raise TraceError(
        str(first),
        "<file>",
        f"unknown statistics layout: keys {sorted(keys)} "
        "(SGLang: logical_count / records; vLLM: expert_load_window / "
        "expert_load_pass; or a moe-gps trace .npz)",
    )


def read_engine_stats(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    fmt: str = "auto",
    num_layers: int | None = None,
    num_experts: int | None = None,
    tokens_per_step: int | None = None,
) -> EngineLoadStats:
    """Any supported statistics: ``fmt`` ``auto`` (:func:`detect_format`), ``sglang``,
    ``vllm``, ``trtllm`` or ``gps`` (a moe-gps trace ``.npz`` cut into steps of
    ``tokens_per_step`` tokens).

    Raises:
        TraceError: naming the file and the field; ``ValueError`` for an unknown ``fmt``.
    """
    files = _paths(paths)
    if fmt == "auto":
        fmt = detect_format(files)
    if fmt == "sglang":
        return read_sglang_dump(files, num_layers=num_layers, num_experts=num_experts)
    if fmt == "vllm":
        return read_vllm_eplb(files, num_layers=num_layers, num_experts=num_experts)
    if fmt == "trtllm":
        if len(files) != 1:
            raise TraceError(str(files[0]), "<folder>", "one TensorRT-LLM folder at a time")
        return read_trtllm_statistic(files[0], num_layers=num_layers, num_experts=num_experts)
    if fmt == "gps":
        from gps.traces.io import load_trace

        if tokens_per_step is None:
            raise ValueError("tokens_per_step: needed to cut a token trace into steps")
        trace = load_trace(files[0])
        if num_layers is not None and trace.num_layers != num_layers:
            raise TraceError(
                str(files[0]),
                "experts",
                f"{trace.num_layers} layers, expected {num_layers} (layer mismatch)",
            )
        return stats_from_trace(trace, tokens_per_step, str(files[0]))
    raise ValueError(f"fmt: {fmt!r} not in ('auto', {', '.join(map(repr, ENGINES))})")


# ----------------------------------------------------------------------------- writers


def sglang_stat_dump(counts: np.ndarray, *, rank: int = 0) -> dict:
    """The dict SGLang's ``stat`` recorder dumps for ``counts [S, L, E]`` (int32, as SGLang's
    buffer), ``average_utilization_rate_over_window`` ``None`` (metrics off)."""
    c = np.asarray(counts)
    if c.ndim != 3 or c.dtype.kind not in "iu" or (c.size and c.min() < 0):
        raise ValueError(
            f"counts: expected non-negative integers [S, L, E], got {c.dtype}{c.shape}"
        )
    return {
        "rank": int(rank),
        "logical_count": c.astype(np.int32),
        "average_utilization_rate_over_window": None,
    }


def trace_to_sglang_stat(trace: TokenTrace, tokens_per_step: int) -> dict:
    """A token trace as SGLang's ``stat`` dump: steps of ``tokens_per_step`` consecutive
    tokens (:func:`stats_from_trace`), ``logical_count [S, L, E]``."""
    return sglang_stat_dump(stats_from_trace(trace, tokens_per_step).counts)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def write_sglang_dump(dump: dict, path: str | os.PathLike) -> Path:
    """Write an SGLang recorder dict as ``.pt`` (``torch.save`` layout, no torch needed) or
    ``.json`` (lists), by suffix; written to a temporary name and renamed."""
    from gps.traces.torch_pickle import save_torch_file

    path = Path(path)
    if path.suffix == ".pt":
        return save_torch_file(dump, path)
    if path.suffix != ".json":
        raise ValueError(f"{path}: suffix must be .pt or .json")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(dump)), encoding="utf-8")
    os.replace(tmp, path)
    return path
