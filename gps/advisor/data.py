"""The trace every strategy is judged on: training history, held-out batches and the tokens
that token-level predictors are fitted on.

Shapes: ``T`` tokens per step (``workload.tokens_per_step``), ``L`` MoE layers, ``k`` top-k,
``E`` experts, ``N`` held-out batches, ``M`` training batches, ``B`` sequences per step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gps import cache
from gps.cost._common import num_moe_layers
from gps.model import MoEModelSpec
from gps.traces.batching import batch_loads, decode_order, take_tokens
from gps.traces.io import load_trace
from gps.traces.synthetic import SyntheticTraceConfig, generate_token_trace
from gps.traces.trace import LoadSeries, TokenTrace
from gps.workload import Workload


@dataclass(frozen=True)
class EvalData:
    """Training history, held-out batches and the token predictors' fitting set, in step order.

    Attributes:
        fit: tokens token-level predictors are fitted on; no sequence of ``fit`` occurs in
            ``test`` (nothing held out leaks into a fit). ``None`` for aggregate statistics
            (``loads``): then no strategy that needs tokens runs.
        test: the ``N * T`` held-out tokens, batch after batch (every strategy is priced on
            these; load-history predictors forecast each from the batches before it);
            ``None`` for aggregate statistics.
        train_loads: ``[M, L, E]`` tokens per expert of the ``M`` steps before ``test``
            (int64 from a token trace; float from aggregate statistics).
        test_loads: ``[N, L, E]`` tokens per expert per held-out batch.
        tokens_per_batch: ``T`` (of the simulated sample, see ``token_scale``).
        source: the preset's model name or the trace file.
        token_scale: the workload's tokens per step / ``T`` (``> 1`` when routing is simulated
            on a sample of the step, ``evaluation.sample_tokens_per_step``): every token count
            a strategy prices is multiplied by it (``strategies.scaled``).
        key: hash of everything this data was made from (``gps.cache``: the trace entry's key,
            which predictor and ILP entries build on).
        moe_layers: the model's MoE-layer indices the trace's ``L`` layers are, when a trace
            file covers a subset of them (its ``meta["moe_layers"]``, from ``gps-trace convert
            --layer-map``): the run is priced on those layers only
            (``gps.model.spec_for_layers``); ``None``: every MoE layer.
        top_k: the routing's ``k`` (the test trace's; the model's for aggregate statistics).
        loads: ``None`` for a token trace; for aggregate statistics (an engine's load dump or
            a load series, ``gps.advisor.eplb.loads``) how the batches were made: ``source``
            (``recorded``: the recorded steps, rescaled; ``fluctuation model``: drawn around
            the recorded proportions), ``fluctuation`` (its ``rho`` and fit), the recorded
            copies per step, the steps averaged into each batch's mean.
    """

    fit: TokenTrace | None
    test: TokenTrace | None
    train_loads: np.ndarray
    test_loads: np.ndarray
    tokens_per_batch: int
    source: str
    token_scale: float = 1.0
    key: str = ""
    moe_layers: tuple[int, ...] | None = None
    top_k: int = 0
    loads: dict | None = None

    def __post_init__(self) -> None:
        if not self.top_k:
            if self.test is None:
                raise ValueError("EvalData: top_k is needed without a test trace")
            object.__setattr__(self, "top_k", self.test.top_k)

    @property
    def has_tokens(self) -> bool:
        """Whether token-level strategies can run (a token trace, not aggregate statistics)."""
        return self.test is not None

    @property
    def num_layers(self) -> int:
        return int(self.test_loads.shape[1])

    @property
    def num_experts(self) -> int:
        return int(self.test_loads.shape[2])

    def test_batch(self, n: int) -> TokenTrace:
        """Held-out batch ``n`` as a ``TokenTrace`` view (``T`` tokens)."""
        t = self.tokens_per_batch
        return take_tokens(self.test, slice(n * t, (n + 1) * t))


def _check_matches(trace: TokenTrace, spec: MoEModelSpec, origin: str) -> tuple[int, ...] | None:
    """The MoE layers a trace file covers (``None``: all), after checking its shape against the
    model: ``E`` and ``k`` must match; ``L`` must be the model's MoE-layer count, or the trace
    names the subset it covers in ``meta["moe_layers"]``."""
    want = (num_moe_layers(spec), spec.num_experts, spec.top_k)
    got = (trace.num_layers, trace.num_experts, trace.top_k)
    covered = trace.meta.get("moe_layers")
    if covered is not None:
        ok = (isinstance(covered, list) and len(covered) == trace.num_layers
              and all(isinstance(v, int) and 0 <= v < want[0] for v in covered)
              and covered == sorted(set(covered)))  # fmt: skip
        if not ok:
            raise ValueError(
                f"{origin}: field 'meta.moe_layers': {covered} must be {trace.num_layers} "
                f"increasing MoE-layer indices in [0, {want[0]}) of model {spec.name!r}"
            )
        got = (want[0], *got[1:])
    if got != want:
        hint = ""
        if got[1:] == want[1:] and got[0] < want[0]:
            hint = (
                f"; if the log covers {got[0]} of the model's {want[0]} MoE layers, convert it "
                "with gps-trace convert --layer-map LOGGED:MOE,... so the run is priced on those"
            )
        raise ValueError(
            f"{origin}: trace has L={trace.num_layers} MoE layers, E={got[1]} experts, "
            f"top-{got[2]}; model {spec.name!r} needs L={want[0]}, E={want[1]}, "
            f"top-{want[2]}{hint}"
        )
    if covered is None or covered == list(range(want[0])):
        return None
    return tuple(covered)


def _split(steps: TokenTrace, fit: TokenTrace, m: int, n: int, t: int, source: str) -> EvalData:
    """Cut ``steps`` (``(M + N) * T`` tokens, step-major) into history and held-out batches."""
    train = take_tokens(steps, slice(0, m * t))
    test = take_tokens(steps, slice(m * t, (m + n) * t))
    fit = take_tokens(fit, ~np.isin(fit.sequence_id, np.unique(test.sequence_id)))
    if fit.num_tokens == 0:
        raise ValueError(
            f"{source}: every training sequence continues into the held-out batches, so no "
            "token is left to fit token predictors on; raise evaluation.train_batches (more "
            "whole sequences before the held-out ones) or shorten workload.seq_len"
        )
    return EvalData(fit, test, batch_loads(train, t), batch_loads(test, t), t, source)


def prepare(
    trace_cfg: SyntheticTraceConfig,
    spec: MoEModelSpec,
    workload: Workload,
    *,
    train_batches: int,
    test_batches: int,
    trace_path: str | None = None,
    seed: int = 0,
    sample_tokens: int | None = None,
    fluctuation: str = "auto",
) -> EvalData:
    """Generate (or load) the trace and cut it into history, held-out batches and a fit set.

    Synthetic presets are generated at the model's ``L``, ``E`` and ``k`` with ``seed`` (their
    skew, domain, affinity and Markov knobs unchanged), shaped like the workload:

    * prefill: ``(M + N) * B`` prompts of exactly ``S`` tokens; step ``i`` is prompts
      ``i*B .. i*B + B - 1``; token predictors fit on the ``M`` history steps' prompts;
    * decode: ``2B`` sequences of ``M + N`` generated tokens; the last ``B`` are the served
      requests (step ``i`` = token ``i`` of each), the first ``B`` other requests of the same
      router that token predictors fit on.

    A trace file is taken as it is. Prefill batches consecutive tokens; token predictors fit on
    the history's tokens minus every sequence that reaches into the held-out part. Decode (a
    log of concurrent requests) is split by sequence, as the synthetic decode is: the log's
    last ``B`` requests are the served ones, interleaved step by step (``decode_order``: step
    ``i`` = token ``i`` of each), and token predictors fit on all earlier requests, so no
    held-out request is fitted on; a log with no more than ``B`` requests is refused with the
    ``workload.batch_size`` that would work. A file covering a subset of the model's MoE layers
    (``meta["moe_layers"]``) gives ``EvalData.moe_layers``.

    ``sample_tokens`` (synthetic prefill only): when the step holds more tokens, routing is
    simulated on ``max(1, sample_tokens // S)`` whole prompts per step and
    ``EvalData.token_scale`` carries the factor to the step (the load skew of a large batch is
    its sample's up to multinomial noise of relative size ``sqrt(E / (T k))``).

    A generated trace is cached (``gps.cache`` kind ``traces``) when the cache is on; a file is
    read anew (memory-mapped), its content hash keys the predictor and ILP entries.

    Aggregate statistics as ``trace_path`` (an engine's load dump, ``.pt`` / ``.json`` / a
    TensorRT-LLM folder, or a load-series ``.npz``: ``gps.traces.engine_stats``) give batches
    without tokens (``_from_statistics``): the last ``M + N`` recorded steps, the first ``M``
    the history, the held-out batches priced on the recorded counts when a recorded step holds
    about the workload's token copies, else drawn from the per-batch fluctuation model
    ``fluctuation`` (``eplb.fluctuation``) around the recorded proportions, seeded;
    ``EvalData.loads`` says which.

    Raises:
        ValueError: batch counts < 1, a trace file of the wrong shape or with too few tokens,
            no fitting token left (the message names the setting to change), or
            ``sample_tokens < 1``.
    """
    for name, value in (("train_batches", train_batches), ("test_batches", test_batches)):
        if value < 1:
            raise ValueError(f"evaluation.{name}={value}: must be >= 1")
    m, n, t, b = train_batches, test_batches, workload.tokens_per_step, workload.batch_size
    decode = workload.phase == "decode"
    if sample_tokens is not None and sample_tokens < 1:
        raise ValueError(f"evaluation.sample_tokens_per_step={sample_tokens}: must be >= 1")
    scale = 1.0
    if sample_tokens is not None and not decode and not trace_path and t > sample_tokens:
        b = max(1, sample_tokens // workload.seq_len)
        scale, t = t / (b * workload.seq_len), b * workload.seq_len
    shape = {"phase": workload.phase, "tokens_per_step": t, "batch_size": b, "train_batches": m,
             "test_batches": n}  # fmt: skip
    if trace_path:
        # A file is read (memory-mapped) as fast as a cache entry: keyed by content, not stored.
        dims = [num_moe_layers(spec), spec.num_experts, spec.top_k]
        data = _from_file(trace_path, spec, workload, m, n, seed, fluctuation)
        digest = "" if Path(trace_path).is_dir() else cache.file_digest(trace_path)
        drawn = data.loads is not None  # batches drawn with the seed and fluctuation model
        key = {"trace_file": digest, "path": str(trace_path), "dims": dims, **shape,
               "seed": seed if drawn else None,
               "fluctuation": fluctuation if drawn else None}  # fmt: skip
        return dataclasses.replace(data, key=cache.key_hash([cache.code_hash(), key]))
    length = m + n if decode else workload.seq_len
    sequences = 2 * b if decode else (m + n) * b
    cfg = dataclasses.replace(
        trace_cfg, num_layers=num_moe_layers(spec), num_experts=spec.num_experts,
        top_k=spec.top_k, num_tokens=sequences * length, min_sequence_length=length,
        max_sequence_length=length, seed=seed,
    )  # fmt: skip
    key = {"trace": dataclasses.asdict(cfg), **shape}

    def compute() -> EvalData:
        return _synthetic(cfg, trace_cfg.model or "synthetic", decode, m, n, t, b)

    data = cache.remember("traces", key, compute)
    key_hash = cache.key_hash([cache.code_hash(), key])
    return dataclasses.replace(data, key=key_hash, token_scale=scale)


def _from_file(trace_path: str, spec: MoEModelSpec, workload: Workload, m: int, n: int,
               seed: int, fluctuation: str) -> EvalData:  # fmt: skip
    decode, t = workload.phase == "decode", workload.tokens_per_step
    path = Path(trace_path)
    trace = None  # an engine's load statistics (gps.traces.engine_stats)
    if not (path.is_dir() or path.suffix in (".pt", ".pth", ".json")):
        trace = load_trace(trace_path)
    if not isinstance(trace, TokenTrace):
        return _from_statistics(trace_path, trace, spec, workload, m, n, seed, fluctuation)
    covered = _check_matches(trace, spec, str(trace_path))
    if decode:
        data = _decode_from_file(trace, m, n, t, str(trace_path))
    else:
        if trace.num_tokens < (m + n) * t:
            raise ValueError(
                f"{trace_path}: {trace.num_tokens} tokens, but {m} + {n} batches of {t} "
                f"tokens need {(m + n) * t}; lower evaluation.*_batches or the batch size"
            )
        data = _split(trace, take_tokens(trace, slice(0, m * t)), m, n, t, str(trace_path))
    return dataclasses.replace(data, moe_layers=covered)


def _from_statistics(trace_path: str, series: LoadSeries | None, spec: MoEModelSpec,
                     workload: Workload, m: int, n: int, seed: int,
                     fluctuation: str) -> EvalData:  # fmt: skip
    """History and held-out batches from aggregate statistics (``prepare``): no tokens."""
    from gps.advisor.eplb.loads import fluctuation_for, pool_loads
    from gps.traces.engine_stats import EngineLoadStats, read_engine_stats

    lm, e = num_moe_layers(spec), spec.num_experts
    if series is None:
        stats = read_engine_stats(trace_path, num_layers=lm, num_experts=e)
    else:
        stats = EngineLoadStats(counts=np.asarray(series.counts, dtype=np.int64),
                                step=np.asarray(series.step), engine="gps", mode="load_series",
                                format_version="moe-gps load series", source=[str(trace_path)],
                                meta=dict(series.meta))  # fmt: skip
    if stats.num_steps < m + n:
        raise ValueError(
            f"{trace_path}: {stats.num_steps} recorded steps, but evaluation.train_batches={m} "
            f"+ test_batches={n} need {m + n}; lower them or record more steps"
        )
    stats = dataclasses.replace(stats, counts=stats.counts[-(m + n) :],
                                step=stats.step[-(m + n) :])  # fmt: skip
    fluct = fluctuation_for(spec, fluctuation)
    pool = pool_loads(stats, spec, workload, fluct, history_fraction=m / (m + n), seed=seed)
    loads = {
        "source": pool.source, "statistics": f"{stats.engine} {stats.mode}",
        "recorded_copies_per_step": pool.recorded_copies,
        "copies_per_step": pool.copies_per_step, "smoothing_steps": pool.smoothing_steps,
        "fluctuation": {"rho": [float(v) for v in fluct.rho], **fluct.meta},
    }  # fmt: skip
    return EvalData(None, None, pool.history, pool.loads, workload.tokens_per_step,
                    str(trace_path), top_k=spec.top_k, loads=loads)  # fmt: skip


def _decode_from_file(trace: TokenTrace, m: int, n: int, b: int, source: str) -> EvalData:
    """Decode steps of the log's last ``b`` requests; token predictors fit on the others."""
    seq = np.asarray(trace.sequence_id)
    _, first = np.unique(seq, return_index=True)
    order = seq[np.sort(first)]  # requests in the order the log first shows them
    if order.size <= b:
        fix = (f"lower workload.batch_size to {order.size // 2} or less (half the requests "
               "fit the predictors, half are served) or log more requests"
               if order.size >= 2 else "log more requests")  # fmt: skip
        raise ValueError(
            f"{source}: decode serves workload.batch_size={b} requests at once and the log "
            f"holds {order.size}, so no request is left to fit the token predictors on "
            f"(fitting on the served requests would leak the held-out tokens): {fix}"
        )
    served = np.isin(seq, order[-b:])
    steps = decode_order(take_tokens(trace, served))
    if steps.num_tokens < (m + n) * b:
        raise ValueError(
            f"{source}: the {b} served requests (the log's last {b}) hold {steps.num_tokens} "
            f"tokens, but {m} + {n} decode steps of {b} need {(m + n) * b}; lower "
            "evaluation.train_batches / test_batches"
        )
    return _split(steps, take_tokens(trace, ~served), m, n, b, source)


def _synthetic(cfg: SyntheticTraceConfig, source: str, decode: bool, m: int, n: int, t: int,
               b: int) -> EvalData:  # fmt: skip
    trace = generate_token_trace(cfg)
    if decode:
        served = take_tokens(trace, trace.sequence_id >= b)
        fit = take_tokens(trace, trace.sequence_id < b)
        return _split(decode_order(served), fit, m, n, t, source)
    return _split(trace, take_tokens(trace, slice(0, m * t)), m, n, t, source)
