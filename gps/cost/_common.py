"""Small helpers shared by the cost modules: element sizes and per-GPU shares."""

from __future__ import annotations

from gps.model import DTYPE_BYTES, MoEModelSpec, moe_layer_indices, tensor_bytes, tensor_dtype
from gps.workload import Workload


def dtype_bytes(spec: MoEModelSpec, tensor: str) -> float:
    """Bytes of one element of ``tensor`` (``gps.model.TENSOR_DTYPES``); ``ValueError`` naming
    the field when its dtype is unknown."""
    try:
        return tensor_bytes(spec, tensor)
    except KeyError:
        field = f"dtypes.{tensor}" if getattr(spec.dtypes, tensor) else "dtype"
        raise ValueError(
            f"model {spec.name!r}: {field}={tensor_dtype(spec, tensor)!r} unknown; "
            f"known: {sorted(DTYPE_BYTES)}"
        ) from None


def element_bytes(spec: MoEModelSpec) -> float:
    """Bytes of one weight element (``dtypes.weights``, default ``spec.dtype``); also the unit of
    ``traffic_bytes`` (one token copy = ``hidden_size * element_bytes``)."""
    return dtype_bytes(spec, "weights")


def act_bytes(spec: MoEModelSpec) -> float:
    """Bytes of one activation element (``dtypes.activations``)."""
    return dtype_bytes(spec, "activations")


def gemm_dtype(spec: MoEModelSpec) -> str:
    """Dtype whose peak FLOP/s the GEMMs run at: ``dtypes.compute``, default the weights'."""
    return tensor_dtype(spec, "compute")


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
