"""Load and validate hardware profiles (``hardware_profiles/``) and compose clusters.

Every number in a profile is written ``{value, unit, source}``; the loader converts it to SI
(FLOP/s, bytes/s, bytes, seconds) and rejects unknown units, units of the wrong dimension
(``hbm_bandwidth`` in ``GB``), non-positive values, unknown and missing fields. Errors are
``ProfileError`` and name the file and the dotted field path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gps.hardware import Cluster, GPUProfile, LinkProfile

# unit -> (dimension, factor to SI)
UNITS: dict[str, tuple[str, float]] = {
    "FLOP/s": ("flop_rate", 1.0),
    "GFLOP/s": ("flop_rate", 1e9),
    "TFLOP/s": ("flop_rate", 1e12),
    "PFLOP/s": ("flop_rate", 1e15),
    "B/s": ("bandwidth", 1.0),
    "MB/s": ("bandwidth", 1e6),
    "GB/s": ("bandwidth", 1e9),
    "TB/s": ("bandwidth", 1e12),
    "Gb/s": ("bandwidth", 1e9 / 8),  # bit rates: network links are quoted in bits
    "Tb/s": ("bandwidth", 1e12 / 8),
    "B": ("capacity", 1.0),
    "MB": ("capacity", 1e6),
    "GB": ("capacity", 1e9),
    "TB": ("capacity", 1e12),
    "MiB": ("capacity", 2.0**20),
    "GiB": ("capacity", 2.0**30),
    "s": ("time", 1.0),
    "ms": ("time", 1e-3),
    "us": ("time", 1e-6),
    "ns": ("time", 1e-9),
    "count": ("count", 1.0),
}

GPU_FIELDS = {
    "name": "str",
    "source": "str",
    "peak_flops": "flop_rate_map",
    "hbm_bandwidth": "bandwidth",
    "hbm_capacity": "capacity",
    "sm_count": "count",
    "launch_overhead": "time",
    "efficiency": "efficiency_map",
}
GPU_OPTIONAL = {
    "measured",
    "roofline_knee",
    "gemm_k_knee",
    "eager_launch_overhead",
    "attention_efficiency",
    "fp8_gemm",
}
LINK_FIELDS = {
    "name": "str",
    "source": "str",
    "bandwidth": "bandwidth",
    "latency": "time",
    "ports_per_gpu": "count",
    "efficiency": "fraction",
}
LINK_OPTIONAL = {"hop_latency"}
MEASURED_REQUIRED = ("device", "date", "method", "compute_efficiency", "memory_efficiency")
MEASURED_OPTIONAL = ("launch_overhead_us", "knee_exponent", "gemm_k_knee", "eager_launch_us")


class ProfileError(ValueError):
    """A profile or cluster config is invalid; the message names the file and the field."""

    def __init__(self, origin: str | Path, field: str, problem: str) -> None:
        super().__init__(f"{origin}: field '{field}': {problem}")
        self.origin, self.field, self.problem = str(origin), field, problem


@dataclass
class ClusterConfig:
    """A cluster composed from profiles (``conf/hardware/*.yaml``; Hydra structured config).

    Attributes:
        name: cluster name, e.g. ``h100_2node_ib``.
        gpu: GPU profile stem in ``<profiles_dir>/gpu/`` or a path to a YAML.
        intra_node_link: link profile stem in ``<profiles_dir>/link/`` or a path.
        inter_node_link: link between nodes; ``None`` only when ``num_nodes == 1``.
        num_nodes: nodes (>= 1).
        gpus_per_node: GPUs per node (>= 1).
        profiles_dir: where profiles live; ``None`` = ``default_profiles_dir()``.
        host_link: each GPU's link to host memory (a PCIe link profile), used to price
            replica copies from host memory (``strategy.migration_source=host``); ``None``:
            not described.
    """

    name: str = "???"
    gpu: str = "???"
    intra_node_link: str = "???"
    inter_node_link: str | None = None
    num_nodes: int = 1
    gpus_per_node: int = 8
    profiles_dir: str | None = None
    host_link: str | None = None


def default_profiles_dir() -> Path:
    """``$GPS_PROFILES_DIR`` if set, else the repository's ``hardware_profiles/``."""
    env = os.environ.get("GPS_PROFILES_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "hardware_profiles"


def list_profiles(profiles_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Profile stems by kind: ``{"gpu": [...], "link": [...]}``."""
    root = Path(profiles_dir) if profiles_dir else default_profiles_dir()
    return {kind: sorted(p.stem for p in (root / kind).glob("*.yaml")) for kind in ("gpu", "link")}


def resolve_profile(
    kind: str, name_or_path: str | Path, profiles_dir: str | Path | None = None
) -> Path:
    """Path of a ``kind`` (``gpu``/``link``) profile given by stem or path; ``ProfileError``
    listing the known stems when there is none."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    root = Path(profiles_dir) if profiles_dir else default_profiles_dir()
    candidate = root / kind / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = list_profiles(root)[kind]
    raise ProfileError(root / kind, kind, f"unknown profile {str(name_or_path)!r}; known: {known}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(path, "<file>", f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(path, "<file>", "expected a mapping at the top level")
    return data


def _check_keys(data: Mapping, required: set[str], optional: set[str], origin: Path, at: str):
    prefix = f"{at}." if at else ""
    unknown = sorted(set(data) - required - optional)
    if unknown:
        expected = sorted(required | optional)
        raise ProfileError(origin, prefix + unknown[0], f"unknown field; expected {expected}")
    missing = sorted(required - set(data))
    if missing:
        raise ProfileError(origin, prefix + missing[0], "missing field")


def _number(value: Any, origin: Path, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(origin, field, f"expected a number, got {value!r}")
    return float(value)


def quantity(entry: Any, dimension: str, origin: Path, field: str) -> float:
    """Convert ``{value, unit, source}`` to SI; check the unit's dimension and ``value > 0``."""
    if not isinstance(entry, Mapping):
        raise ProfileError(origin, field, f"expected {{value, unit, source}}, got {entry!r}")
    _check_keys(entry, {"value", "unit", "source"}, set(), origin, field)
    value = _number(entry["value"], origin, f"{field}.value")
    unit = entry["unit"]
    if unit not in UNITS:
        raise ProfileError(origin, f"{field}.unit", f"unknown unit {unit!r}; known: {list(UNITS)}")
    dim, factor = UNITS[unit]
    if dim != dimension:
        raise ProfileError(
            origin, f"{field}.unit", f"unit {unit!r} is a {dim}, this field needs a {dimension}"
        )
    if value <= 0:
        raise ProfileError(origin, f"{field}.value", f"must be > 0, got {value}")
    return value * factor


def _fraction(value: Any, origin: Path, field: str) -> float:
    x = _number(value, origin, field)
    if not 0.0 < x <= 1.0:
        raise ProfileError(origin, field, f"must be in (0, 1], got {x}")
    return x


def _sourced_fraction(entry: Any, origin: Path, field: str) -> float:
    if not isinstance(entry, Mapping):
        raise ProfileError(origin, field, f"expected {{value, source}}, got {entry!r}")
    _check_keys(entry, {"value", "source"}, set(), origin, field)
    return _fraction(entry["value"], origin, f"{field}.value")


def _string(value: Any, origin: Path, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(origin, field, f"expected a non-empty string, got {value!r}")
    return value


# Optional ``measured`` numbers: (key, lower limit, limit excluded).
_OPTIONAL_MEASURED = (
    ("launch_overhead_us", 0.0, True),
    ("knee_exponent", 1.0, False),
    ("eager_launch_us", 0.0, True),
    ("gemm_k_knee", 0.0, False),
)


def validate_measured(measured: Any, origin: Path | str) -> dict[str, Any]:
    """Check a calibration's ``measured:`` block; return it with numbers as floats."""
    origin = Path(origin)
    if not isinstance(measured, Mapping):
        raise ProfileError(origin, "measured", f"expected a mapping, got {measured!r}")
    _check_keys(measured, set(MEASURED_REQUIRED), set(MEASURED_OPTIONAL), origin, "measured")
    out: dict[str, Any] = {}
    for key in ("device", "method"):
        out[key] = _string(measured[key], origin, f"measured.{key}")
    date = str(measured["date"])
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise ProfileError(origin, "measured.date", f"expected YYYY-MM-DD, got {date!r}")
    out["date"] = date
    for key in ("compute_efficiency", "memory_efficiency"):
        out[key] = _fraction(measured[key], origin, f"measured.{key}")
    for key, low, strict in _OPTIONAL_MEASURED:
        if key not in measured:
            continue
        x = _number(measured[key], origin, f"measured.{key}")
        if x < low or (strict and x == low):
            sign = ">" if strict else ">="
            raise ProfileError(origin, f"measured.{key}", f"must be {sign} {low:g}, got {x}")
        out[key] = x
    return out


def _sourced_number(entry: Any, origin: Path, field: str, low: float) -> float:
    """``field: {value, source}``: a number ``>= low`` with its source (``roofline_knee``: a
    p-norm exponent >= 1; ``gemm_k_knee``: elements of ``K``, >= 0)."""
    if not isinstance(entry, Mapping):
        raise ProfileError(origin, field, f"expected {{value, source}}, got {entry!r}")
    _check_keys(entry, {"value", "source"}, set(), origin, field)
    _string(entry["source"], origin, f"{field}.source")
    return _at_least(_number(entry["value"], origin, f"{field}.value"), low, origin,
                     f"{field}.value")  # fmt: skip


def _at_least(x: float, low: float, origin: Path, field: str) -> float:
    """``x`` unless it is below ``low``: then a ``ProfileError`` naming ``field``."""
    if x < low:
        raise ProfileError(origin, field, f"must be >= {low:g}, got {x}")
    return x


def _fp8_gemm(entry: Any, origin: Path) -> tuple[float, float]:
    """``fp8_gemm: {compute, k_knee, source}``: ``c`` in (0, 1] and ``k0 >= 0`` of FP8 GEMMs."""
    if not isinstance(entry, Mapping):
        raise ProfileError(
            origin, "fp8_gemm", f"expected {{compute, k_knee, source}}, got {entry!r}"
        )
    _check_keys(entry, {"compute", "k_knee", "source"}, set(), origin, "fp8_gemm")
    _string(entry["source"], origin, "fp8_gemm.source")
    c = _fraction(entry["compute"], origin, "fp8_gemm.compute")
    return c, _at_least(_number(entry["k_knee"], origin, "fp8_gemm.k_knee"), 0, origin,
                        "fp8_gemm.k_knee")  # fmt: skip


def load_gpu(name_or_path: str | Path, profiles_dir: str | Path | None = None) -> GPUProfile:
    """Load a GPU profile by stem (``h100_sxm5_80gb``) or path; ``measured:`` overrides
    the assumed efficiencies (and launch overhead) when present."""
    path = resolve_profile("gpu", name_or_path, profiles_dir)
    data = _read_yaml(path)
    _check_keys(data, set(GPU_FIELDS), GPU_OPTIONAL, path, "")
    peaks = data["peak_flops"]
    if not isinstance(peaks, Mapping) or not peaks:
        raise ProfileError(path, "peak_flops", "expected a non-empty mapping dtype -> quantity")
    peak_flops = {
        str(dt): quantity(q, "flop_rate", path, f"peak_flops.{dt}") for dt, q in peaks.items()
    }
    eff = data["efficiency"]
    if not isinstance(eff, Mapping):
        raise ProfileError(path, "efficiency", "expected {compute: ..., memory: ...}")
    _check_keys(eff, {"compute", "memory"}, set(), path, "efficiency")
    compute = _sourced_fraction(eff["compute"], path, "efficiency.compute")
    memory = _sourced_fraction(eff["memory"], path, "efficiency.memory")
    launch = quantity(data["launch_overhead"], "time", path, "launch_overhead")
    eff_source = f"assumption ({path.name}: efficiency)"
    knee, k0 = (
        0.0 if data.get(f) is None else _sourced_number(data[f], path, f, low)
        for f, low in (("roofline_knee", 1), ("gemm_k_knee", 0))
    )
    att = data.get("attention_efficiency")
    att = 0.0 if att is None else _sourced_fraction(att, path, "attention_efficiency")
    eager = data.get("eager_launch_overhead")
    eager = 0.0 if eager is None else quantity(eager, "time", path, "eager_launch_overhead")
    fp8 = (0.0, 0.0) if data.get("fp8_gemm") is None else _fp8_gemm(data["fp8_gemm"], path)
    if data.get("measured") is not None:
        m = validate_measured(data["measured"], path)
        compute, memory = m["compute_efficiency"], m["memory_efficiency"]
        launch = m.get("launch_overhead_us", launch * 1e6) * 1e-6
        knee = m.get("knee_exponent", knee)
        k0 = m.get("gemm_k_knee", k0)
        eager = m.get("eager_launch_us", eager * 1e6) * 1e-6
        eff_source = f"measured: {m['device']} {m['date']} ({m['method']})"
    sm = quantity(data["sm_count"], "count", path, "sm_count")
    if sm != int(sm):
        raise ProfileError(path, "sm_count.value", f"must be an integer, got {sm}")
    return GPUProfile(
        name=_string(data["name"], path, "name"),
        peak_flops=peak_flops,
        hbm_bandwidth=quantity(data["hbm_bandwidth"], "bandwidth", path, "hbm_bandwidth"),
        hbm_capacity=quantity(data["hbm_capacity"], "capacity", path, "hbm_capacity"),
        sm_count=int(sm),
        launch_overhead_s=launch,
        compute_efficiency=compute,
        memory_efficiency=memory,
        efficiency_source=eff_source,
        source=_string(data["source"], path, "source"),
        roofline_knee=knee,
        gemm_k_knee=k0,
        eager_launch_overhead_s=eager,
        attention_efficiency=att,
        fp8_compute_efficiency=fp8[0],
        fp8_gemm_k_knee=fp8[1],
    )


def load_link(name_or_path: str | Path, profiles_dir: str | Path | None = None) -> LinkProfile:
    """Load a link profile by stem (``nvlink4``, ``ib_ndr``) or path."""
    path = resolve_profile("link", name_or_path, profiles_dir)
    data = _read_yaml(path)
    _check_keys(data, set(LINK_FIELDS), LINK_OPTIONAL, path, "")
    hop = data.get("hop_latency")
    return LinkProfile(
        name=_string(data["name"], path, "name"),
        bandwidth=quantity(data["bandwidth"], "bandwidth", path, "bandwidth"),
        latency_s=quantity(data["latency"], "time", path, "latency"),
        ports_per_gpu=quantity(data["ports_per_gpu"], "count", path, "ports_per_gpu"),
        efficiency=_sourced_fraction(data["efficiency"], path, "efficiency"),
        source=_string(data["source"], path, "source"),
        hop_latency_s=0.0 if hop is None else quantity(hop, "time", path, "hop_latency"),
    )


def load_cluster(
    cfg: ClusterConfig | Mapping[str, Any], origin: str = "hardware config"
) -> Cluster:
    """Compose a ``Cluster`` from a ``ClusterConfig`` (or a mapping with the same keys)."""
    fields = set(ClusterConfig.__dataclass_fields__)
    if isinstance(cfg, ClusterConfig):
        data = dict(cfg.__dict__)
    else:
        data = {k: cfg[k] for k in cfg}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ProfileError(origin, unknown[0], f"unknown field; expected {sorted(fields)}")
    data = {**ClusterConfig().__dict__, **data}
    for key in ("num_nodes", "gpus_per_node"):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ProfileError(origin, key, f"expected an integer >= 1, got {value!r}")
    for key in ("name", "gpu", "intra_node_link"):
        if data[key] in (None, "???"):
            raise ProfileError(origin, key, "missing field")
    if data["num_nodes"] > 1 and not data["inter_node_link"]:
        raise ProfileError(
            origin, "inter_node_link", f"num_nodes={data['num_nodes']} needs an inter-node link"
        )
    root = data["profiles_dir"]
    inter, host = data["inter_node_link"], data["host_link"]
    return Cluster(
        name=str(data["name"]),
        gpu=load_gpu(data["gpu"], root),
        intra_link=load_link(data["intra_node_link"], root),
        inter_link=load_link(inter, root) if inter else None,
        num_nodes=data["num_nodes"],
        gpus_per_node=data["gpus_per_node"],
        host_link=load_link(host, root) if host else None,
    )


def load_cluster_config(name_or_path: str | Path) -> Cluster:
    """Load ``conf/hardware/<name>.yaml`` (or a path) outside Hydra and compose the cluster."""
    path = Path(name_or_path)
    if not path.exists():
        path = Path(__file__).resolve().parent.parent / "conf" / "hardware" / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ProfileError(path, "hardware", f"unknown cluster {name_or_path!s}; known: {known}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ProfileError(path, "<file>", "expected a mapping at the top level")
    return load_cluster(data, origin=str(path))


def write_measured(path: str | Path, measured: Mapping[str, Any]) -> None:
    """Replace (or append) the ``measured:`` block of a GPU profile, keeping the rest of the
    file byte for byte (comments included). Validates first; writes atomically."""
    path = Path(path)
    block = validate_measured(measured, path)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.startswith("measured:")), None)
    if start is not None:
        end = start + 1
        while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
            end += 1
        lines = lines[:start] + lines[end:]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    dumped = yaml.safe_dump({"measured": block}, sort_keys=False, width=1000)
    comment = "# Written by benchmarks/gpu/fit.py; overrides `efficiency` above.\n"
    new_text = "".join(ln for ln in lines if ln != comment) + comment + dumped
    tmp = path.with_name(f".{path.stem}.tmp.yaml")
    tmp.write_text(new_text)
    try:
        load_gpu(tmp)  # the result must still load
    except ProfileError:
        tmp.unlink()
        raise
    tmp.replace(path)
