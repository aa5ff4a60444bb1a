"""Serving-engine profiles: what an engine adds to, and how it shapes, every serving step.

An engine (Hydra group ``engine``, ``conf/engine/*.yaml``) is described by the facts the cost
model needs, each with its source (engine code or docs with version, published profiles):

* ``scheduler_us``: CPU time per step on the critical path (scheduling, input preparation,
  output processing that the engine does not overlap with the GPU), per phase;
* ``launch``: how kernels are launched, per phase: ``cuda_graph`` (replayed graph: the GPU's
  graph launch floor, ``GPUProfile.launch_overhead_s``) or ``eager`` (host dispatch per kernel,
  ``GPUProfile.eager_launch_overhead_s``);
* ``sampling_passes``: passes over the ``[batch, vocab]`` fp32 logits of the sampler (softmax,
  top-k/top-p filtering, the draw), a GPU op priced by the roofline;
* ``alltoall`` and ``overlap``: the MoE all-to-all kernels and the micro-batch overlap the
  engine runs per phase (``None``: the workload's own ``alltoall``/``overlap``);
* ``alltoall_sms``: streaming multiprocessors each all-to-all mode holds while it runs beside
  compute (overlapped compute then runs on the rest);
* ``chunked_prefill_tokens`` and ``max_running_requests``: the engine's default token budget
  of one prefill step and its cap on concurrently running requests (``gps.serving`` turns a
  workload a user knows into the steps these limits allow);
* ``eplb_*``: its expert-parallel load balancer's defaults and rebalance costs (window and
  interval in steps, asynchronous transfer or not, host seconds per rebalance, fixed seconds
  per MoE layer shuffled, exposed share of an asynchronous transfer): what ``gps-eplb`` and the
  advisor's periodic EPLB strategy price (``gps.plans.rebalance``); ``None`` when the engine
  has no balancer of that kind (``EngineProfile.eplb`` is then ``None``).

No number here is fitted to a balancing gain or a validation row (``docs/calibration.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from gps.workload import ALLTOALL, OVERLAP, PHASES

LAUNCH_MODES = ("cuda_graph", "eager")


class EngineError(ValueError):
    """An engine field is out of range or lacks its source; the message names the field."""


@dataclass
class PhaseFloat:
    """A number per phase (Hydra schema)."""

    prefill: float = 0.0
    decode: float = 0.0


@dataclass
class PhaseStr:
    """A mode per phase (Hydra schema); ``None`` = the workload's own setting."""

    prefill: str | None = None
    decode: str | None = None


@dataclass
class EngineConfig:
    """One serving engine (Hydra group ``engine``; ``conf/engine/*.yaml``).

    Attributes:
        name: label (``ideal``, ``sglang``, ``vllm``, ``trtllm``).
        version: the engine versions the numbers hold for.
        scheduler_us: exposed CPU microseconds per step, per phase.
        launch: ``cuda_graph`` or ``eager`` per phase.
        sampling_passes: passes over the fp32 logits per decode step (0: sampling not priced).
        alltoall: MoE all-to-all mode per phase (``gps.workload.ALLTOALL``); ``None`` = the
            workload's ``alltoall``.
        overlap: ``none`` or ``two_batch`` per phase; ``None`` = the workload's ``overlap``.
        alltoall_sms: SMs held by each all-to-all mode while it overlaps compute.
        chunked_prefill_tokens: default tokens of one prefill step (chunked-prefill size /
            max batched tokens).
        max_running_requests: default cap on running requests (decode batch per GPU group).
        eplb_window_steps: the balancer's default statistics window (steps), ``None``: none.
            The defaults are the ideal engine's: free rebalances every 1,000 steps from a
            1,000-step window (the cadence SGLang's and vLLM's defaults share).
        eplb_interval_steps: its default rebalance interval (steps).
        eplb_async: its default transfer mode (``True``: rebalances run beside serving).
        eplb_cpu_s: host seconds of one rebalance (the placement algorithm and bookkeeping).
        eplb_per_layer_s: fixed seconds per MoE layer of a synchronous weight shuffle.
        eplb_async_exposed_fraction: share of an asynchronous rebalance's transfer time that
            shows in the steps it overlaps, in [0, 1].
        sources: field name -> source (engine code/docs with version, profile, or
            ``assumption: ...``); every field above except ``name`` needs one.
    """

    name: str = "ideal"
    version: str = ""
    scheduler_us: PhaseFloat = field(default_factory=PhaseFloat)
    launch: PhaseStr = field(default_factory=lambda: PhaseStr("cuda_graph", "cuda_graph"))
    sampling_passes: int = 0
    alltoall: PhaseStr = field(default_factory=PhaseStr)
    overlap: PhaseStr = field(default_factory=PhaseStr)
    alltoall_sms: dict[str, int] = field(
        default_factory=lambda: {"flat": 0, "deepep": 0, "deepep_low_latency": 0}
    )
    chunked_prefill_tokens: int = 8192
    max_running_requests: int = 1024
    eplb_window_steps: int | None = 1000
    eplb_interval_steps: int | None = 1000
    eplb_async: bool | None = True
    eplb_cpu_s: float | None = 0.0
    eplb_per_layer_s: float | None = 0.0
    eplb_async_exposed_fraction: float | None = 0.0
    sources: dict[str, str] = field(default_factory=dict)


