"""Hidden-state router predictor: a linear or two-layer map from the activations that enter an
MoE layer to that layer's expert scores; the ``k`` best are predicted.

This is how the literature builds accurate Token-to-Expert predictors (pre-attention expert
routers, arXiv 2511.10676; Pre-gated MoE, ISCA 2024; the next-layer heads of speculative
prefetching): they read the token's hidden state, not its id. Training data is a
:class:`~gps.traces.TokenTrace` that carries ``hidden [T, H, d]`` (see ``gps/traces/trace.py``).

Overhead (:func:`router_cost`): the GEMMs the map runs, per token and MoE layer, before the
layer's experts are needed: ``2 * sum(in * out)`` FLOPs over consecutive ``widths``, its bf16
weights read once per layer, activations read and written once (counted, not fused).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from gps.traces.trace import TokenTrace
from predictors.base import (
    PredictorCost,
    check_trace,
    expected_warnings_silenced,
    topk_from_scores,
)
from predictors.token import _check_int, _FittedShape, _subsample_rows

_EXPERT_ID_BYTES = 2.0  # int16 expert id written per predicted slot
_ACTIVATIONS = ("identity", "relu")


def router_cost(
    widths: Sequence[int],
    *,
    top_k: int,
    invocations: int,
    element_bytes: float = 2.0,
    dtype: str = "bf16",
    note: str = "",
) -> PredictorCost:
    """Roofline work of a GEMM chain ``widths = [d, h_1, ..., E]`` run on every token.

    Per token and invocation: FLOPs ``2 * sum(w_i * w_{i+1})``; bytes
    ``element_bytes * (d + 2 * sum(hidden widths) + 2 * E) + 2 * top_k`` (input read, each
    hidden activation written and read back, scores written and read by the top-k, ``k``
    int16 ids written). Per invocation, independent of tokens: the weights and biases,
    ``element_bytes * (sum(w_i * w_{i+1}) + sum(w_1..))`` bytes. One kernel per GEMM,
    ``where="gpu_critical"``, ``per="token"``.

    Example: ``widths=[2048, h, 64]``, ``T`` tokens -> ``2 * T * (2048 * h + h * 64)`` FLOPs
    per invocation.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must list >= 2 positive sizes [d, ..., E], got {widths}")
    macs = sum(a * b for a, b in itertools.pairwise(widths))
    hidden = sum(widths[1:-1])
    return PredictorCost(
        flops=2.0 * macs,
        bytes=element_bytes * (widths[0] + 2 * hidden + 2 * widths[-1]) + _EXPERT_ID_BYTES * top_k,
        per="token",
        where="gpu_critical",
        launches=len(widths) - 1,
        invocations=int(invocations),
        fixed_bytes=element_bytes * (macs + sum(widths[1:])),
        dtype=dtype,
        note=note or f"GEMM chain {widths}: 2*sum(in*out) FLOPs per token and layer",
    )


def hidden_slices(trace: TokenTrace, lookahead: int) -> dict[int, int]:
    """``{target MoE layer l: index j into trace.hidden}`` with
    ``trace.hidden_layers[j] == l - lookahead`` (the activations the router reads for ``l``)."""
    if trace.hidden is None or trace.hidden_layers is None:
        raise ValueError(
            "trace: no hidden activations (TokenTrace.hidden is None); record them with "
            "gps-trace record --save-hidden LAYERS or attach them before fitting a hidden-state "
            "router"
        )
    layers = np.asarray(trace.hidden_layers, dtype=np.int64)
    return {
        int(src) + lookahead: j
        for j, src in enumerate(layers)
        if 0 <= int(src) + lookahead < trace.num_layers
    }


