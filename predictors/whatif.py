"""What-if predictors for sweeps: **synthetic**, they read the truth and degrade it on purpose.

They answer "what if a predictor were this accurate and cost this much?" and are never
measured accuracy: ``synthetic = True`` marks them in every report. Their overhead is a
parameter so sweeps can vary it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.utils.validation import check_is_fitted

from gps.traces.trace import TokenTrace
from predictors.base import (
    DistributionPredictor,
    PredictorCost,
    TokenPredictor,
    check_loads,
    check_trace,
    proportions,
    topk_from_scores,
)
from predictors.token import expert_counts

_CHUNK = 1 << 21  # (token, layer, expert) random keys per chunk


def _check_where(where: str) -> None:
    if where not in ("gpu_critical", "cpu_offpath"):
        raise ValueError(f"where must be 'gpu_critical' or 'cpu_offpath', got {where!r}")


class WhatIfTokenPredictor(TokenPredictor):
    """Synthetic Token-to-Expert predictor with top-k hit rate ``accuracy`` (in expectation).

    ``predict(trace)`` reads the trace's *true* experts: each is kept with probability
    ``accuracy``; otherwise it is replaced by a wrong expert (not in the token's true top-k)
    drawn with probability proportional to the expert's popularity in the fit trace at that
    layer (plus a floor of ``1e-6`` so rarely used experts stay possible), without repeats
    within the token (Gumbel-top-k). If a layer has fewer than ``k`` non-true experts
    (``E < 2k``) a slot with no wrong expert left keeps its true expert.

    Overhead: ``flops_per_token`` / ``bytes_per_token`` per token per MoE layer, run before
    each MoE layer (``invocations = L``) at ``where``.
    """

    synthetic = True

    def __init__(
        self,
        accuracy: float = 0.9,
        seed: int = 0,
        flops_per_token: float = 0.0,
        bytes_per_token: float = 0.0,
        where: str = "gpu_critical",
    ) -> None:
        self.accuracy = accuracy
        self.seed = seed
        self.flops_per_token = flops_per_token
        self.bytes_per_token = bytes_per_token
        self.where = where

    def fit(self, trace: TokenTrace, y: None = None) -> WhatIfTokenPredictor:
        """Learn per-layer popularity (the wrong experts' weights) and ``L``, ``E``, ``k``."""
        if not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1], got {self.accuracy!r}")
        _check_where(self.where)
        trace = check_trace(trace)
        self.num_layers_, self.num_experts_, self.top_k_ = (
            trace.num_layers,
            trace.num_experts,
            trace.top_k,
        )
        self.popularity_ = proportions(expert_counts(trace.experts, trace.num_experts))
        return self

    def predict(self, trace: TokenTrace) -> np.ndarray:
        """``[T, L, k]`` int16: the true experts, each wrong with probability ``1 - accuracy``."""
        out = np.empty(trace.experts.shape, dtype=np.int16)
        for i, tr, draws in self._draws(trace):
            out[i : i + tr.shape[0]] = self._guess(tr, draws, self.accuracy)[0]
        return out

    def predict_splits(
        self, trace: TokenTrace, accuracies: Sequence[float], batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(guessed, hit)``, each ``[A, N, L, E]`` int64, in one pass over the trace: for
        each accuracy ``a``, ``guessed`` is ``expert_histogram`` of what ``predict`` returns with
        ``accuracy=a`` (same ``seed``), and ``hit`` counts the true copies per expert that the
        guess names for their token (``predictors.splits.split_copies``'s ``hit``).

        The random draws do not depend on the accuracy (it only sets the keep threshold), so
        the Gumbel keys and the ranked wrong experts are drawn once for the whole grid."""
        accuracies = [float(a) for a in accuracies]
        for a in accuracies:
            if not 0.0 <= a <= 1.0:
                raise ValueError(f"accuracy must be in [0, 1], got {a!r}")
        t, layers, _ = trace.experts.shape
        n, e = t // batch_size, self.num_experts_
        if n == 0:
            raise ValueError(f"{t} tokens, fewer than batch_size={batch_size}")
        size = n * layers * e
        counts = np.zeros(2 * len(accuracies) * size, dtype=np.int64)  # [guessed | hit] per a
        layer_off = (np.arange(layers) * e)[None, :, None]
        for i, tr, draws in self._draws(trace):
            c = min(tr.shape[0], max(n * batch_size - i, 0))  # partial tail batch dropped
            if c == 0:
                break
            tr, draws = tr[:c], tuple(d[:c] for d in draws)
            base = ((i + np.arange(c)) // batch_size)[:, None, None] * (layers * e) + layer_off
            for j, a in enumerate(accuracies):
                guess, named = self._guess(tr, draws, a)
                # a guess names a true copy only where it kept that slot: a replacement is
                # never one of the token's true experts (their keys are -inf)
                counts += np.bincount(  # guesses and hits; a dropped copy (-1) counts nowhere
                    np.concatenate([(2 * j * size + base + guess)[guess >= 0],
                                    ((2 * j + 1) * size + base + tr)[named & (tr >= 0)]]),
                    minlength=counts.size,
                )  # fmt: skip
        counts = counts.reshape(len(accuracies), 2, n, layers, e)
        return counts[:, 0], counts[:, 1]

    def _draws(self, trace: TokenTrace):
        """Yield ``(first token, true [c, L, k] int64, draws)`` chunk by chunk; ``draws`` =
        (keep draws ``u [c, L, k]``, ranked wrong experts ``[c, L, k]``, which are valid)."""
        check_is_fitted(self, "popularity_")
        trace = check_trace(
            trace, "trace", num_layers=self.num_layers_, num_experts=self.num_experts_
        )
        rng = np.random.default_rng(self.seed)
        true = np.asarray(trace.experts, dtype=np.int64)
        t, layers, k = true.shape
        e = self.num_experts_
        log_w = np.log(self.popularity_ + 1e-6)[None]  # [1, L, E]
        step = max(1, _CHUNK // (layers * e))
        for i in range(0, t, step):  # chunks bound the [chunk, L, E] keys
            tr = true[i : i + step]
            u = rng.random(tr.shape)  # keep draw: kept iff u < accuracy
            keys = log_w - np.log(-np.log(rng.random((tr.shape[0], layers, e))))  # Gumbel
            # the token's true experts are never a wrong guess (a dropped copy, -1, names none)
            if (tr < 0).any():
                keys = np.concatenate([keys, np.zeros_like(keys[..., :1])], axis=-1)
                np.put_along_axis(keys, np.where(tr >= 0, tr, e), -np.inf, axis=-1)
                keys = keys[..., :e]
            else:
                np.put_along_axis(keys, tr, -np.inf, axis=-1)
            cand = topk_from_scores(keys, k).astype(np.int64)  # wrong experts, ranked
            valid = np.isfinite(np.take_along_axis(keys, cand, axis=-1))
            yield i, tr, (u, cand, valid)

    @staticmethod
    def _guess(tr: np.ndarray, draws: tuple, accuracy: float) -> tuple[np.ndarray, np.ndarray]:
        """``(guess [c, L, k], kept [c, L, k] bool)`` at ``accuracy``: slot ``j`` keeps the true
        expert iff ``u < accuracy`` (or no wrong expert is left); the ``j``-th dropped slot of a
        (token, layer) gets the ``j``-th ranked wrong expert."""
        u, cand, valid = draws
        keep = u < accuracy
        rank = np.clip(np.cumsum(~keep, axis=-1) - 1, 0, tr.shape[-1] - 1)  # j-th dropped slot
        kept = keep | ~np.take_along_axis(valid, rank, axis=-1)
        return np.where(kept, tr, np.take_along_axis(cand, rank, axis=-1)), kept

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "popularity_")
        busy = self.flops_per_token > 0 or self.bytes_per_token > 0
        return PredictorCost(
            flops=float(self.flops_per_token), bytes=float(self.bytes_per_token), per="token",
            where=self.where, launches=int(busy), invocations=self.num_layers_,  # type: ignore[arg-type]
            note="synthetic: overhead set by parameters",
        )  # fmt: skip


class WhatIfDistributionPredictor(DistributionPredictor):
    """Synthetic Distribution-Only predictor with relative error ``relative_error``.

    Each true next-batch proportion is multiplied by log-normal noise of mean 1 and relative
    standard deviation ``relative_error`` (``sigma^2 = log(1 + relative_error^2)``), then each
    (batch, layer) row is renormalised (so the realised relative error is close to, not
    exactly, the set one). The error does not grow with the horizon (``horizon`` is accepted
    and ignored). ``predict`` needs the truth: ``predict(true_next=[L, E])``.

    Overhead: ``flops_per_batch`` / ``bytes_per_batch`` once per batch at ``where``.
    """

    synthetic = True

    def __init__(
        self,
        relative_error: float = 0.1,
        seed: int = 0,
        flops_per_batch: float = 0.0,
        bytes_per_batch: float = 0.0,
        where: str = "cpu_offpath",
    ) -> None:
        self.relative_error = relative_error
        self.seed = seed
        self.flops_per_batch = flops_per_batch
        self.bytes_per_batch = bytes_per_batch
        self.where = where

    def fit(self, history: np.ndarray, y: None = None) -> WhatIfDistributionPredictor:
        """Record ``L`` and ``E`` of ``history [N, L, E]``."""
        if not self.relative_error >= 0:
            raise ValueError(f"relative_error must be >= 0, got {self.relative_error!r}")
        _check_where(self.where)
        h = check_loads(history, "history")
        self.num_layers_, self.num_experts_ = int(h.shape[1]), int(h.shape[2])
        return self

    def _noisy(self, true: np.ndarray) -> np.ndarray:
        p = proportions(true)
        sigma = np.sqrt(np.log1p(float(self.relative_error) ** 2))
        z = np.random.default_rng(self.seed).standard_normal(p.shape)
        return proportions(p * np.exp(sigma * z - 0.5 * sigma**2))

    def predict(self, history: np.ndarray | None = None, *, true_next: np.ndarray) -> np.ndarray:
        """``[L, E]``: ``true_next`` (the batch being predicted) with the set error."""
        check_is_fitted(self, "num_experts_")
        true = check_loads(
            np.asarray(true_next)[None],
            "true_next",
            num_layers=self.num_layers_,
            num_experts=self.num_experts_,
        )
        return self._noisy(true)[0]

    def predict_rolling(self, loads: np.ndarray, start: int, horizon: int = 1) -> np.ndarray:
        """``[N - start, L, E]``: ``loads[start:]`` with the set error (``horizon`` ignored)."""
        check_is_fitted(self, "num_experts_")
        arr = check_loads(
            loads, "loads", num_layers=self.num_layers_, num_experts=self.num_experts_
        )
        if not 0 <= start <= arr.shape[0]:
            raise ValueError(f"start must be in [0, N={arr.shape[0]}], got {start}")
        return self._noisy(arr[start:])

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "num_experts_")
        busy = self.flops_per_batch > 0 or self.bytes_per_batch > 0
        return PredictorCost(
            flops=float(self.flops_per_batch), bytes=float(self.bytes_per_batch), per="batch",
            where=self.where, launches=int(busy), invocations=1,  # type: ignore[arg-type]
            note="synthetic: overhead set by parameters",
        )  # fmt: skip
