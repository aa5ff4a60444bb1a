"""Token-to-Expert predictors: each token's top-k experts at every MoE layer, ``[T, L, k]`` int16.

All share ``fit(trace: TokenTrace)`` and ``predict(trace: TokenTrace) -> [T, L, k]`` (int16,
distinct within a (token, layer), best first; ``k`` is the fit trace's). ``predict`` reads
only the trace's token features (``token_id``, ``position``) and, for the previous-layer
models, the *actual* experts at layer ``l - 1`` (known once layer ``l - 1``'s gate ran) —
never the experts at the layer being predicted.

Overhead (MoE-GPS placement): every token predictor runs on the GPU **before the attention
block of each MoE layer**, on the critical path: ``where="gpu_critical"``,
``invocations = L``, ``per="token"``; the counts below are per token per MoE layer.
"""

from __future__ import annotations

import dataclasses
import itertools

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from gps.traces.trace import TokenTrace
from predictors.base import (
    PredictorCost,
    TokenPredictor,
    check_trace,
    expected_warnings_silenced,
    proportions,
    topk_from_scores,
    unique_counts,
)
from predictors.distribution import tree_comparisons

_ID_BYTES = 4.0  # int32 token id / feature
_EXPERT_BYTES = 2.0  # int16 expert id
_ROWS_PER_CHUNK = 1 << 16  # (token, layer) rows per model call
_DENSE_TABLE = 1 << 24  # TokenIdTablePredictor: dense [U, L, E] counts up to this many cells


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def expert_counts(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """``[T, L, k]`` expert ids -> ``[L, E]`` int64 counts of each expert per layer."""
    ids = np.asarray(experts)
    if ids.size and (ids.min() < 0 or ids.max() >= num_experts):
        raise ValueError(f"expert ids outside [0, {num_experts})")
    layers = ids.shape[1]
    flat = (np.arange(layers, dtype=np.int64)[None, :, None] * num_experts + ids).ravel()
    return np.bincount(flat, minlength=layers * num_experts).reshape(layers, num_experts)


class _FittedShape(TokenPredictor):
    """Records ``L``, ``E``, ``k`` and per-layer popularity on fit; checks them on predict."""

    def _fit_shape(self, trace: TokenTrace) -> TokenTrace:
        trace = check_trace(trace)
        self.num_layers_ = trace.num_layers
        self.num_experts_ = trace.num_experts
        self.top_k_ = trace.top_k
        self.popularity_ = proportions(expert_counts(trace.experts, trace.num_experts))
        self.popular_topk_ = topk_from_scores(self.popularity_, self.top_k_)  # [L, k]
        return trace

    def _check_predict(self, trace: TokenTrace) -> TokenTrace:
        check_is_fitted(self, "popularity_")
        return check_trace(
            trace, "trace", num_layers=self.num_layers_, num_experts=self.num_experts_
        )

    def _popular(self, t: int) -> np.ndarray:
        return np.broadcast_to(self.popular_topk_, (t, *self.popular_topk_.shape)).copy()


class PopularityTokenPredictor(_FittedShape):
    """Baseline: every token gets its layer's ``k`` most popular experts of the fit trace."""

    def fit(self, trace: TokenTrace, y: None = None) -> PopularityTokenPredictor:
        self._fit_shape(trace)
        return self

    def predict(self, trace: TokenTrace) -> np.ndarray:
        trace = self._check_predict(trace)
        return self._popular(trace.num_tokens)

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "popularity_")
        k = self.top_k_
        return PredictorCost(
            flops=0.0, bytes=_EXPERT_BYTES * k, per="token", where="gpu_critical",
            launches=1, invocations=self.num_layers_, note="fill k constant int16 ids",
        )  # fmt: skip


