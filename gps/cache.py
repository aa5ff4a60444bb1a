"""Content-addressed on-disk cache of the run's hardware-independent work (joblib ``Memory``).

What is cached, and the key each entry is stored under (a hash of exactly these fields, plus
:func:`code_hash`, a hash of every source file of the installed ``gps`` and ``predictors``
packages, so that any code change misses; a hand-picked list of modules once missed
``gps/cost/token_mechanisms.py`` and served results its change should have altered):

========== ===================================================================================
kind       key
========== ===================================================================================
traces     the effective trace config (preset fields with the model's ``L``/``E``/``k``, the
           sequence shape and ``seed`` filled in) or the trace file's SHA-256, the phase,
           ``tokens_per_step``, ``batch_size`` and ``evaluation.train_batches/test_batches``
predictors the trace entry's key, the predictor's name and its resolved params; holds the fitted
           predictor, its held-out prediction (per-batch ``[N, L, E]`` load), accuracy and
           measured fit/predict seconds
whatif     the trace key, the what-if accuracies and ``seed``: ``[A, N, L, E]`` histograms
ilp        the content of the ILP's load and transition arrays, the GPU groups,
           ``strategy.ilp_time_limit_s`` / ``ilp_mip_gap``
capacity   the trace key, the rule (drop/reroute, ``gamma``), the static placement, the split,
           ``gpus_per_node`` and the model: the simulated routing of the held-out batches
========== ===================================================================================

A hardware override leaves these keys unchanged (hit), except the capacity and ILP entries when
the GPU count or node size changes; so do strategy knobs (other than the ILP's and the capacity
factors) and report options. A seed, trace, model-shape or workload-shape change misses. Every
job of a Hydra sweep and every ``gps-tune`` trial of one machine shares ``cache_dir`` (default
``reports/cache``).

Parallel launchers: joblib writes every entry to a uniquely named temporary file and renames it
into place (``os.replace``, atomic on POSIX), so a reader sees a whole entry or none, and a job
killed while writing leaves only a temporary file that is never read back. An entry that fails
to load is recomputed (joblib warns). ``cache=off`` disables the cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import math
import threading
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import joblib

T = TypeVar("T")

DEFAULT_DIR = "reports/cache"

KINDS = ("traces", "predictors", "whatif", "ilp", "capacity")
# The packages whose source decides every cached value: all their files are hashed.
_PACKAGES = ("gps", "predictors")
_SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json")

_lock = threading.Lock()
_memory: joblib.Memory | None = None
stats: Counter = Counter()  # "<kind>:hit" / "<kind>:miss" counts of this process


def source_files() -> list[Path]:
    """Every source file (``.py`` and package data: ``.yaml``/``.yml``/``.json``) of the
    installed ``gps`` and ``predictors`` packages, sorted (caches and bytecode left out)."""
    files = []
    for package in _PACKAGES:
        spec = importlib.util.find_spec(package)  # locates the package without importing it
        root = Path(next(iter(spec.submodule_search_locations))).resolve()
        files += [
            p for p in root.rglob("*")
            if p.suffix in _SOURCE_SUFFIXES and p.is_file() and "__pycache__" not in p.parts
        ]  # fmt: skip
    return sorted(files)


@cache
def code_hash() -> str:
    """SHA-256 (short hex) of the package version and of every file of :func:`source_files`
    (relative path and bytes): a change to any of them changes every cache key. Computed once
    per process (about 1 MB of source)."""
    h = hashlib.sha256(f"moe-gps {_version()}".encode())
    for path in source_files():
        package_root = next(p for p in path.parents if p.name in _PACKAGES)
        h.update(str(path.relative_to(package_root.parent)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _version() -> str:
    try:
        return importlib.metadata.version("moe-gps")
    except importlib.metadata.PackageNotFoundError:  # a source tree on PYTHONPATH
        return "source"


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex): the key of a trace file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def key_hash(key: Any) -> str:
    """joblib's hash of a key (dicts, lists, numbers, strings)."""
    return joblib.hash(key)


def configure(enabled: bool, location: str | Path = DEFAULT_DIR) -> joblib.Memory | None:
    """Turn the process's cache on (at ``location``) or off; returns the ``Memory`` or ``None``."""
    global _memory
    with _lock:
        stats.clear()
        _memory = joblib.Memory(str(location), verbose=0) if enabled else None
        return _memory


