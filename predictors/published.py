"""Published Token-to-Expert predictors (``predictors/published.yaml``): typed loader with
validation, conversion of each published metric to ours (top-k hit rate), and their overhead
priced by the cost model on a run's model and GPU.

These are operating points their authors report, **not measured by moe-gps**: every report
row and plot point built from them says so. See ``docs/predictors.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gps.cost._common import element_bytes, num_moe_layers
from gps.hardware import GPUProfile
from gps.model import MoEModelSpec
from predictors.evaluate import overhead_summary
from predictors.hidden import router_cost

PUBLISHED_PATH = Path(__file__).with_name("published.yaml")
METRICS = ("topk_hit", "exact_match", "f1", "by_construction")
SYMBOLS = ("d", "E")  # widths entries standing for the run's hidden size / expert count


class PublishedError(ValueError):
    """``published.yaml`` breaks its schema; the message names the file, entry and field."""


@dataclass(frozen=True)
class Source:
    paper: str
    where: str
    year: int | None
    url: str


@dataclass(frozen=True)
class PublishedPredictor:
    """One published operating point (fields as in ``published.yaml``).

    ``widths``: ``[d, ..., E]`` with ints or the symbols ``"d"`` / ``"E"`` (the run's hidden
    size / expert count), or ``None`` when the architecture is not published (unpriced).
    """

    name: str
    method: str
    model: str | None
    published_model: str
    metric: str
    accuracy: float
    top_k: int | None
    num_experts: int | None
    input: str
    widths: tuple[int | str, ...] | None
    activation: str | None
    assumption: str
    source: Source
    note: str = ""
    other_figures: dict[str, float] = field(default_factory=dict)

    def topk_hit_range(self) -> tuple[float, float]:
        """``(low, high)`` top-k hit rate the published figure implies (see :func:`conversion`)."""
        a = self.accuracy
        if self.metric == "exact_match":
            k = self.top_k
            return a, (a + (1.0 - a) * (k - 1) / k) if k else 1.0
        if self.metric == "by_construction":
            return 1.0, 1.0
        return a, a

    def conversion(self) -> str:
        """How the published metric maps to our top-k hit rate, in words."""
        if self.metric == "topk_hit":
            return "published as top-k hit rate (recall@k with k predicted): ours"
        if self.metric == "f1":
            return ("F1 of predicted vs true expert sets equals the top-k hit rate when exactly k "
                    "are predicted (precision = recall); taken as such")  # fmt: skip
        if self.metric == "by_construction":
            return ("the model is fine-tuned to route by the predictor's choice: hit rate 1 by "
                    "construction (the cost is a model change)")  # fmt: skip
        low, high = self.topk_hit_range()
        k = f"k={self.top_k}" if self.top_k else "k unknown"
        return (f"exact match (all k right) a <= hit rate <= a + (1-a)(k-1)/k ({k}): "
                f"[{low:.3f}, {high:.3f}]; the point uses the lower bound")  # fmt: skip

    def resolved_widths(self, spec: MoEModelSpec) -> list[int] | None:
        """``widths`` with ``d``/``E`` replaced by ``spec``'s hidden size / expert count."""
        if self.widths is None:
            return None
        sub = {"d": spec.hidden_size, "E": spec.num_experts}
        return [sub[w] if isinstance(w, str) else w for w in self.widths]


def _err(origin: str, at: str, fieldname: str, message: str) -> PublishedError:
    return PublishedError(f"{origin}: {at}: field '{fieldname}': {message}")