class TokenIdTablePredictor(_FittedShape):
    """Per (token id, layer): the ``k`` experts the id was routed to most often in fit.

    Ties go to the more popular expert, then the lower id; an id seen with fewer than ``k``
    experts at a layer is filled with the layer's most popular others. **Fallback**: ids
    unseen in fit (and ``-1``) get the layer's popular top-k. Counting is dense while
    ``ids seen * L * E <= 2**24``, sparse beyond (memory ``O(T * L * k)``); the table is
    ``[ids seen, L, k]`` int16.
    Overhead: a gather from a ``[V, L, k]`` int16 table (bytes only).
    """

    def fit(self, trace: TokenTrace, y: None = None) -> TokenIdTablePredictor:
        trace = self._fit_shape(trace)
        ids = np.asarray(trace.token_id, dtype=np.int64)
        known = ids >= 0
        vocab, inv = np.unique(ids[known], return_inverse=True)
        layers, e, k = self.num_layers_, self.num_experts_, self.top_k_
        experts = np.asarray(trace.experts[known], dtype=np.int64)
        flat = (inv[:, None, None] * layers + np.arange(layers)[None, :, None]) * e + experts
        if vocab.size * layers * e <= _DENSE_TABLE:
            table = self._dense_table(flat.ravel(), vocab.size)
        else:
            table = self._sparse_table(flat.ravel(), vocab.size)
        self.vocab_ = vocab
        self.table_ = table.reshape(vocab.size, layers, k)  # [U, L, k]
        return self

    def _dense_table(self, flat: np.ndarray, vocab_size: int) -> np.ndarray:
        """``[U*L, k]`` table from dense ``[U*L, E]`` counts (one bincount, no sort): the same
        candidates, scores and tie order as ``_sparse_table``."""
        layers, e, k = self.num_layers_, self.num_experts_, self.top_k_
        counts = np.bincount(flat, minlength=vocab_size * layers * e).reshape(-1, layers, e)
        score = counts + 0.5 * self.popularity_[None]
        popular = np.zeros((layers, e), dtype=bool)
        np.put_along_axis(popular, self.popular_topk_.astype(np.int64), True, axis=1)
        score[(counts == 0) & ~popular[None]] = -np.inf  # neither observed nor a fill
        return topk_from_scores(score.reshape(-1, e), k)

    def _sparse_table(self, flat: np.ndarray, vocab_size: int) -> np.ndarray:
        """``[U*L, k]`` table from sparse counts (large ``U * L * E``): candidates are every
        observed expert (score ``count + 0.5 * popularity >= 1``) and the layer's popular
        top-k (score ``0.5 * popularity < 1``) to fill groups with fewer than ``k``."""
        layers, e, k = self.num_layers_, self.num_experts_, self.top_k_
        key, count = unique_counts(flat, vocab_size * layers * e)
        groups = np.arange(vocab_size * layers)
        fill = (groups[:, None] * e + self.popular_topk_[groups % layers]).ravel()
        key = np.concatenate([key, fill])
        score = np.concatenate([count, np.zeros(fill.size)])
        score = score + 0.5 * self.popularity_.ravel()[key % (layers * e)]
        first = np.lexsort((-score, key))  # per key, highest score first
        keep = np.ones(key.size, dtype=bool)
        keep[1:] = key[first][1:] != key[first][:-1]
        key, score = key[first][keep], score[first][keep]
        group, expert = key // e, key % e
        order = np.lexsort((expert, -score, group))  # best first, ties -> lower id
        group, expert = group[order], expert[order]
        start = np.searchsorted(group, groups)
        rank = np.arange(group.size) - start[group]
        take = rank < k
        table = np.empty((vocab_size * layers, k), dtype=np.int16)
        table[group[take], rank[take]] = expert[take]
        return table

    def lookup(self, token_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[T]`` ids -> (``[T, L, k]`` predictions, ``[T]`` bool seen-in-fit)."""
        check_is_fitted(self, "table_")
        ids = np.asarray(token_id, dtype=np.int64)
        out = self._popular(ids.size)
        if self.vocab_.size == 0:
            return out, np.zeros(ids.size, dtype=bool)
        pos = np.minimum(np.searchsorted(self.vocab_, ids), self.vocab_.size - 1)
        seen = (ids >= 0) & (self.vocab_[pos] == ids)
        out[seen] = self.table_[pos[seen]]
        return out, seen

    def predict(self, trace: TokenTrace) -> np.ndarray:
        trace = self._check_predict(trace)
        return self.lookup(trace.token_id)[0]

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "table_")
        k = self.top_k_
        return PredictorCost(
            flops=0.0, bytes=_ID_BYTES + 2 * _EXPERT_BYTES * k, per="token",
            where="gpu_critical", launches=1, invocations=self.num_layers_,
            note="gather: read the id and k int16 table entries, write k ids",
        )  # fmt: skip


def previous_layer_experts(trace: TokenTrace) -> np.ndarray:
    """``[T, L, k]`` int64: the actual experts at layer ``l - 1``; ``-1`` at layer 0."""
    experts = np.asarray(trace.experts, dtype=np.int64)
    prev = np.full(experts.shape, -1, dtype=np.int64)
    prev[:, 1:] = experts[:, :-1]
    return prev


class PreviousLayerPredictor(_FittedShape):
    """Previous-layer conditional: layer ``l``'s experts given the actual experts at ``l - 1``.

    Fit estimates, per layer ``l`` and previous-layer slot ``s`` (gate rank),
    ``P_{l,s}(e | j)``: how often expert ``e`` is among layer ``l``'s top-k when ``j`` was the
    token's slot-``s`` expert at layer ``l - 1`` (additively smoothed toward layer ``l``'s
    popularity with weight ``smoothing``; each row sums to ``k``). A token's score for ``e`` is
    ``sum_s P_{l,s}(e | j_s)`` over its ``k`` previous experts (a sum of per-slot marginals:
    exact for slot-wise maps, an approximation when layer ``l`` depends on the whole previous
    set; an uninformative slot adds a near-flat row and barely changes the ranking); the top-k
    scores are predicted. Layer 0 has no previous layer: ``first_layer="table"`` uses the
    token-id table (ids unseen -> popularity), ``"popularity"`` the popular top-k.

    Overhead: per token and layer gather ``k`` rows of ``E`` fp32, add them (``k*E`` FLOPs) and
    pick the top-k (counted as ``k*E`` comparisons). It runs once layer ``l - 1``'s gate has
    chosen, before layer ``l``'s attention.
    """

    def __init__(self, first_layer: str = "table", smoothing: float = 1.0) -> None:
        self.first_layer = first_layer
        self.smoothing = smoothing

    def fit(self, trace: TokenTrace, y: None = None) -> PreviousLayerPredictor:
        if self.first_layer not in ("table", "popularity"):
            raise ValueError(
                f"first_layer must be 'table' or 'popularity', got {self.first_layer!r}"
            )
        if not self.smoothing >= 0:
            raise ValueError(f"smoothing must be >= 0, got {self.smoothing!r}")
        trace = self._fit_shape(trace)
        layers, e, k = self.num_layers_, self.num_experts_, self.top_k_
        experts = np.asarray(trace.experts, dtype=np.int64)
        # counts[l, s, j, e]: tokens with j in slot s at layer l-1 and e among layer l's top-k.
        li = np.arange(1, layers)[None, :, None, None]
        si = np.arange(k)[None, None, :, None]
        flat = ((li * k + si) * e + experts[:, :-1, :, None]) * e + experts[:, 1:, None, :]
        counts = np.bincount(flat.ravel(), minlength=layers * k * e * e)
        counts = counts.reshape(layers, k, e, e)
        occurrences = counts.sum(axis=3, keepdims=True) / k  # tokens with j in slot s
        s = float(self.smoothing)
        prior = k * self.popularity_[:, None, None, :]
        self.conditional_ = ((counts + s * prior) / (occurrences + s)).astype(np.float32)
        self.table_model_ = None  # the token-id table of layer 0 only (the one it serves)
        if self.first_layer == "table":
            first = dataclasses.replace(
                trace, experts=trace.experts[:, :1], scores=None, hidden=None, hidden_layers=None
            )
            self.table_model_ = TokenIdTablePredictor().fit(first)
        return self

    def predict(self, trace: TokenTrace) -> np.ndarray:
        """``[T, L, k]``; reads ``trace.experts[:, l - 1]`` (the actual previous layer)."""
        trace = self._check_predict(trace)
        t, layers, k = trace.num_tokens, self.num_layers_, self.top_k_
        if trace.top_k != k:
            raise ValueError(f"trace: top-k {trace.top_k}, but the predictor was fit on {k}")
        out = np.empty((t, layers, k), dtype=np.int16)
        if self.table_model_ is not None:
            out[:, 0] = self.table_model_.lookup(trace.token_id)[0][:, 0]
        else:
            out[:, 0] = self.popular_topk_[0]
        if layers > 1:
            prev = np.asarray(trace.experts[:, :-1], dtype=np.int64)  # [T, L-1, k]
            cond = self.conditional_[1:]  # [L-1, k, E, E]
            li = np.arange(layers - 1)[None, :, None]
            si = np.arange(k)[None, None, :]
            tie = 1e-9 * self.popularity_[None, 1:]  # ties -> the more popular expert
            step = max(1, (1 << 22) // (layers * k * self.num_experts_))
            for i in range(0, t, step):  # chunks bound the [chunk, L, k, E] gather
                scores = cond[li, si, prev[i : i + step]].sum(axis=2) + tie
                out[i : i + step, 1:] = topk_from_scores(scores, k)
        return out

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "conditional_")
        k, e = self.top_k_, self.num_experts_
        return PredictorCost(
            flops=2.0 * k * e, bytes=2 * _EXPERT_BYTES * k + 4.0 * k * e, per="token",
            where="gpu_critical", launches=1, invocations=self.num_layers_,
            note="gather k conditional rows of E fp32, sum (k*E) + top-k (k*E compares)",
        )  # fmt: skip


# --------------------------------------------------------------------------- learned models


def _subsample_rows(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


class LightGBMTokenPredictor(_FittedShape):
    """LightGBM multiclass classifiers on (token id, position, previous-layer experts).

    One model per MoE layer ``l`` with features: token id (categorical, ``-1`` missing),
    position, and the actual experts at layer ``l - 1`` by slot (categorical; absent at layer
    0). One training row per (token, true expert): the ``k`` experts of a token are ``k``
    rows with the same features, so the class probabilities estimate ``P(e in top-k) / k``;
    the ``k`` most probable are predicted. At most ``max_train_samples`` tokens per layer,
    drawn with ``seed``.

    Overhead assumption: one prediction walks every tree of the layer's model
    (``n_estimators * E`` for multiclass) from root to a leaf; comparisons = sum over trees of
    the mean leaf depth (counted as FLOPs, averaged over layers), per token per layer; the
    layer's trees (16 bytes per node) are read once per layer.
    """

    def __init__(
        self,
        n_estimators: int = 50,
        num_leaves: int = 15,
        learning_rate: float = 0.1,
        max_train_samples: int = 10_000,
        n_jobs: int = 1,
        seed: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.max_train_samples = max_train_samples
        self.n_jobs = n_jobs
        self.seed = seed

    def _features(self, trace: TokenTrace, layer: int, tokens: np.ndarray) -> np.ndarray:
        """``[len(tokens), 2 (+ k)]`` float features at ``layer`` (NaN = missing)."""
        ids = np.asarray(trace.token_id, dtype=float)[tokens]
        ids[ids < 0] = np.nan
        pos = np.asarray(trace.position, dtype=float)[tokens]
        if layer == 0:
            return np.column_stack([ids, pos])
        prev = np.asarray(trace.experts[tokens, layer - 1], dtype=float)
        return np.column_stack([ids, pos, prev])

    def fit(self, trace: TokenTrace, y: None = None) -> LightGBMTokenPredictor:
        trace = self._fit_shape(trace)
        cap = _check_int(self.max_train_samples, "max_train_samples", 1)
        k = self.top_k_
        self.models_: list[lgb.LGBMClassifier] = []
        for layer in range(self.num_layers_):
            tokens = _subsample_rows(trace.num_tokens, cap, self.seed + layer)
            x = self._features(trace, layer, tokens)
            labels = np.asarray(trace.experts[tokens, layer], dtype=np.int64).ravel()
            model = lgb.LGBMClassifier(
                objective="multiclass",
                n_estimators=self.n_estimators,
                num_leaves=self.num_leaves,
                learning_rate=self.learning_rate,
                min_child_samples=10,
                random_state=self.seed,
                n_jobs=self.n_jobs,
                deterministic=True,
                force_col_wise=True,
                verbose=-1,
            )
            categorical = [0] if layer == 0 else [0, *range(2, 2 + k)]
            with expected_warnings_silenced():
                model.fit(np.repeat(x, k, axis=0), labels, categorical_feature=categorical)
            self.models_.append(model)
        return self

    def predict(self, trace: TokenTrace) -> np.ndarray:
        """``[T, L, k]``; layer ``l >= 1`` reads ``trace.experts[:, l - 1]``."""
        trace = self._check_predict(trace)
        if trace.top_k != self.top_k_:
            raise ValueError(
                f"trace: top-k {trace.top_k} (previous-layer features), fit on {self.top_k_}"
            )
        t, e = trace.num_tokens, self.num_experts_
        out = np.empty((t, self.num_layers_, self.top_k_), dtype=np.int16)
        with expected_warnings_silenced():
            for layer, model in enumerate(self.models_):
                classes = np.asarray(model.classes_, dtype=np.int64)
                for i in range(0, t, _ROWS_PER_CHUNK):
                    tokens = np.arange(i, min(i + _ROWS_PER_CHUNK, t))
                    scores = np.zeros((tokens.size, e))
                    proba = model.predict_proba(self._features(trace, layer, tokens))
                    scores[:, classes] = proba.reshape(tokens.size, -1)
                    scores += 1e-9 * self.popularity_[layer]  # ties -> the more popular
                    out[tokens, layer] = topk_from_scores(scores, self.top_k_)
        return out

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "models_")
        boosters = [m.booster_ for m in self.models_]
        comparisons = float(np.mean([tree_comparisons(b) for b in boosters]))
        nodes = float(np.mean([sum(len(t) for t in _tree_sizes(b)) for b in boosters]))
        k = self.top_k_
        return PredictorCost(
            flops=comparisons, bytes=_ID_BYTES * (2 + k) + _EXPERT_BYTES * k,
            per="token", where="gpu_critical", launches=1, invocations=self.num_layers_,
            fixed_bytes=16.0 * nodes,
            note=(f"{boosters[0].num_trees()} trees per layer: sum of mean leaf depths "
                  "comparisons per token and layer; 16 B per node read once per layer"),
        )  # fmt: skip


def _tree_sizes(booster: lgb.Booster) -> list[range]:
    """Node count of every tree (``2 * leaves - 1``) as ranges (for ``len``)."""
    return [range(2 * t["num_leaves"] - 1) for t in booster.dump_model()["tree_info"]]


class MLPTokenPredictor(_FittedShape):
    """Small neural predictor (scikit-learn ``MLPClassifier``, multi-label sigmoid outputs).

    Inputs per (token, layer), sparse: one-hot hashed token id (``id_buckets`` buckets; ids
    unseen in fit share buckets with seen ones, ``-1`` sets none), one-hot layer, multi-hot
    actual experts at layer ``l - 1`` (none at layer 0), ``log1p(position) / 10``. Outputs:
    ``E`` sigmoid probabilities of ``e in top-k``; the ``k`` largest are predicted. Stands for
    the neural gate predictors of the literature (e.g. MoE-GPS's Token-to-Expert predictor).
    Training stops after ``max_iter`` epochs of Adam on mini-batches of ``batch_size`` rows
    (``None``: ``min(1024, max(64, rows // 48))``, about 48 updates an epoch on small fits, 1024
    rows on the default run's 50,000; the ``ConvergenceWarning`` is silenced: a deliberate
    budget). Fit and predict run in
    ``dtype`` (float32: scikit-learn keeps it through the network) with one BLAS thread
    (``threadpoolctl``): on these small matrices two contending threads were ~9x slower on the
    2-core dev VM. The defaults (float32, 1024-row batches, 30 epochs; before: float64, 256,
    20) cut fit + predict CPU by about half on the default run's 50,000 samples and 4.2 M
    predicted rows, with the held-out top-k hit rate 0.3590 against 0.3605
    (``benchmarks/bench_mlp_defaults.py``, docs/predictors.md): its Python loop over
    mini-batches, which holds the GIL, runs 1,470 times instead of 3,920, so the strategies
    computed beside it in the other thread wait less.

    Overhead: FLOPs ``2 * sum(layer_in * layer_out)`` per token per MoE layer (the input layer
    counted dense, as the issue prescribes; an embedding gather would be far cheaper), bf16
    weights read once per layer, activations written and read once.
    """

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (64,),
        id_buckets: int = 1024,
        max_iter: int = 30,
        max_train_samples: int = 50_000,
        learning_rate_init: float = 3e-3,
        alpha: float = 1e-4,
        seed: int = 0,
        batch_size: int | None = None,
        dtype: str = "float32",
    ) -> None:
        self.batch_size = batch_size
        self.dtype = dtype
        self.hidden_layer_sizes = hidden_layer_sizes
        self.id_buckets = id_buckets
        self.max_iter = max_iter
        self.max_train_samples = max_train_samples
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.seed = seed

    @property
    def _num_inputs(self) -> int:
        return self.id_buckets + self.num_layers_ + self.num_experts_ + 1

    def _features(self, trace: TokenTrace, prev_all: np.ndarray, rows: np.ndarray) -> sp.csr_matrix:
        """``[rows, inputs]`` CSR, built row-major without a sort: every row stores the same
        ``k + 3`` entries (id bucket, layer, ``k`` previous experts, position), a missing id or
        previous expert as an explicit zero on column 0 / on the layer's column."""
        layers, e, b = self.num_layers_, self.num_experts_, self.id_buckets
        tok, layer = rows // layers, rows % layers
        n = rows.size
        ids = np.asarray(trace.token_id, dtype=np.int64)[tok]
        bucket = (np.maximum(ids, 0).astype(np.uint64) * np.uint64(2654435761)) % np.uint64(b)
        prev = prev_all[tok, layer]  # [n, k]
        k = prev.shape[1]
        cols = np.empty((n, k + 3), dtype=np.int64)
        vals = np.ones((n, k + 3), dtype=self.dtype)
        cols[:, 0] = bucket
        vals[:, 0] = ids >= 0
        cols[:, 1] = b + layer
        cols[:, 2 : 2 + k] = np.where(prev >= 0, b + layers + prev, (b + layer)[:, None])
        vals[:, 2 : 2 + k] = prev >= 0
        cols[:, -1] = b + layers + e
        vals[:, -1] = np.log1p(np.asarray(trace.position, dtype=float)[tok]) / 10.0
        indptr = np.arange(0, n * (k + 3) + 1, k + 3)
        return sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(n, self._num_inputs))

    def fit(self, trace: TokenTrace, y: None = None) -> MLPTokenPredictor:
        _check_int(self.id_buckets, "id_buckets", 1)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        trace = self._fit_shape(trace)
        cap = _check_int(self.max_train_samples, "max_train_samples", 1)
        rows = _subsample_rows(trace.num_tokens * self.num_layers_, cap, self.seed)
        x = self._features(trace, previous_layer_experts(trace), rows)
        experts = np.asarray(trace.experts, dtype=np.int64).reshape(-1, self.top_k_)[rows]
        target = np.zeros((rows.size, self.num_experts_), dtype=np.int8)
        batch = self.batch_size
        batch = min(1024, max(64, rows.size // 48)) if batch is None else batch
        np.put_along_axis(target, experts, 1, axis=1)
        self.model_ = MLPClassifier(
            hidden_layer_sizes=tuple(self.hidden_layer_sizes),
            max_iter=self.max_iter,
            learning_rate_init=self.learning_rate_init,
            alpha=self.alpha,
            batch_size=_check_int(batch, "batch_size", 1),
            random_state=self.seed,
        )
        # Small matrices: one BLAS thread is ~10x faster than two contending ones.
        with expected_warnings_silenced(), threadpool_limits(1, user_api="blas"):
            self.model_.fit(x, target)
        return self

    def predict(self, trace: TokenTrace) -> np.ndarray:
        trace = self._check_predict(trace)
        t, layers = trace.num_tokens, self.num_layers_
        out = np.empty((t * layers, self.top_k_), dtype=np.int16)
        prev = previous_layer_experts(trace)
        tie = 1e-9 * self.popularity_  # [L, E]: ties -> the more popular expert
        with threadpool_limits(1, user_api="blas"):
            for i in range(0, t * layers, _ROWS_PER_CHUNK):  # (token, layer) rows, token-major
                rows = np.arange(i, min(i + _ROWS_PER_CHUNK, t * layers))
                scores = self.model_.predict_proba(self._features(trace, prev, rows))
                out[i : i + rows.size] = topk_from_scores(scores + tie[rows % layers], self.top_k_)
        return out.reshape(t, layers, self.top_k_)

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "model_")
        sizes = [self._num_inputs, *self.hidden_layer_sizes, self.num_experts_]
        macs = sum(a * b for a, b in itertools.pairwise(sizes))
        params = macs + sum(sizes[1:])
        act = sum(sizes[1:])
        k = self.top_k_
        return PredictorCost(
            flops=2.0 * macs, bytes=_ID_BYTES * (3 + k) + 2.0 * 2 * act + _EXPERT_BYTES * k,
            per="token", where="gpu_critical", launches=len(sizes) - 1,
            invocations=self.num_layers_, fixed_bytes=2.0 * params,
            note=f"MLP {sizes}: 2*sum(in*out) FLOPs per token and layer, bf16 weights",
        )  # fmt: skip
