"""Save and load traces as ``.npz`` archives; loading validates and memory-maps when it can.

One file per trace: a zip archive of ``.npy`` members (the layout ``np.savez`` writes, so
``np.load`` reads it too) with three header members, ``kind`` (``"token_trace"`` or
``"load_series"``), ``format_version`` and ``meta`` (a JSON string), plus

- token trace: ``experts [T,L,k]`` int16, ``token_id``/``sequence_id``/``position [T]`` int32,
  ``num_experts`` (0-d int64), optional ``scores [T,L,k]`` float16, ``domain [T]`` int16 and
  ``hidden [T,H,d]`` float16/float32 with ``hidden_layers [H]`` int16 (router-input activations);
- load series: ``counts [S,L,E]`` (integer dtype), ``step [S]`` int64.

``compress=True`` deflates every member (zlib level 1: ~2.5x smaller for routing data),
read back by streaming each member into one preallocated array (no second copy).
``compress=False`` stores members uncompressed and pads each one (zip extra field 0xD935, as
Android's zipalign does) so that its array data starts on a 64-byte boundary;
:func:`load_trace` then memory-maps the arrays read-only straight out of the archive. The
default (``None``) compresses traces whose arrays total at most ``AUTO_COMPRESS_BYTES`` and
stores larger ones, because inflating is what makes large loads slow (~200-400 MB/s).
See ``docs/traces.md`` for the trade-off and measured load times.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gps.traces.trace import LoadSeries, TokenTrace
from gps.traces.validate import TraceError, validate_load_series, validate_token_trace

FORMAT_VERSION = 1
AUTO_COMPRESS_BYTES = 256 * 2**20  # compress=None: deflate only traces up to this size
_COMPRESS_LEVEL = 1  # zlib level: measured 2-4x faster than the default 6, ~5-15 % larger
_TOKEN_REQUIRED = ("experts", "token_id", "sequence_id", "position", "num_experts")
_TOKEN_OPTIONAL = ("scores", "domain", "hidden", "hidden_layers")
_SERIES_REQUIRED = ("counts", "step")
_ALIGN = 64  # bytes; numpy pads .npy headers to this boundary too
_PAD_EXTRA_ID = 0xD935  # zip extra-field id used for alignment padding (Android zipalign)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length (30 bytes)
_ZIP64_EXTRA_BYTES = 20  # the zip64 extra field zipfile adds with force_zip64=True
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _arrays_of(trace: TokenTrace | LoadSeries) -> dict[str, np.ndarray]:
    """Archive members (name -> array) for ``trace``, header members included."""
    if isinstance(trace, TokenTrace):
        kind = "token_trace"
        arrays = {
            "experts": trace.experts,
            "token_id": trace.token_id,
            "sequence_id": trace.sequence_id,
            "position": trace.position,
            "num_experts": np.asarray(trace.num_experts, dtype=np.int64),
        }
        if trace.scores is not None:
            arrays["scores"] = trace.scores
        if trace.domain is not None:
            arrays["domain"] = trace.domain
        if trace.hidden is not None:
            arrays["hidden"] = trace.hidden
            arrays["hidden_layers"] = trace.hidden_layers
    else:
        kind = "load_series"
        arrays = {"counts": trace.counts, "step": trace.step}
    header = {
        "kind": np.asarray(kind),
        "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64),
        "meta": np.asarray(json.dumps(trace.meta, sort_keys=True)),
    }
    return header | arrays


def _stored_info(name: str, offset: int) -> zipfile.ZipInfo:
    """Uncompressed zip entry for ``name`` at ``offset``, padded so its data is 64-byte aligned.

    numpy pads the ``.npy`` header to a multiple of 64 bytes, so aligning the start of the
    member's data (after the 30-byte local header, the name and the extra fields) aligns the
    array itself.
    """
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    used = offset + _LOCAL_HEADER.size + len(name.encode()) + _ZIP64_EXTRA_BYTES + 4
    pad = -used % _ALIGN
    info.extra = struct.pack("<HH", _PAD_EXTRA_ID, pad) + bytes(pad)
    return info


def save_trace(
    path: str | os.PathLike, trace: TokenTrace | LoadSeries, *, compress: bool | None = None
) -> Path:
    """Validate ``trace`` and write it to ``path`` (``.npz``) atomically; return the path.

    Args:
        path: destination file; replaced if it exists (written to ``<path>.tmp`` first).
        trace: a :class:`TokenTrace` or :class:`LoadSeries`.
        compress: deflate the members (small file), store them 64-byte aligned so that
            :func:`load_trace` memory-maps them (fast load of large traces), or ``None``:
            deflate if the arrays total at most ``AUTO_COMPRESS_BYTES``.

    Raises:
        TraceError: if ``trace`` is invalid (origin ``path``) or not a trace.
    """
    path = Path(path)
    if isinstance(trace, TokenTrace):
        validate_token_trace(trace, origin=str(path))
    elif isinstance(trace, LoadSeries):
        validate_load_series(trace, origin=str(path))
    else:
        raise TraceError(str(path), "<trace>", f"cannot save {type(trace).__name__}")
    arrays = _arrays_of(trace)
    if compress is None:
        compress = sum(a.nbytes for a in arrays.values()) <= AUTO_COMPRESS_BYTES
    tmp = path.with_name(path.name + ".tmp")
    try:
        with zipfile.ZipFile(
            tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True, compresslevel=_COMPRESS_LEVEL
        ) as zf:
            for name, array in arrays.items():
                entry = f"{name}.npy" if compress else _stored_info(f"{name}.npy", zf.fp.tell())
                with zf.open(entry, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _memmap_member(path: Path, raw: BinaryIO, info: zipfile.ZipInfo, field: str) -> np.ndarray:
    """Read-only memory map of a stored (uncompressed) ``.npy`` member of the archive."""
    raw.seek(info.header_offset)
    signature, name_len, extra_len = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
    if signature != b"PK\x03\x04":
        raise TraceError(str(path), field, "corrupt zip local header")
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    raw.seek(start)
    shape, fortran, dtype = _read_header(raw)
    offset = raw.tell()
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset + nbytes > start + info.file_size:
        raise TraceError(str(path), field, "member shorter than its .npy header says")
    if nbytes == 0:
        return np.empty(shape, dtype=dtype)
    order = "F" if fortran else "C"
    mapped = np.memmap(path, dtype=dtype, mode="r", shape=shape, order=order, offset=offset)
    return mapped.view(np.ndarray)


def _read_header(fp: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` header at ``fp``'s position.

    Call it on one thread only: the header parser (``ast.literal_eval``) is not safe to run
    in several threads at once on CPython 3.11 (``SystemError: AST constructor recursion
    depth mismatch``, seen here), so worker threads only inflate data.

    Raises:
        ValueError: a bad header, an unsupported format version, or an object dtype (pickles
            are refused).
    """
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f".npy format version {version} is not supported (1.0 or 2.0)")
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed (they would need pickle)")
    return shape, fortran, dtype