EPLB_FIELDS = (
    "eplb_window_steps", "eplb_interval_steps", "eplb_async", "eplb_cpu_s", "eplb_per_layer_s",
    "eplb_async_exposed_fraction",
)  # fmt: skip
SOURCED = (
    "version", "scheduler_us", "launch", "sampling_passes", "alltoall", "overlap",
    "alltoall_sms", "chunked_prefill_tokens", "max_running_requests", *EPLB_FIELDS,
)  # fmt: skip


@dataclass(frozen=True)
class EngineEplb:
    """An engine's expert-parallel load balancer: its defaults and rebalance costs.

    Attributes:
        window_steps: statistics window (steps) a rebalance plans from.
        interval_steps: steps between rebalances.
        asynchronous: rebalances run beside serving (the new placement lands later).
        cpu_s: host seconds per rebalance.
        per_layer_s: fixed seconds per MoE layer of a synchronous weight shuffle.
        async_exposed_fraction: share of an asynchronous transfer that shows, in [0, 1].
    """

    window_steps: int
    interval_steps: int
    asynchronous: bool
    cpu_s: float
    per_layer_s: float
    async_exposed_fraction: float

    def summary(self) -> dict:
        """JSON-serialisable (``results.json`` ``eplb.engine_defaults``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class EngineProfile:
    """A validated engine (``from_config``); seconds and plain values.

    Attributes:
        name, version: as configured.
        scheduler_s: ``{phase: seconds}`` exposed CPU time per step.
        launch: ``{phase: "cuda_graph" | "eager"}``.
        sampling_passes: passes over the logits per decode step.
        alltoall, overlap: ``{phase: mode or None}``.
        alltoall_sms: ``{mode: SMs held}``.
        chunked_prefill_tokens, max_running_requests: the engine's defaults.
        sources: field -> source.
    """

    name: str
    version: str
    scheduler_s: dict[str, float]
    launch: dict[str, str]
    sampling_passes: int
    alltoall: dict[str, str | None]
    overlap: dict[str, str | None]
    alltoall_sms: dict[str, int]
    chunked_prefill_tokens: int
    max_running_requests: int
    eplb: EngineEplb | None
    sources: dict[str, str]

    @classmethod
    def from_config(cls, cfg: EngineConfig | dict) -> EngineProfile:
        """Validate ``cfg`` (an ``EngineConfig`` or a plain mapping of its fields).

        Raises:
            EngineError: naming ``engine.<field>``: an unknown field or mode, a negative
                number, or a field other than ``name`` without a source.
        """
        data = _as_dict(cfg)
        unknown = sorted(set(data) - {f.name for f in fields(EngineConfig)})
        if unknown:
            raise EngineError(f"engine.{unknown[0]}: unknown field")
        base = EngineConfig()
        get = {f.name: data.get(f.name, getattr(base, f.name)) for f in fields(EngineConfig)}
        name = str(get["name"])
        sources = {str(k): str(v) for k, v in _as_dict(get["sources"]).items()}
        if name != "ideal":
            for key in SOURCED:
                if not sources.get(key, "").strip():
                    raise EngineError(f"engine.sources.{key}: engine {name!r} gives no source")
        sched = _phases(get["scheduler_us"], "scheduler_us", float)
        for phase, value in sched.items():
            if not value >= 0:
                raise EngineError(f"engine.scheduler_us.{phase}={value!r}: expected >= 0")
        launch = _phases(get["launch"], "launch", str)
        alltoall = _phases(get["alltoall"], "alltoall", str)
        overlap = _phases(get["overlap"], "overlap", str)
        for key, values, allowed in (("launch", launch, LAUNCH_MODES),
                                     ("alltoall", alltoall, ALLTOALL),
                                     ("overlap", overlap, OVERLAP)):  # fmt: skip
            for phase, value in values.items():
                if value is not None and value not in allowed:
                    raise EngineError(
                        f"engine.{key}.{phase}={value!r}: expected one of {allowed}"
                        + (" or null" if key != "launch" else "")
                    )
                if key == "launch" and value is None:
                    raise EngineError(f"engine.launch.{phase}: expected one of {allowed}")
        sms = {str(k): _count(v, f"alltoall_sms.{k}", 0) for k, v in
               _as_dict(get["alltoall_sms"]).items()}  # fmt: skip
        missing = [mode for mode in ALLTOALL if mode not in sms]
        if missing:
            raise EngineError(f"engine.alltoall_sms.{missing[0]}: missing")
        extra = sorted(set(sms) - set(ALLTOALL))
        if extra:
            raise EngineError(f"engine.alltoall_sms.{extra[0]}: unknown all-to-all mode")
        return cls(
            name=name,
            version=str(get["version"]),
            scheduler_s={p: v * 1e-6 for p, v in sched.items()},
            launch=launch,  # type: ignore[arg-type]
            sampling_passes=_count(get["sampling_passes"], "sampling_passes", 0),
            alltoall=alltoall,
            overlap=overlap,
            alltoall_sms=sms,
            chunked_prefill_tokens=_count(
                get["chunked_prefill_tokens"], "chunked_prefill_tokens", 1
            ),
            max_running_requests=_count(get["max_running_requests"], "max_running_requests", 1),
            eplb=_eplb(get),
            sources=sources,
        )

    def held_sms(self, mode: str, sm_count: int) -> int:
        """SMs ``mode``'s all-to-all holds on a GPU of ``sm_count`` SMs (capped below it)."""
        return min(self.alltoall_sms[mode], sm_count - 1)

    def summary(self) -> dict:
        """JSON-serialisable description (``results.json`` ``setup.engine``)."""
        return {
            "name": self.name,
            "version": self.version,
            "scheduler_us": {p: v * 1e6 for p, v in self.scheduler_s.items()},
            "launch": dict(self.launch),
            "alltoall": dict(self.alltoall),
            "overlap": dict(self.overlap),
            "alltoall_sms": dict(self.alltoall_sms),
            "chunked_prefill_tokens": self.chunked_prefill_tokens,
            "max_running_requests": self.max_running_requests,
            "eplb": None if self.eplb is None else self.eplb.summary(),
        }