def _get(entry: dict, key: str, kinds: tuple[type, ...], origin: str, at: str, *,
         optional: bool = False) -> object:  # fmt: skip
    if key not in entry:
        raise _err(origin, at, key, "missing")
    value = entry[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        want = " or ".join(k.__name__ for k in kinds) + (" or null" if optional else "")
        raise _err(origin, at, key, f"expected {want}, got {value!r}")
    return value


def _parse(entry: object, origin: str, index: int) -> PublishedPredictor:
    if not isinstance(entry, dict):
        raise PublishedError(f"{origin}: entry {index}: expected a mapping, got {entry!r}")
    at = f"entry {index} ({entry.get('name', '?')})"
    known = {"name", "method", "model", "published_model", "metric", "accuracy", "top_k",
             "num_experts", "input", "architecture", "source", "note", "other_figures"}  # fmt: skip
    unknown = sorted(set(entry) - known)
    if unknown:
        raise _err(origin, at, unknown[0], "unknown field")
    metric = _get(entry, "metric", (str,), origin, at)
    if metric not in METRICS:
        raise _err(origin, at, "metric", f"{metric!r} not one of {METRICS}")
    accuracy = float(_get(entry, "accuracy", (int, float), origin, at))
    if not 0.0 <= accuracy <= 1.0:
        raise _err(origin, at, "accuracy", f"{accuracy} outside [0, 1] (give a fraction)")
    ints = {}
    for key in ("top_k", "num_experts"):
        ints[key] = _get(entry, key, (int,), origin, at, optional=True)
        if ints[key] is not None and ints[key] < 1:
            raise _err(origin, at, key, f"must be >= 1, got {ints[key]}")
    arch = _get(entry, "architecture", (dict,), origin, at)
    widths = _get(arch, "widths", (list,), origin, f"{at} architecture", optional=True)
    if widths is not None:
        bad = [w for w in widths if not (w in SYMBOLS or (type(w) is int and w >= 1))]
        if len(widths) < 2 or bad:
            want = f"need >= 2 entries, each a positive int or one of {SYMBOLS}"
            raise _err(origin, at, "architecture.widths", f"{widths}: {want}")
    src = _get(entry, "source", (dict,), origin, at)
    year = _get(src, "year", (int,), origin, f"{at} source", optional=True)
    source = Source(
        paper=_get(src, "paper", (str,), origin, f"{at} source"),
        where=_get(src, "where", (str,), origin, f"{at} source"),
        year=year,
        url=_get(src, "url", (str,), origin, f"{at} source"),
    )
    others = entry.get("other_figures") or {}
    if not isinstance(others, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in others.values()
    ):
        raise _err(origin, at, "other_figures", f"expected a mapping name -> number: {others!r}")
    return PublishedPredictor(
        name=_get(entry, "name", (str,), origin, at),
        method=_get(entry, "method", (str,), origin, at),
        model=_get(entry, "model", (str,), origin, at, optional=True),
        published_model=_get(entry, "published_model", (str,), origin, at),
        metric=metric,
        accuracy=accuracy,
        top_k=ints["top_k"],
        num_experts=ints["num_experts"],
        input=_get(entry, "input", (str,), origin, at),
        widths=None if widths is None else tuple(widths),
        activation=_get(arch, "activation", (str,), origin, f"{at} architecture", optional=True),
        assumption=str(arch.get("assumption") or "").strip(),
        source=source,
        note=str(entry.get("note") or "").strip(),
        other_figures={str(k): float(v) for k, v in others.items()},
    )


def load_published(path: str | Path = PUBLISHED_PATH) -> list[PublishedPredictor]:
    """Read and validate ``path`` (default: ``predictors/published.yaml``).

    Raises:
        PublishedError: naming ``path``, the entry (index and name) and the field at fault
            (missing, unknown, wrong type, accuracy outside [0, 1], unknown metric, bad widths,
            duplicate name).
        FileNotFoundError: ``path`` does not exist.
    """
    origin = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise PublishedError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise PublishedError(f"{origin}: field 'schema_version': expected 1")
    entries = data.get("predictors")
    if not isinstance(entries, list) or not entries:
        raise PublishedError(f"{origin}: field 'predictors': expected a non-empty list")
    out = [_parse(e, origin, i) for i, e in enumerate(entries)]
    seen: set[str] = set()
    for i, p in enumerate(out):
        if p.name in seen:
            raise _err(origin, f"entry {i} ({p.name})", "name", "duplicate name")
        seen.add(p.name)
    return out


def select_for_model(entries: list[PublishedPredictor], model: str) -> list[PublishedPredictor]:
    """The entries a run on ``model`` shows: every method's entries on ``model`` (matched
    case-insensitively); for a method published on other models only, all of its entries."""
    key = model.casefold()
    same = {p.method for p in entries if p.model is not None and p.model.casefold() == key}
    return [
        p for p in entries
        if (p.model is not None and p.model.casefold() == key) or p.method not in same
    ]  # fmt: skip


def published_points(
    spec: MoEModelSpec,
    gpu: GPUProfile,
    tokens_per_batch: int,
    entries: list[PublishedPredictor] | None = None,
) -> list[dict]:
    """Each published point a run on ``spec`` shows, priced on ``gpu``.

    Returns one dict per :func:`select_for_model` entry (the ``published_predictors`` list of
    ``results.json``, keys in ``docs/results.md``): ``topk_hit_rate`` (our metric, the
    conservative end of the conversion) and ``overhead`` (:func:`router_cost` of its widths
    on ``spec``'s ``d``, ``E``, top-k and MoE layers, roofline-priced for ``tokens_per_batch``
    tokens; ``None`` when the architecture is not published) with ``overhead_s_per_layer``.
    """
    entries = load_published() if entries is None else entries
    layers = num_moe_layers(spec)
    out = []
    for p in select_for_model(entries, spec.name):
        widths = p.resolved_widths(spec)
        overhead = per_layer = None
        if widths is not None:
            cost = router_cost(
                widths, top_k=spec.top_k, invocations=layers, element_bytes=element_bytes(spec),
                dtype=spec.dtype, note=f"{p.name}: GEMM chain {widths} per token and MoE layer",
            )  # fmt: skip
            overhead = overhead_summary(cost, gpu, tokens_per_batch)
            per_layer = overhead["seconds_per_batch"] / layers
        low, high = p.topk_hit_range()
        out.append({
            "name": p.name,
            "method": p.method,
            "published_model": p.published_model,
            "same_model": p.model is not None and p.model.casefold() == spec.name.casefold(),
            "published_metric": p.metric,
            "published_accuracy": p.accuracy,
            "topk_hit_rate": low,
            "topk_hit_rate_high": high,
            "conversion": p.conversion(),
            "input": p.input,
            "widths": widths,
            "assumption": p.assumption,
            "overhead": overhead,
            "overhead_s_per_layer": per_layer,
            "source": f"{p.source.paper}; {p.source.where}"
            + (f" ({p.source.year})" if p.source.year else " (undated)"),
            "url": p.source.url,
            "note": p.note,
        })  # fmt: skip
    return out