class HiddenStateRouterPredictor(_FittedShape):
    """Per-layer router from hidden activations to expert scores (scikit-learn ``MLPClassifier``).

    For each MoE layer ``l`` whose activations the trace carries (``trace.hidden_layers`` holds
    ``l - lookahead``): inputs standardised per dimension (``StandardScaler``; the affine map
    folds into the first GEMM at deployment, so it costs nothing extra), then a linear map
    ``d -> E`` (``hidden_units=0``) or two maps ``d -> hidden_units -> E`` (``activation``:
    ``"identity"``, two linear functions as the pre-attention routers, or ``"relu"``). Outputs
    ``E`` sigmoid scores trained with binary cross-entropy on the token's true top-k set
    (multi-label targets); the ``k`` highest are predicted. Layers without activations fall
    back to the fit trace's most popular top-k (``coverage_`` lists the covered ones).

    ``lookahead=0`` reads the activations entering layer ``l`` itself (pre-attention: the
    prediction is ready before layer ``l``'s attention finishes); ``lookahead=1`` reads those
    entering layer ``l - 1`` (Pre-gated MoE style: a whole layer ahead).

    At most ``max_train_samples`` tokens per layer (drawn with ``seed``); training stops after
    ``max_iter`` epochs (the ``ConvergenceWarning`` is silenced: a deliberate budget). One
    BLAS thread, as :class:`~predictors.token.MLPTokenPredictor`.

    Overhead: :func:`router_cost` of ``[d, hidden_units, E]`` (or ``[d, E]``), per token and
    MoE layer, on all ``L`` layers (a deployment trains one per layer).
    """

    def __init__(
        self,
        hidden_units: int = 0,
        activation: str = "identity",
        lookahead: int = 0,
        max_iter: int = 30,
        max_train_samples: int = 20_000,
        learning_rate_init: float = 1e-2,
        alpha: float = 1e-4,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.hidden_units = hidden_units
        self.activation = activation
        self.lookahead = lookahead
        self.max_iter = max_iter
        self.max_train_samples = max_train_samples
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.batch_size = batch_size
        self.seed = seed

    def _check_params(self) -> None:
        _check_int(self.hidden_units, "hidden_units", 0)
        _check_int(self.lookahead, "lookahead", 0)
        _check_int(self.max_iter, "max_iter", 1)
        _check_int(self.batch_size, "batch_size", 1)
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")

    def fit(self, trace: TokenTrace, y: None = None) -> HiddenStateRouterPredictor:
        self._check_params()
        cap = _check_int(self.max_train_samples, "max_train_samples", 1)
        trace = self._fit_shape(trace)
        slices = hidden_slices(trace, self.lookahead)
        if not slices:
            raise ValueError(
                f"trace: hidden_layers {np.asarray(trace.hidden_layers).tolist()} with "
                f"lookahead={self.lookahead} cover none of the {trace.num_layers} MoE layers"
            )
        self.hidden_size_ = int(trace.hidden.shape[2])
        self.hidden_layers_ = np.asarray(trace.hidden_layers, dtype=np.int64)
        self.coverage_ = sorted(slices)
        self.models_: dict[int, tuple[StandardScaler, MLPClassifier]] = {}
        sizes = (self.hidden_units,) if self.hidden_units else ()
        for layer in self.coverage_:
            rows = _subsample_rows(trace.num_tokens, cap, self.seed + layer)
            x = np.asarray(trace.hidden[rows, slices[layer]], dtype=np.float32)
            target = np.zeros((rows.size, self.num_experts_), dtype=np.int8)
            np.put_along_axis(target, np.asarray(trace.experts[rows, layer], np.int64), 1, axis=1)
            scaler = StandardScaler().fit(x)
            model = MLPClassifier(
                hidden_layer_sizes=sizes, activation=self.activation, max_iter=self.max_iter,
                learning_rate_init=self.learning_rate_init, alpha=self.alpha,
                batch_size=self.batch_size, random_state=self.seed + layer,
            )  # fmt: skip
            with expected_warnings_silenced(), threadpool_limits(1, user_api="blas"):
                model.fit(scaler.transform(x), target)
            self.models_[layer] = (scaler, model)
        return self

    def predict(self, trace: TokenTrace) -> np.ndarray:
        """``[T, L, k]``; covered layers from ``trace.hidden``, the others popularity."""
        check_is_fitted(self, "models_")
        trace = check_trace(
            trace, "trace", num_layers=self.num_layers_, num_experts=self.num_experts_
        )
        slices = hidden_slices(trace, self.lookahead)
        missing = [layer for layer in self.coverage_ if layer not in slices]
        if missing:
            raise ValueError(f"trace: no hidden activations for fitted layers {missing}")
        if trace.hidden.shape[2] != self.hidden_size_:
            raise ValueError(
                f"trace: hidden size {trace.hidden.shape[2]}, but the predictor was fit on "
                f"{self.hidden_size_}"
            )
        t = trace.num_tokens
        out = np.empty((t, self.num_layers_, self.top_k_), dtype=np.int16)
        out[:] = self.popular_topk_[None]
        step = 1 << 15
        with threadpool_limits(1, user_api="blas"):
            for layer, (scaler, model) in self.models_.items():
                for i in range(0, t, step):
                    x = np.asarray(trace.hidden[i : i + step, slices[layer]], dtype=np.float32)
                    scores = model.predict_proba(scaler.transform(x))
                    scores = scores + 1e-9 * self.popularity_[layer]  # ties -> the more popular
                    out[i : i + step, layer] = topk_from_scores(scores, self.top_k_)
        return out

    def widths(self) -> list[int]:
        """``[d, hidden_units, E]`` or ``[d, E]`` of the fitted map."""
        check_is_fitted(self, "models_")
        mid = [self.hidden_units] if self.hidden_units else []
        return [self.hidden_size_, *mid, self.num_experts_]

    def cost(self) -> PredictorCost:
        return router_cost(
            self.widths(), top_k=self.top_k_, invocations=self.num_layers_,
            note=(f"router {self.widths()} on hidden activations: 2*sum(in*out) FLOPs per "
                  "token and MoE layer, bf16 weights read once per layer"),
        )  # fmt: skip