def _fill(member: BinaryIO, array: np.ndarray) -> np.ndarray:
    """Stream the member's data into ``array`` in 256 KiB pieces (no second copy)."""
    flat = array.reshape(-1, order="A").view(np.uint8)
    done, size = 0, flat.size
    while done < size:
        got = member.readinto(flat[done : done + (1 << 18)])
        if not got:
            raise EOFError(f"reading array data, expected {size} bytes got {done}")
        done += got
    return array


def _read_members(path: Path, mmap: bool) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of the archive at ``path`` (name without suffix -> array).

    Stored members are memory-mapped (if ``mmap``); deflated ones are inflated in parallel
    threads (zlib releases the GIL), each streamed into its own preallocated array.
    """
    origin = str(path)
    if not path.is_file():
        raise TraceError(origin, "<file>", "no such file")
    try:
        zf = zipfile.ZipFile(path)
    except _READ_ERRORS as exc:
        raise TraceError(origin, "<file>", f"not a .npz (zip) archive: {exc}") from None
    arrays: dict[str, np.ndarray] = {}
    with ExitStack() as stack:
        stack.enter_context(zf)
        raw = stack.enter_context(open(path, "rb"))
        members = stack.enter_context(ExitStack())  # closed after the pool has finished
        pool = stack.enter_context(ThreadPoolExecutor(os.cpu_count() or 1))
        pending = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise TraceError(origin, info.filename, "unexpected member (not .npy)")
            field = info.filename[: -len(".npy")]
            try:
                if mmap and info.compress_type == zipfile.ZIP_STORED:
                    arrays[field] = _memmap_member(path, raw, info, field)
                else:
                    member = members.enter_context(zf.open(info))  # opened here: not thread-safe
                    shape, fortran, dtype = _read_header(member)  # here: see _read_header
                    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
                    pending[field] = pool.submit(_fill, member, array)
            except _READ_ERRORS as exc:
                raise TraceError(origin, field, f"unreadable: {exc}") from None
        for field, future in pending.items():
            try:
                arrays[field] = future.result()
            except _READ_ERRORS as exc:
                raise TraceError(origin, field, f"unreadable: {exc}") from None
    return arrays


def _scalar(arrays: dict[str, np.ndarray], origin: str, field: str, kind: str) -> object:
    """0-d member ``field`` as a Python value; ``kind`` is ``"U"`` (text) or ``"i"`` (int)."""
    if field not in arrays:
        raise TraceError(origin, field, "missing")
    value = arrays.pop(field)
    if value.ndim != 0 or value.dtype.kind != kind:
        want = "text" if kind == "U" else "integer"
        raise TraceError(origin, field, f"expected a 0-d {want}, got {value.dtype}{value.shape}")
    return value.item()


def load_trace(path: str | os.PathLike, *, mmap: bool = True) -> TokenTrace | LoadSeries:
    """Load and validate a trace written by :func:`save_trace`.

    Members stored uncompressed are memory-mapped read-only when ``mmap`` (no read at load
    time beyond the validation scan); deflated members are streamed into one array each.

    Raises:
        TraceError: naming ``path`` and the field at fault (missing, unknown, unreadable,
            wrong dtype/shape/range, newer format version).
    """
    path = Path(path)
    origin = str(path)
    arrays = _read_members(path, mmap)
    kind = _scalar(arrays, origin, "kind", "U")
    version = _scalar(arrays, origin, "format_version", "i")
    if not 1 <= version <= FORMAT_VERSION:
        raise TraceError(origin, "format_version", f"{version} not in [1, {FORMAT_VERSION}]")
    try:
        meta = json.loads(_scalar(arrays, origin, "meta", "U"))
    except json.JSONDecodeError as exc:
        raise TraceError(origin, "meta", f"invalid JSON: {exc}") from None
    if kind == "token_trace":
        required, optional = _TOKEN_REQUIRED, _TOKEN_OPTIONAL
    elif kind == "load_series":
        required, optional = _SERIES_REQUIRED, ()
    else:
        raise TraceError(origin, "kind", f"{kind!r} is not 'token_trace' or 'load_series'")
    for field in arrays:
        if field not in required and field not in optional:
            raise TraceError(origin, field, f"unknown field for a {kind}")
    for field in required:
        if field not in arrays:
            raise TraceError(origin, field, f"missing (required for a {kind})")
    if kind == "load_series":
        series = LoadSeries(counts=arrays["counts"], step=arrays["step"], meta=meta)
        return validate_load_series(series, origin)
    num_experts = _scalar(arrays, origin, "num_experts", "i")
    trace = TokenTrace(num_experts=num_experts, meta=meta, **arrays)
    return validate_token_trace(trace, origin)
