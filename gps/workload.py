"""What one serving step looks like: phase, batch and sequence lengths (``conf/workload/*.yaml``).

The dataclass doubles as a Hydra structured-config schema (plain types only).
"""

from __future__ import annotations

from dataclasses import dataclass

PHASES = ("prefill", "decode")
ATTENTION_PARALLEL = ("dp", "tp")
ALLTOALL = ("flat", "deepep", "deepep_low_latency")
OVERLAP = ("none", "two_batch")


class WorkloadError(ValueError):
    """A workload field is out of range; the message names the field."""


@dataclass
class Workload:
    """One batch step of inference.

    Not frozen: OmegaConf makes a frozen dataclass read-only, which would reject Hydra
    overrides such as ``workload.batch_size=64``. Call ``validate()`` after mutating.

    Attributes:
        phase: ``"prefill"`` (whole prompts) or ``"decode"`` (one new token per sequence).
        batch_size: Sequences in the batch ``B``.
        seq_len: Prefill: prompt tokens per sequence ``S``. Ignored in decode.
        context_len: Decode: KV-cache tokens each new token attends to ``C`` (the new token
            included). Ignored in prefill (a prompt attends to itself, causally).
        attention_parallel: ``"dp"``: each GPU of the expert-parallel group runs attention for
            its own share of the sequences; ``"tp"``: attention heads are split over the group.
        alltoall: how dispatch/combine move tokens (``gps.cost.comm.moe_alltoall_times``):
            ``"flat"`` (every token copy sent on its own), ``"deepep"`` (DeepEP normal
            kernels: de-duplicated per destination GPU and node, InfiniBand then NVLink
            fan-out) or ``"deepep_low_latency"`` (DeepEP decode kernels: per-copy sends plus a
            fixed per-kernel cost).
        overlap: ``"none"`` (stages of a layer run one after another) or ``"two_batch"``
            (SGLang/DeepSeek two-batch overlap: two micro-batches interleave so that one's
            all-to-all runs under the other's compute; ``gps.cost.e2e.two_batch_schedule``).
    """

    phase: str = "prefill"
    batch_size: int = 8
    seq_len: int = 2048
    context_len: int = 2048
    attention_parallel: str = "dp"
    alltoall: str = "deepep"
    overlap: str = "none"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``WorkloadError`` naming the first bad field."""
        if self.phase not in PHASES:
            raise WorkloadError(f"workload.phase={self.phase!r}: expected one of {PHASES}")
        if self.attention_parallel not in ATTENTION_PARALLEL:
            raise WorkloadError(
                f"workload.attention_parallel={self.attention_parallel!r}: "
                f"expected one of {ATTENTION_PARALLEL}"
            )
        for name, allowed in (("alltoall", ALLTOALL), ("overlap", OVERLAP)):
            if getattr(self, name) not in allowed:
                raise WorkloadError(
                    f"workload.{name}={getattr(self, name)!r}: expected one of {allowed}"
                )
        for name in ("batch_size", "seq_len", "context_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WorkloadError(f"workload.{name}={value!r}: expected an integer >= 1")

    @property
    def tokens_per_step(self) -> int:
        """New tokens processed in one step: ``B*S`` in prefill, ``B`` in decode."""
        if self.phase == "prefill":
            return self.batch_size * self.seq_len
        return self.batch_size

    @property
    def tokens_per_sequence(self) -> int:
        """New tokens per sequence in one step: ``S`` in prefill, 1 in decode."""
        return self.seq_len if self.phase == "prefill" else 1

    @property
    def kv_len(self) -> int:
        """KV-cache tokens held per sequence at the end of the step: ``S`` or ``C``."""
        return self.seq_len if self.phase == "prefill" else self.context_len
