"""A workload as a user knows it, turned into the steps a serving engine runs.

A user knows how many requests are in flight (``concurrency``), how long prompts and answers
are (``prompt_len``, ``output_len``) and perhaps the engine's token budget of one prefill step
(``chunked_prefill_tokens``: SGLang's ``--chunked-prefill-size``, vLLM's
``--max-num-batched-tokens``, TensorRT-LLM's ``--max_num_tokens``). The cost model prices
steps (``gps.workload.Workload``). In steady state an engine with ``R = min(concurrency,
max_running_requests)`` running requests serves, per round of ``R`` requests:

* their prefill: ``R * prompt_len`` tokens in steps of at most ``chunked_prefill_tokens``
  tokens: ``floor(budget / prompt_len)`` whole prompts per step when a prompt fits, otherwise
  each prompt in ``ceil(prompt_len / budget)`` chunks of one sequence (a later chunk's
  attention over the earlier chunks is priced as the chunk's own causal attention: a lower
  bound);
* ``output_len - 1`` decode steps of batch ``R`` (the prefill step emits the first token),
  priced at the mean context ``prompt_len + output_len / 2``.

Prefill and decode are priced as separate steps (SGLang's default; vLLM mixes prefill chunks
into decode steps, which shares the weight reads: separate steps are then an upper bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gps.engine import EngineProfile
from gps.workload import Workload, WorkloadError


@dataclass
class ServingWorkload:
    """Serving load in the user's terms (Hydra schema).

    Attributes:
        concurrency: requests in flight; ``None``: not used (the workload gives the step).
        prompt_len: prompt tokens per request.
        output_len: generated tokens per request (>= 1).
        chunked_prefill_tokens: tokens of one prefill step; ``None`` = the engine's default.
        max_running_requests: cap on running requests; ``None`` = the engine's default.
    """

    concurrency: int | None = None
    prompt_len: int = 2048
    output_len: int = 256
    chunked_prefill_tokens: int | None = None
    max_running_requests: int | None = None

    def validate(self) -> None:
        """Raise ``WorkloadError`` naming the first bad field (``serving.<field>``)."""
        if self.concurrency is None:
            raise WorkloadError("serving.concurrency: not set (requests in flight)")
        for name in ("concurrency", "prompt_len", "output_len"):
            _positive(getattr(self, name), name)
        for name in ("chunked_prefill_tokens", "max_running_requests"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), name)


def _positive(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(f"serving.{name}={value!r}: expected an integer >= 1")


@dataclass(frozen=True)
class StepPlan:
    """The steps of one round (every running request prefilled once and fully decoded).

    Attributes:
        running: requests served per round ``R``.
        prefill: one prefill step, or ``None`` when there is nothing to prefill.
        prefill_steps: prefill steps per round (may be fractional: the last step is partial).
        decode: one decode step (batch ``R``), or ``None`` when ``output_len == 1``.
        decode_steps: decode steps per round (``output_len - 1``).
        input_tokens: prompt tokens per round (``R * prompt_len``).
        output_tokens: generated tokens per round (``R * output_len``).
    """

    running: int
    prefill: Workload | None
    prefill_steps: float
    decode: Workload | None
    decode_steps: float
    input_tokens: int
    output_tokens: int

    def round_s(self, prefill_step_s: float, decode_step_s: float) -> float:
        """Seconds of one round from the seconds of one prefill and one decode step."""
        return self.prefill_steps * prefill_step_s + self.decode_steps * decode_step_s


def plan_steps(serving: ServingWorkload, engine: EngineProfile, base: Workload) -> StepPlan:
    """The prefill and decode steps ``engine`` runs for ``serving``.

    ``base`` supplies the fields a user does not state in serving terms
    (``attention_parallel``, ``alltoall``, ``overlap``); phase, batch and lengths are set here.

    Raises:
        WorkloadError: a bad ``serving`` field, named.
    """
    serving.validate()
    budget = serving.chunked_prefill_tokens or engine.chunked_prefill_tokens
    running = min(serving.concurrency, serving.max_running_requests or engine.max_running_requests)
    p, o = serving.prompt_len, serving.output_len
    if p <= budget:
        per_step = min(budget // p, running)
        prefill = replace(base, phase="prefill", batch_size=per_step, seq_len=p, context_len=p)
        prefill_steps = running / per_step
    else:
        chunks = math.ceil(p / budget)
        chunk = math.ceil(p / chunks)
        prefill = replace(base, phase="prefill", batch_size=1, seq_len=chunk, context_len=chunk)
        prefill_steps = float(running * chunks)
    decode = None
    if o > 1:
        context = p + max(o // 2, 1)
        decode = replace(base, phase="decode", batch_size=running, seq_len=1, context_len=context)
        decode.validate()
    prefill.validate()
    return StepPlan(
        running=running,
        prefill=prefill,
        prefill_steps=prefill_steps,
        decode=decode,
        decode_steps=float(o - 1),
        input_tokens=running * p,
        output_tokens=running * o,
    )
