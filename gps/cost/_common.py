"""Small helpers shared by the cost modules: element sizes and per-GPU shares."""

from __future__ import annotations

from gps.model import DTYPE_BYTES, MoEModelSpec, bytes_per_param, moe_layer_indices
from gps.workload import Workload


def element_bytes(spec: MoEModelSpec) -> float:
    """Bytes of one weight, activation or KV-cache element (all priced in ``spec.dtype``)."""
    try:
        return bytes_per_param(spec)
    except KeyError:
        raise ValueError(
            f"model {spec.name!r}: dtype={spec.dtype!r} unknown; known: {sorted(DTYPE_BYTES)}"
        ) from None


def sequences_per_gpu(workload: Workload, num_gpus: int) -> float:
    """Sequences whose attention one GPU runs: ``B/G`` (fractional, DP) or ``B`` (TP)."""
    if workload.attention_parallel == "dp":
        return workload.batch_size / num_gpus
    return float(workload.batch_size)


def tokens_per_gpu(workload: Workload, num_gpus: int) -> float:
    """New tokens whose token-parallel work (gate, FFN, embedding) one GPU runs: ``T/G``.

    Both attention modes hand each GPU ``1/G`` of the step's tokens after attention (TP:
    sequence-parallel slicing after the all-reduce). Fractional so that it vectorises.
    """
    return workload.tokens_per_step / num_gpus


def num_moe_layers(spec: MoEModelSpec) -> int:
    """MoE layers ``L_moe``: all ``num_layers`` minus the ``dense_layers``."""
    return len(moe_layer_indices(spec))