def configure_from(cfg: Any) -> joblib.Memory | None:
    """``configure(cfg.cache, cfg.cache_dir)`` for a composed ``gps`` config."""
    return configure(bool(cfg.cache), cfg.cache_dir)


def enabled() -> bool:
    return _memory is not None


# One plain function per kind: joblib stores each kind under its own folder (``gps/cache/<fn>``).
def _traces(key: dict, compute: Callable[[], T]) -> T:
    return compute()


def _predictors(key: dict, compute: Callable[[], T]) -> T:
    return compute()


def _whatif(key: dict, compute: Callable[[], T]) -> T:
    return compute()


def _ilp(key: dict, compute: Callable[[], T]) -> T:
    return compute()


def _capacity(key: dict, compute: Callable[[], T]) -> T:
    return compute()


_FUNCS = {"traces": _traces, "predictors": _predictors, "whatif": _whatif, "ilp": _ilp,
          "capacity": _capacity}  # fmt: skip


def remember(kind: str, key: dict, compute: Callable[[], T]) -> T:
    """``compute()``, or its value stored under ``(kind, key, code_hash())`` when the cache
    is on. ``key`` must hold every input ``compute`` depends on (JSON-like values)."""
    memory = _memory
    if memory is None:
        return compute()
    func = memory.cache(_FUNCS[kind], ignore=["compute"])
    if kind not in KINDS:
        raise ValueError(f"cache kind {kind!r} not in {KINDS}")
    full = {"kind": kind, "code": code_hash(), **key}
    hit = func.check_call_in_cache(full, compute)
    with _lock:  # strategies run in several threads
        stats[f"{kind}:{'hit' if hit else 'miss'}"] += 1
    return func(full, compute)


def summary(location: str | Path = DEFAULT_DIR) -> dict[str, dict[str, int]]:
    """Per kind: ``entries`` (complete ones: ``output.pkl`` present) and ``bytes`` on disk, plus
    ``partial`` (temporary files of writes in flight or of killed jobs; never read)."""
    root = Path(location) / "joblib" / "gps" / "cache"
    out = {}
    for kind in KINDS:
        folder = root / f"_{kind}"
        entries = partial = size = 0
        if folder.is_dir():
            for f in folder.rglob("*"):
                if f.is_file():
                    size += f.stat().st_size
                    entries += f.name == "output.pkl"
                    partial += f.name.startswith("output.pkl.")
        out[kind] = {"entries": entries, "bytes": size, "partial": partial}
    return out


def run_line(location: str | Path = DEFAULT_DIR) -> str:
    """One line for the end of a run: this process's hits per kind and what the cache holds."""
    parts = [
        f"{kind} {stats[kind + ':hit']}/{stats[kind + ':hit'] + stats[kind + ':miss']}"
        for kind in KINDS if stats[kind + ":hit"] + stats[kind + ":miss"]
    ]  # fmt: skip
    held = summary(location).values()
    size = sum(v["bytes"] for v in held) / 1e6
    entries = sum(v["entries"] for v in held)
    return (f"cache hits: {', '.join(parts) or 'none used'}; {location} holds {entries} entries, "
            f"{size:.1f} MB (gps-report --cache)")  # fmt: skip


def parse_size(text: str) -> int:
    """``"500M"``, ``"2G"``, ``"1.5G"``, ``"800K"`` or plain bytes -> bytes (powers of 1000)."""
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    t = str(text).strip().upper().removesuffix("B")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"cache size {text!r}: expected bytes or a number with K, M, G or T")
    return int(value)


def trim(location: str | Path, bytes_limit: int) -> None:
    """Delete the least recently used entries until the cache holds at most ``bytes_limit``
    bytes (joblib's ``Memory.reduce_size``, which ranks entries by access time: on a file
    system mounted ``noatime`` that is their write time). A deleted entry is recomputed when
    next needed."""
    joblib.Memory(str(location), verbose=0).reduce_size(bytes_limit=int(bytes_limit))


def describe(location: str | Path = DEFAULT_DIR) -> str:
    """Human-readable ``summary`` (what ``gps-report --cache`` prints)."""
    s = summary(location)
    total = sum(v["bytes"] for v in s.values())
    lines = [f"cache: {location} ({total / 1e6:.1f} MB)"]
    for kind, v in s.items():
        extra = f", {v['partial']} partial (ignored)" if v["partial"] else ""
        lines.append(f"  {kind:<10} {v['entries']:>5} entries {v['bytes'] / 1e6:>9.1f} MB{extra}")
    return "\n".join(lines)