def _eplb(get: dict) -> EngineEplb | None:
    """The ``eplb_*`` fields as an ``EngineEplb`` (all set) or ``None`` (all ``None``)."""
    values = {key: get[key] for key in EPLB_FIELDS}
    unset = [key for key, v in values.items() if v is None]
    if len(unset) == len(values):
        return None
    if unset:
        raise EngineError(f"engine.{unset[0]}: unset while other eplb_* fields are set")
    if not isinstance(values["eplb_async"], bool):
        raise EngineError(f"engine.eplb_async={values['eplb_async']!r}: expected true or false")
    for key in ("eplb_cpu_s", "eplb_per_layer_s", "eplb_async_exposed_fraction"):
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < float("inf"):
            raise EngineError(f"engine.{key}={v!r}: expected a number >= 0")
    if values["eplb_async_exposed_fraction"] > 1:
        raise EngineError(
            f"engine.eplb_async_exposed_fraction={values['eplb_async_exposed_fraction']!r}: "
            "expected a share in [0, 1]"
        )
    return EngineEplb(
        window_steps=_count(values["eplb_window_steps"], "eplb_window_steps", 1),
        interval_steps=_count(values["eplb_interval_steps"], "eplb_interval_steps", 1),
        asynchronous=values["eplb_async"],
        cpu_s=float(values["eplb_cpu_s"]),
        per_layer_s=float(values["eplb_per_layer_s"]),
        async_exposed_fraction=float(values["eplb_async_exposed_fraction"]),
    )


def _as_dict(value) -> dict:
    if isinstance(value, dict):
        return dict(value)
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    from omegaconf import DictConfig, OmegaConf

    if isinstance(value, DictConfig):
        return dict(OmegaConf.to_container(value, resolve=True))  # type: ignore[arg-type]
    raise EngineError(f"engine: expected a mapping, got {value!r}")


def _phases(value, key: str, kind: type) -> dict:
    data = _as_dict(value)
    unknown = sorted(set(data) - set(PHASES))
    if unknown:
        raise EngineError(f"engine.{key}.{unknown[0]}: unknown phase; expected {PHASES}")
    out = {}
    for phase in PHASES:
        raw = data.get(phase)
        if raw is None:
            out[phase] = 0.0 if kind is float else None
            continue
        try:
            out[phase] = kind(raw)
        except (TypeError, ValueError):
            raise EngineError(f"engine.{key}.{phase}={raw!r}: expected a {kind.__name__}") from None
    return out


def _count(value, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EngineError(f"engine.{key}={value!r}: expected an integer >= {minimum}")
    return int(value)


IDEAL = EngineProfile.from_config(EngineConfig())

ENGINE_DIR = Path(__file__).resolve().parents[1] / "conf" / "engine"


def load_engine(name: str) -> EngineProfile:
    """The shipped profile ``conf/engine/<name>.yaml``, validated.

    Raises:
        EngineError: naming ``engine``: no such profile (the shipped ones listed) or a bad field.
    """
    import yaml

    path = ENGINE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in ENGINE_DIR.glob("*.yaml"))
        raise EngineError(f"engine={name!r}: no such profile; expected one of {known}")
    return EngineProfile.from_config(yaml.safe_load(path.read_text(encoding="utf-8")))
