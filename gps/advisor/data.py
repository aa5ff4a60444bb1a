"""The trace every strategy is judged on: training history and held-out batches.

Shapes: ``T`` tokens per step (``workload.tokens_per_step``), ``L`` MoE layers, ``k`` top-k,
``E`` experts, ``N`` held-out batches, ``M`` training batches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from gps.cost._common import num_moe_layers
from gps.model import MoEModelSpec
from gps.traces.batching import batch_loads, decode_order, take_tokens
from gps.traces.io import load_trace
from gps.traces.synthetic import SyntheticTraceConfig, generate_token_trace
from gps.traces.trace import TokenTrace
from gps.workload import Workload


@dataclass(frozen=True)
class EvalData:
    """Training history and held-out batches, in step order.

    Attributes:
        train: ``TokenTrace`` of the first ``M * T`` tokens (predictor fitting).
        test: ``TokenTrace`` of the next ``N * T`` tokens (held out: every strategy is priced
            on these batches; predictors never see them before predicting).
        train_loads: ``[M, L, E]`` int64 tokens per expert per training batch.
        test_loads: ``[N, L, E]`` int64 tokens per expert per held-out batch.
        tokens_per_batch: ``T``.
        source: the preset name or file the trace came from.
    """

    train: TokenTrace
    test: TokenTrace
    train_loads: np.ndarray
    test_loads: np.ndarray
    tokens_per_batch: int
    source: str

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


def prepare(
    trace_cfg: SyntheticTraceConfig,
    spec: MoEModelSpec,
    workload: Workload,
    *,
    train_batches: int,
    test_batches: int,
    order: str = "auto",
    trace_path: str | None = None,
    seed: int = 0,
) -> EvalData:
    """Generate (or load) the trace and cut it into training and held-out batches.

    The synthetic preset is generated at the model's ``L``, ``E`` and ``k`` (its skew,
    domains, affinity and Markov knobs unchanged) with ``seed`` and exactly the tokens needed.
    ``order``: ``prefill`` keeps trace order (a batch holds whole sequences), ``decode``
    interleaves sequences step by step (``decode_order``), ``auto`` follows
    ``workload.phase``. Training batches come first, held-out batches after them, so a
    history predictor forecasts forwards in time.

    Raises:
        ValueError: a trace file whose shape does not match the model, too few tokens, or
            batch counts < 1.
    """
    for name, value in (("train_batches", train_batches), ("test_batches", test_batches)):
        if value < 1:
            raise ValueError(f"evaluation.{name}={value}: must be >= 1")
    if order not in ("auto", "prefill", "decode"):
        raise ValueError(f"evaluation.order={order!r}: expected auto, prefill or decode")
    t = workload.tokens_per_step
    need = (train_batches + test_batches) * t
    if trace_path:
        trace = load_trace(trace_path)
        if not isinstance(trace, TokenTrace):
            raise ValueError(f"{trace_path}: a load series; the advisor needs a token trace")
        source = str(trace_path)
        _check_matches(trace, spec, source)
    else:
        cfg = dataclasses.replace(
            trace_cfg,
            num_layers=num_moe_layers(spec),
            num_experts=spec.num_experts,
            top_k=spec.top_k,
            num_tokens=need,
            seed=seed,
        )
        trace = generate_token_trace(cfg)
        source = trace_cfg.model or "synthetic"
    if (order == "auto" and workload.phase == "decode") or order == "decode":
        trace = decode_order(trace)
    if trace.num_tokens < need:
        raise ValueError(
            f"{source}: {trace.num_tokens} tokens, but {train_batches} + {test_batches} batches "
            f"of {t} tokens need {need}; lower evaluation.*_batches or the batch size"
        )
    train = take_tokens(trace, slice(0, train_batches * t))
    test = take_tokens(trace, slice(train_batches * t, need))
    return EvalData(
        train=train,
        test=test,
        train_loads=batch_loads(train, t),
        test_loads=batch_loads(test, t),
        tokens_per_batch=t,
        source=source,
    )
