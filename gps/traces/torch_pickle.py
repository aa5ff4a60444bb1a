"""Read a ``torch.save`` file into numpy without torch, and without running arbitrary pickles.

``torch.save`` writes a zip archive: ``<name>/data.pkl`` (a pickle whose tensors refer to
storages by persistent id ``("storage", <StorageType>, key, location, numel)``),
``<name>/data/<key>`` (each storage's raw little-endian bytes) and ``<name>/byteorder``.
Tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)``. This reader's unpickler resolves only those names, the storage types, and the
containers (``dict``, ``OrderedDict``); any other global is refused, so a hostile file
cannot run code. Tensors come back as numpy arrays (a copy, C order).

:func:`save_torch_file` writes the same layout from numpy arrays and plain containers (no
torch needed), so tests and converters can produce files an engine's ``torch.load`` reads.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gps.traces.validate import TraceError

# torch storage class -> numpy dtype (torch/storage.py: the typed storages).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any):
    """numpy view of ``storage`` (1-D) with torch's element ``offset``/``size``/``stride``."""
    if not size:
        return storage[offset].copy()
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    )
    return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in ("int32", "int64", "float32", "float16", "bfloat16"):
            return name
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"))
        return self._storages[key]


def load_torch_file(path: str | os.PathLike) -> Any:
    """The object a ``torch.save(obj, path)`` call wrote, tensors as numpy arrays.

    Raises:
        TraceError: (a ``ValueError``) naming the file and the member: not a zip-format torch
            file, big-endian data, or a pickle that names anything other than tensors,
            storages and plain containers.
    """
    path = Path(path)
    origin = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise TraceError(origin, "<file>", f"not a torch.save zip archive: {exc}") from None
    with archive:
        names = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(names) != 1:
            raise TraceError(origin, "data.pkl", f"expected one, found {len(names)}")
        prefix = names[0][: -len("data.pkl")]
        order = f"{prefix}byteorder"
        if order in archive.namelist() and archive.read(order).strip() != b"little":
            raise TraceError(origin, "byteorder", "only little-endian files are supported")
        try:
            return _Unpickler(archive.read(names[0]), archive, prefix).load()
        except (pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError,
                IndexError, AttributeError) as exc:  # fmt: skip
            raise TraceError(origin, "data.pkl", str(exc)) from None


_DTYPE_STORAGES = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items()}


class _Global:
    """A ``module.name`` global written by reference (the writer needs no torch module)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # pickle's save_reduce wants a callable
        raise TypeError(f"{self.module}.{self.name} is a name to pickle, not to call")


class _Call:
    """``func(*args)`` at load time (``func`` a :class:`_Global`)."""

    def __init__(self, func: _Global, args: tuple) -> None:
        self.func, self.args = func, args


class _Storage:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array


class _Writer(pickle._Pickler):  # the pure-Python pickler: its type dispatch is extensible
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=2)  # torch.save's default pickle protocol
        self.storages: list[_Storage] = []

    def _save_global_ref(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[_Global] = _save_global_ref

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            storage = _Global("torch", _DTYPE_STORAGES[obj.array.dtype])
            return ("storage", storage, obj.key, "cpu", int(obj.array.size))
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            a = np.ascontiguousarray(obj)
            if a.dtype not in _DTYPE_STORAGES:
                raise ValueError(f"dtype {a.dtype} has no torch storage type")
            storage = _Storage(str(len(self.storages)), a.ravel())
            self.storages.append(storage)
            stride = tuple(s // a.itemsize for s in a.strides) if a.size else (1,) * a.ndim
            hooks = _Call(_Global("collections", "OrderedDict"), ())  # empty backward hooks
            args = (storage, 0, tuple(a.shape), stride, False, hooks)
            return _Global("torch._utils", "_rebuild_tensor_v2"), args
        if isinstance(obj, _Call):
            return obj.func, obj.args
        return NotImplemented


def _plain(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers, containers rebuilt (dict keys kept)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_plain(v) for v in obj)
    return obj


def save_torch_file(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` (dicts, lists, tuples, numbers, strings, ``None`` and numpy arrays of the
    storage dtypes) as ``torch.save(obj, path)`` would with tensors in place of the arrays:
    a zip of ``archive/data.pkl`` (pickle protocol 2, tensors rebuilt by
    ``torch._utils._rebuild_tensor_v2``), ``archive/data/<key>`` raw little-endian storages,
    ``archive/byteorder`` and ``archive/version``. :func:`load_torch_file` reads it back.

    The file is written to a temporary name and renamed, never left half-written.

    Raises:
        ValueError: an array whose dtype has no torch storage type.
    """
    path = Path(path)
    buffer = io.BytesIO()
    writer = _Writer(buffer)
    writer.dump(_plain(obj))
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("archive/data.pkl", buffer.getvalue())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        for s in writer.storages:
            little = s.array.astype(s.array.dtype.newbyteorder("<"))
            zf.writestr(f"archive/data/{s.key}", little.tobytes())
    os.replace(tmp, path)
    return path
