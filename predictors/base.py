"""Shared pieces of every predictor: the overhead record, its roofline price, input checks.

Shapes: ``T`` tokens, ``L`` MoE layers, ``k`` top-k, ``E`` experts per layer, ``N`` batches.
Units: FLOPs, bytes, seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning

from gps.cost.roofline import op_time
from gps.hardware import GPUProfile
from gps.traces.trace import TokenTrace

Per = Literal["token", "batch"]
Where = Literal["gpu_critical", "cpu_offpath"]


@dataclass(frozen=True)
class PredictorCost:
    """Work one predictor does per batch, in the units the roofline prices.

    The predictor runs ``invocations`` times per batch: ``L`` for a per-layer predictor (once
    before the attention block of every MoE layer, as in MoE-GPS), ``1`` for a once-per-batch
    predictor (priced on MoE layer 0). Each invocation is one roofline op of
    ``units * flops + fixed_flops`` FLOPs, ``units * bytes + fixed_bytes`` bytes and ``launches``
    kernels, where ``units`` is the batch's token count (``per="token"``) or 1 (``per="batch"``).

    Attributes:
        flops: FLOPs per unit per invocation (a comparison or add counts 1, a multiply-add 2).
        bytes: Memory bytes read + written per unit per invocation.
        per: ``"token"`` (work scales with the batch's tokens) or ``"batch"`` (fixed per batch).
        where: ``"gpu_critical"`` (on the GPU before the attention block: adds to the step
            time) or ``"cpu_offpath"`` (beside the running batch; the cost model hides it
            behind attention and only ``max(0, t - attention)`` shows).
        launches: Kernels per invocation (0 for work that launches none, e.g. CPU work).
        invocations: Times it runs per batch (``L`` or ``1``).
        fixed_flops: FLOPs per invocation independent of the token count.
        fixed_bytes: Bytes per invocation independent of the token count (model weights,
            tables read once).
        dtype: ``GPUProfile.peak_flops`` key the FLOPs are priced at.
        note: How the counts were derived (assumptions), for reports.
    """

    flops: float
    bytes: float
    per: Per
    where: Where
    launches: int = 1
    invocations: int = 1
    fixed_flops: float = 0.0
    fixed_bytes: float = 0.0
    dtype: str = "bf16"
    note: str = ""

    def __post_init__(self) -> None:
        if self.per not in ("token", "batch"):
            raise ValueError(f"PredictorCost.per must be 'token' or 'batch', got {self.per!r}")
        if self.where not in ("gpu_critical", "cpu_offpath"):
            raise ValueError(
                f"PredictorCost.where must be 'gpu_critical' or 'cpu_offpath', got {self.where!r}"
            )
        for name in ("flops", "bytes", "fixed_flops", "fixed_bytes"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"PredictorCost.{name} must be finite and >= 0, got {value}")
        if self.launches < 0 or self.invocations < 1:
            raise ValueError(
                f"PredictorCost: launches must be >= 0 and invocations >= 1, got "
                f"{self.launches} / {self.invocations}"
            )

    @property
    def on_critical_path(self) -> bool:
        """Pass as ``batch_cost(predictor_on_critical_path=...)``: the time adds fully."""
        return self.where == "gpu_critical"

    def invocation_work(self, tokens: float) -> tuple[float, float]:
        """``(flops, bytes)`` of one invocation for a batch of ``tokens`` tokens."""
        units = float(tokens) if self.per == "token" else 1.0
        return units * self.flops + self.fixed_flops, units * self.bytes + self.fixed_bytes

    def batch_work(self, tokens: float) -> tuple[float, float]:
        """``(flops, bytes)`` summed over all invocations of one batch of ``tokens`` tokens."""
        f, b = self.invocation_work(tokens)
        return f * self.invocations, b * self.invocations

    def to_dict(self) -> dict:
        return asdict(self)


def price(cost: PredictorCost, gpu: GPUProfile, tokens: float) -> float:
    """Seconds per batch of ``tokens`` tokens on ``gpu``: ``invocations * op_time(...)``.

    Uses :func:`gps.cost.roofline.op_time`, the same roofline as the cost model, for every
    predictor (a CPU-side predictor is priced as if its work ran on the GPU; where it runs
    only decides whether the cost model hides it, see :attr:`PredictorCost.where`).
    """
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    f, b = cost.invocation_work(tokens)
    launches = cost.launches if cost.where == "gpu_critical" else 0
    return float(op_time(f, b, gpu, cost.dtype, launches)) * cost.invocations


def layer_overhead_s(
    cost: PredictorCost, gpu: GPUProfile, tokens: float, num_moe_layers: int
) -> np.ndarray:
    """``[L_moe]`` seconds for ``batch_cost(predictor_overhead_s=...)``.

    A per-layer predictor (``invocations == num_moe_layers``) costs the same on every layer; a
    once-per-batch one (``invocations == 1``) sits on layer 0. Pass
    ``predictor_on_critical_path=cost.on_critical_path`` alongside.
    """
    if cost.invocations not in (1, num_moe_layers):
        raise ValueError(
            f"cost.invocations={cost.invocations} must be 1 or num_moe_layers={num_moe_layers}"
        )
    per_call = price(cost, gpu, tokens) / cost.invocations
    out = np.zeros(num_moe_layers)
    if cost.invocations == 1:
        out[0] = per_call
    else:
        out[:] = per_call
    return out


# --------------------------------------------------------------------------- base classes


class DistributionPredictor(BaseEstimator):
    """Predicts the next batch's per-layer expert-load distribution ``[L, E]`` (rows sum to 1).

    ``input_kind = "loads"``: ``fit(history [N, L, E])``, ``predict(history) -> [L, E]``,
    ``predict_rolling(loads, start, horizon) -> [N - start, L, E]``.
    ``input_kind = "tokens"``: fitted on a :class:`TokenTrace`, predicts from the current
    batch's token ids (see :class:`predictors.distribution.TokenIdDistributionPredictor`).
    """

    family = "distribution"
    input_kind = "loads"
    synthetic = False

    def cost(self) -> PredictorCost:  # pragma: no cover - abstract
        raise NotImplementedError


class TokenPredictor(BaseEstimator):
    """Predicts every token's top-k experts: ``fit(trace)``, ``predict(trace) -> [T, L, k]`` int16.

    Predicted ids are distinct within a token and layer, best first.
    """

    family = "token"
    synthetic = False

    def cost(self) -> PredictorCost:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------- input checks


def proportions(loads: np.ndarray) -> np.ndarray:
    """Counts (or weights) ``[..., E]`` -> proportions along the last axis (float64).

    Rows with zero total become uniform ``1/E`` (documented fallback).
    """
    loads = np.asarray(loads, dtype=float)
    total = loads.sum(axis=-1, keepdims=True)
    e = loads.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, loads / np.where(total > 0, total, 1.0), 1.0 / e)
    return out


def check_loads(
    loads: object, name: str, *, num_layers: int | None = None, num_experts: int | None = None
) -> np.ndarray:
    """Validate a ``[N, L, E]`` load history (counts or proportions) and return it as float64.

    Raises:
        ValueError: not 3-D, empty (``N == 0``), non-numeric, negative or non-finite values,
            or ``L`` / ``E`` different from the fitted ones; the message names ``name``.
    """
    arr = np.asarray(loads)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name}: expected a numeric [N, L, E] array, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected shape [N, L, E], got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty history (N = 0); need at least one batch")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name}: L and E must be >= 1, got shape {arr.shape}")
    arr = arr.astype(float, copy=False)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}: loads must be finite and >= 0")
    if num_layers is not None and arr.shape[1] != num_layers:
        raise ValueError(
            f"{name}: {arr.shape[1]} layers, but the predictor was fit on {num_layers}"
        )
    if num_experts is not None and arr.shape[2] != num_experts:
        raise ValueError(
            f"{name}: {arr.shape[2]} experts, but the predictor was fit on {num_experts}"
        )
    return arr


@contextmanager
def expected_warnings_silenced() -> Iterator[None]:
    """Silence the warnings the predictors expect: an MLP stopped by its ``max_iter`` budget
    (``ConvergenceWarning``, a deliberate budget) and LightGBM fitted on plain arrays ("X does
    not have valid feature names").

    ``warnings.catch_warnings`` saves and restores the one process-wide filter list, so it is
    not thread-safe: code that fits predictors in several threads (the advisor) also enters
    this once on its own thread around all of them, so that every saved list silences them.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        yield


def check_trace(
    trace: object,
    name: str = "trace",
    *,
    num_layers: int | None = None,
    num_experts: int | None = None,
    need_tokens: bool = True,
) -> TokenTrace:
    """Check a :class:`TokenTrace` argument (type, non-empty, ``L``/``E`` as fitted)."""
    if not isinstance(trace, TokenTrace):
        raise ValueError(f"{name}: expected a gps.traces.TokenTrace, got {type(trace).__name__}")
    if trace.experts.ndim != 3:
        raise ValueError(f"{name}: experts must be [T, L, k], got shape {trace.experts.shape}")
    if need_tokens and trace.num_tokens == 0:
        raise ValueError(f"{name}: the trace has no tokens")
    if num_experts is not None and trace.num_experts != num_experts:
        raise ValueError(
            f"{name}: num_experts={trace.num_experts}, but the predictor was fit on {num_experts}"
        )
    if num_layers is not None and trace.num_layers != num_layers:
        raise ValueError(
            f"{name}: {trace.num_layers} layers, but the predictor was fit on {num_layers}"
        )
    return trace


def _topk_by_argmax(scores: np.ndarray, k: int) -> np.ndarray:
    """``topk_from_scores`` for small ``k`` and NaN-free scores: ``k`` rounds of ``argmax``
    (first maximum = lower id on ties, as the stable sort), each winner masked to ``-inf``.
    A round whose maximum is ``-inf`` takes the lowest id not taken yet (the stable sort's
    order among ``-inf`` scores)."""
    work = np.array(scores, copy=True)
    taken = np.zeros(scores.shape, dtype=bool)
    out = np.empty((*scores.shape[:-1], k), dtype=np.int16)
    for j in range(k):
        idx = np.argmax(work, axis=-1)[..., None]
        if j:
            stuck = np.take_along_axis(work, idx, axis=-1) == -np.inf
            if stuck.any():
                idx = np.where(stuck, np.argmin(taken, axis=-1)[..., None], idx)
        out[..., j] = idx[..., 0]
        np.put_along_axis(work, idx, -np.inf, axis=-1)
        np.put_along_axis(taken, idx, True, axis=-1)
    return out


def unique_counts(flat: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(flat, return_counts=True)`` for int64 ``flat`` in ``[0, size)``: one
    ``bincount`` (no sort) while ``size`` is at most ``max(4 * flat.size, 2**24)``."""
    if size <= max(4 * flat.size, 1 << 24):
        counts = np.bincount(flat, minlength=size)
        key = np.flatnonzero(counts)
        return key, counts[key]
    return np.unique(flat, return_counts=True)


def topk_from_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """``[..., E]`` scores -> ``[..., k]`` int16 ids of the ``k`` largest, best first.

    Ties go to the lower expert id, so results are deterministic. For ``E > 32`` a
    partition (threshold = the ``k``-th largest value) replaces the full sort.
    """
    e = scores.shape[-1]
    k = min(int(k), e)
    if e <= 32 or k == e:
        if k <= 4 and k < e and scores.dtype.kind == "f" and not np.isnan(scores).any():
            return _topk_by_argmax(scores, k)
        return np.argsort(-scores, axis=-1, kind="stable")[..., :k].astype(np.int16)
    flat = scores.reshape(-1, e)
    thr = -np.partition(-flat, k - 1, axis=-1)[:, k - 1 : k]  # k-th largest per row
    above = flat > thr
    tie = flat == thr
    need = k - above.sum(axis=-1, keepdims=True)
    chosen = above | (tie & (np.cumsum(tie, axis=-1) <= need))  # lowest-id ties first
    ids = np.nonzero(chosen)[1].reshape(-1, k)  # exactly k per row, in id order
    order = np.argsort(-np.take_along_axis(flat, ids, axis=-1), axis=-1, kind="stable")
    out = np.take_along_axis(ids, order, axis=-1)
    return out.reshape(*scores.shape[:-1], k).astype(np.int16)
