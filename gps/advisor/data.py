"""The trace every strategy is judged on: training history, held-out batches and the tokens
that token-level predictors are fitted on.

Shapes: ``T`` tokens per step (``workload.tokens_per_step``), ``L`` MoE layers, ``k`` top-k,
``E`` experts, ``N`` held-out batches, ``M`` training batches, ``B`` sequences per step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from gps import cache
from gps.cost._common import num_moe_layers
from gps.model import MoEModelSpec
from gps.traces.batching import batch_loads, decode_order, take_tokens
from gps.traces.io import load_trace
from gps.traces.synthetic import SyntheticTraceConfig, generate_token_trace
from gps.traces.trace import TokenTrace
from gps.workload import Workload


@dataclass(frozen=True)
class EvalData:
    """Training history, held-out batches and the token predictors' fitting set, in step order.

    Attributes:
        fit: tokens token-level predictors are fitted on; no sequence of ``fit`` occurs in
            ``test`` (nothing held out leaks into a fit).
        test: the ``N * T`` held-out tokens, batch after batch (every strategy is priced on
            these; load-history predictors forecast each from the batches before it).
        train_loads: ``[M, L, E]`` int64 tokens per expert of the ``M`` steps before ``test``.
        test_loads: ``[N, L, E]`` int64 tokens per expert per held-out batch.
        tokens_per_batch: ``T`` (of the simulated sample, see ``token_scale``).
        source: the preset's model name or the trace file.
        token_scale: the workload's tokens per step / ``T`` (``> 1`` when routing is simulated
            on a sample of the step, ``evaluation.sample_tokens_per_step``): every token count
            a strategy prices is multiplied by it (``strategies.scaled``).
        key: hash of everything this data was made from (``gps.cache``: the trace entry's key,
            which predictor and ILP entries build on).
    """

    fit: TokenTrace
    test: TokenTrace
    train_loads: np.ndarray
    test_loads: np.ndarray
    tokens_per_batch: int
    source: str
    token_scale: float = 1.0
    key: str = ""

    def test_batch(self, n: int) -> TokenTrace:
        """Held-out batch ``n`` as a ``TokenTrace`` view (``T`` tokens)."""
        t = self.tokens_per_batch
        return take_tokens(self.test, slice(n * t, (n + 1) * t))


def _check_matches(trace: TokenTrace, spec: MoEModelSpec, origin: str) -> None:
    want = (num_moe_layers(spec), spec.num_experts, spec.top_k)
    got = (trace.num_layers, trace.num_experts, trace.top_k)
    if got != want:
        raise ValueError(
            f"{origin}: trace has L={got[0]} MoE layers, E={got[1]} experts, top-{got[2]}; model "
            f"{spec.name!r} needs L={want[0]}, E={want[1]}, top-{want[2]}"
        )


def _split(steps: TokenTrace, fit: TokenTrace, m: int, n: int, t: int, source: str) -> EvalData:
    """Cut ``steps`` (``(M + N) * T`` tokens, step-major) into history and held-out batches."""
    train = take_tokens(steps, slice(0, m * t))
    test = take_tokens(steps, slice(m * t, (m + n) * t))
    fit = take_tokens(fit, ~np.isin(fit.sequence_id, np.unique(test.sequence_id)))
    if fit.num_tokens == 0:
        raise ValueError(
            f"{source}: every training sequence continues into the held-out batches, so no "
            "token is left to fit token predictors on; raise evaluation.train_batches"
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
) -> EvalData:
    """Generate (or load) the trace and cut it into history, held-out batches and a fit set.

    Synthetic presets are generated at the model's ``L``, ``E`` and ``k`` with ``seed`` (their
    skew, domain, affinity and Markov knobs unchanged), shaped like the workload:

    * prefill: ``(M + N) * B`` prompts of exactly ``S`` tokens; step ``i`` is prompts
      ``i*B .. i*B + B - 1``; token predictors fit on the ``M`` history steps' prompts;
    * decode: ``2B`` sequences of ``M + N`` generated tokens; the last ``B`` are the served
      requests (step ``i`` = token ``i`` of each), the first ``B`` other requests of the same
      router that token predictors fit on.

    A trace file is taken as it is: prefill batches consecutive tokens, decode interleaves
    sequences step by step (``decode_order``); token predictors fit on the history's tokens
    minus every sequence that reaches into the held-out part.

    ``sample_tokens`` (synthetic prefill only): when the step holds more tokens, routing is
    simulated on ``max(1, sample_tokens // S)`` whole prompts per step and
    ``EvalData.token_scale`` carries the factor to the step (the load skew of a large batch is
    its sample's up to multinomial noise of relative size ``sqrt(E / (T k))``).

    A generated trace is cached (``gps.cache`` kind ``traces``) when the cache is on; a file is
    read anew (memory-mapped), its content hash keys the predictor and ILP entries.

    Raises:
        ValueError: batch counts < 1, a trace file of the wrong shape or with too few tokens,
            no fitting token left, or ``sample_tokens < 1``.
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
        data = _from_file(trace_path, spec, decode, m, n, t)
        key = {"trace_file": cache.file_digest(trace_path), "path": str(trace_path),
               "dims": dims, **shape}  # fmt: skip
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


def _from_file(trace_path: str, spec: MoEModelSpec, decode: bool, m: int, n: int,
               t: int) -> EvalData:  # fmt: skip
    trace = load_trace(trace_path)
    if not isinstance(trace, TokenTrace):
        raise ValueError(f"{trace_path}: a load series; the advisor needs a token trace")
    _check_matches(trace, spec, str(trace_path))
    steps = decode_order(trace) if decode else trace
    if steps.num_tokens < (m + n) * t:
        raise ValueError(
            f"{trace_path}: {steps.num_tokens} tokens, but {m} + {n} batches of {t} tokens "
            f"need {(m + n) * t}; lower evaluation.*_batches or the batch size"
        )
    return _split(steps, take_tokens(steps, slice(0, m * t)), m, n, t, str(trace_path))


def _synthetic(cfg: SyntheticTraceConfig, source: str, decode: bool, m: int, n: int, t: int,
               b: int) -> EvalData:  # fmt: skip
    trace = generate_token_trace(cfg)
    if decode:
        served = take_tokens(trace, trace.sequence_id >= b)
        fit = take_tokens(trace, trace.sequence_id < b)
        return _split(decode_order(served), fit, m, n, t, source)
    return _split(trace, take_tokens(trace, slice(0, m * t)), m, n, t, source)
