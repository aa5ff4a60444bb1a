"""Read a ``torch.save`` file into numpy without torch, and without running arbitrary pickles.

``torch.save`` writes a zip archive: ``<name>/data.pkl`` (a pickle whose tensors refer to
storages by persistent id ``("storage", <StorageType>, key, location, numel)``),
``<name>/data/<key>`` (each storage's raw little-endian bytes) and ``<name>/byteorder``.
Tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)``. This reader's unpickler resolves only those names, the storage types, and the
containers (``dict``, ``OrderedDict``); any other global is refused, so a hostile file
cannot run code. Tensors come back as numpy arrays (a copy, C order).
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
