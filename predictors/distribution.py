"""Distribution-Only predictors: the next batch's per-layer expert-load proportions ``[L, E]``.

Load-history predictors (``input_kind = "loads"``) see per-batch loads ``[N, L, E]`` (counts
or proportions; each ``(batch, layer)`` row is normalised, an all-zero row counts as uniform)
and share one API:

* ``fit(history [N, L, E])``;
* ``predict(history=None) -> [L, E]``: the batch after ``history`` (``None``: after the fit
  history, whose last 4096 batches are kept);
* ``predict_rolling(loads [N, L, E], start, horizon=1) -> [N - start, L, E]``: row ``i``
  predicts batch ``t = start + i`` from ``loads[: t - horizon + 1]`` only (the forecast made
  ``horizon`` batches ahead), for all ``t`` at once (cumulative sums, one linear filter, one
  stacked model call; no Python loop over batches).

:class:`TokenIdDistributionPredictor` (``input_kind = "tokens"``) instead sees the current
batch's token ids (or domains) and a per-id expert-frequency table fitted on a token trace.

Overhead: load-history predictors run once per batch on the host, from loads already
measured, while the current batch computes (``where="cpu_offpath"``, ``invocations=1``).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter
from sklearn.linear_model import Ridge
from sklearn.utils.validation import check_is_fitted

from gps.traces.trace import TokenTrace
from predictors.base import (
    DistributionPredictor,
    PredictorCost,
    check_loads,
    check_trace,
    expected_warnings_silenced,
    proportions,
    unique_counts,
)

_KEEP = 4096  # fit-history batches kept for predict(history=None)
_F32 = 4.0  # bytes per stored proportion
_CHUNK_SAMPLES = 1 << 20  # (batch, layer, expert) samples per model.predict call


def _normalise(p: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Clip at 0 and renormalise rows of ``[..., L, E]``; an all-zero row takes ``fallback``."""
    p = np.maximum(p, 0.0)
    total = p.sum(axis=-1, keepdims=True)
    fallback = np.broadcast_to(fallback, p.shape)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), fallback)


class LoadHistoryPredictor(DistributionPredictor):
    """Base of the predictors that read past per-batch loads (``input_kind = "loads"``)."""

    input_kind = "loads"

    def fit(self, history: np.ndarray, y: None = None) -> LoadHistoryPredictor:
        """Fit on ``history [N, L, E]`` (``N >= 1``)."""
        h = check_loads(history, "history")
        p = proportions(h)
        self.num_layers_, self.num_experts_ = int(h.shape[1]), int(h.shape[2])
        self.prior_ = p.mean(axis=0)
        self.n_fit_batches_ = int(h.shape[0])
        self._fit(p)
        self.history_ = p[-_KEEP:]
        return self

    def _fit(self, p: np.ndarray) -> None:
        """Subclass hook: learn from proportions ``[N, L, E]``."""

    def _forecast(self, p: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """``[M, L, E]`` forecasts made at batches ``origins`` (history ``p[: o + 1]``)."""
        raise NotImplementedError

    def _checked(self, loads: np.ndarray, name: str) -> np.ndarray:
        check_is_fitted(self, "prior_")
        arr = check_loads(loads, name, num_layers=self.num_layers_, num_experts=self.num_experts_)
        return proportions(arr)

    def predict(self, history: np.ndarray | None = None) -> np.ndarray:
        """Proportions ``[L, E]`` (rows sum to 1) of the batch following ``history``."""
        p = self.history_ if history is None else self._checked(history, "history")
        return _normalise(self._forecast(p, np.array([p.shape[0] - 1]))[0], self.prior_)

    def predict_rolling(self, loads: np.ndarray, start: int, horizon: int = 1) -> np.ndarray:
        """Forecasts ``[N - start, L, E]`` of ``loads[start:]``, each from history ending
        ``horizon`` batches earlier (``horizon <= start <= N``)."""
        p = self._checked(loads, "loads")
        n = p.shape[0]
        if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        if not horizon <= start <= n:
            raise ValueError(f"start must be in [horizon={horizon}, N={n}], got {start}")
        origins = np.arange(start, n) - horizon
        return _normalise(self._forecast(p, origins), self.prior_)


class LastBatchPredictor(LoadHistoryPredictor):
    """Persistence: next batch = last batch's proportions."""

    def _forecast(self, p: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return p[origins]

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "prior_")
        le = self.num_layers_ * self.num_experts_
        return PredictorCost(
            flops=le, bytes=2 * _F32 * le, per="batch", where="cpu_offpath", launches=0,
            note="normalise last batch's L*E counts: L*E divides, read + write",
        )  # fmt: skip


class WindowMeanPredictor(LoadHistoryPredictor):
    """Mean of the last ``window`` batches' proportions (fewer at the start of a series)."""

    def __init__(self, window: int = 16) -> None:
        self.window = window

    def _fit(self, p: np.ndarray) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an int >= 1, got {self.window!r}")

    def _forecast(self, p: np.ndarray, origins: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros((1, *p.shape[1:])), np.cumsum(p, axis=0)])
        lo = np.maximum(origins + 1 - self.window, 0)
        return (c[origins + 1] - c[lo]) / (origins + 1 - lo)[:, None, None]

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "prior_")
        le = self.num_layers_ * self.num_experts_
        return PredictorCost(
            flops=3 * le, bytes=3 * _F32 * le, per="batch", where="cpu_offpath", launches=0,
            note="running sum: add newest, subtract oldest, scale (3 L*E ops); state L*E",
        )  # fmt: skip


class EWMAPredictor(LoadHistoryPredictor):
    """Exponentially weighted mean ``s_t = alpha * p_t + (1 - alpha) * s_{t-1}``, ``s_0 = p_0``."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha

    def _fit(self, p: np.ndarray) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha!r}")

    def _forecast(self, p: np.ndarray, origins: np.ndarray) -> np.ndarray:
        a = float(self.alpha)
        # lfilter's initial state for s_{-1} = p_0 is zi = (1 - a) * p_0.
        s, _ = lfilter([a], [1.0, a - 1.0], p, axis=0, zi=(1.0 - a) * p[:1])
        return s[origins]

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "prior_")
        le = self.num_layers_ * self.num_experts_
        return PredictorCost(
            flops=3 * le, bytes=3 * _F32 * le, per="batch", where="cpu_offpath", launches=0,
            note="one multiply-add per (layer, expert) on an L*E state",
        )  # fmt: skip


class GlobalPriorPredictor(LoadHistoryPredictor):
    """Historical prior: the mean proportions of the fit history, whatever comes after."""

    def _forecast(self, p: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.prior_, (origins.size, *self.prior_.shape))

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "prior_")
        le = self.num_layers_ * self.num_experts_
        return PredictorCost(
            flops=0.0, bytes=_F32 * le, per="batch", where="cpu_offpath", launches=0,
            note="a constant table of L*E proportions",
        )  # fmt: skip


# --------------------------------------------------------------------------- lag models


def _lag_windows(p: np.ndarray, lags: int) -> np.ndarray:
    """``[N, L, E, lags]`` view: ``[o, ..., j] = p[o - j]`` (rows before 0 repeat ``p[0]``)."""
    pad = np.concatenate([np.repeat(p[:1], lags - 1, axis=0), p]) if lags > 1 else p
    return sliding_window_view(pad, lags, axis=0)[..., ::-1]


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class _LagModel(LoadHistoryPredictor):
    """Pooled regression on lag features, one sample per (origin batch, layer, expert).

    Target: ``E * p[o + horizon]`` (uniform load = 1) from the same (layer, expert) series'
    last ``lags`` values (same scale) and its fitted prior.
    """

    lags: int
    horizon: int
    max_train_samples: int
    seed: int

    def _features(self, p: np.ndarray, origins: np.ndarray) -> np.ndarray:
        e = self.num_experts_
        win = _lag_windows(p, self.lags)[origins] * e  # [M, L, E, lags]
        m = origins.size
        prior = np.broadcast_to(self.prior_[None, :, :, None] * e, (m, *p.shape[1:], 1))
        cols = [win, prior, win.mean(axis=-1, keepdims=True)]
        cols += self._extra_columns(m, p.shape[1], p.shape[2])
        return np.concatenate(cols, axis=-1).reshape(-1, sum(c.shape[-1] for c in cols))

    def _extra_columns(self, m: int, layers: int, experts: int) -> list[np.ndarray]:
        return []

    def _baseline(self, x: np.ndarray) -> np.ndarray | float:
        """What the model predicts a correction to (0: the target itself)."""
        return 0.0

    def _fit(self, p: np.ndarray) -> None:
        _check_int(self.lags, "lags", 1)
        _check_int(self.horizon, "horizon", 1)
        n = p.shape[0]
        if n < self.horizon + 1:
            raise ValueError(
                f"history: {n} batches; need at least horizon + 1 = {self.horizon + 1} to fit"
            )
        first = min(self.lags - 1, n - 1 - self.horizon)
        origins = np.arange(first, n - self.horizon)
        cap = _check_int(self.max_train_samples, "max_train_samples", 1)
        per_origin = p.shape[1] * p.shape[2]
        if origins.size * per_origin > cap:  # subsample whole origin batches
            take = max(1, cap // per_origin)
            rng = np.random.default_rng(self.seed)
            origins = np.sort(rng.choice(origins, take, replace=False))
        x = self._features(p, origins)
        y = (p[origins + self.horizon] * self.num_experts_).reshape(-1)
        self._fit_model(x, y - self._baseline(x))

    def _fit_model(self, x: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _forecast(self, p: np.ndarray, origins: np.ndarray) -> np.ndarray:
        out = np.empty((origins.size, *p.shape[1:]))
        step = max(1, _CHUNK_SAMPLES // (p.shape[1] * p.shape[2]))  # bounded feature matrix
        for i in range(0, origins.size, step):
            o = origins[i : i + step]
            x = self._features(p, o)
            y = self.model_.predict(x) + self._baseline(x)
            out[i : i + step] = y.reshape(o.size, *p.shape[1:]) / self.num_experts_
        return out


class LinearARPredictor(_LagModel):
    """Linear autoregression on lags (scikit-learn ``Ridge``), pooled over layers and experts.

    ``horizon`` > 1 trains a direct ``horizon``-step model; otherwise a forecast for further
    ahead reuses the one-step forecast (flat).
    """

    def __init__(
        self,
        lags: int = 8,
        alpha: float = 1e-3,
        horizon: int = 1,
        max_train_samples: int = 1_000_000,
        seed: int = 0,
    ) -> None:
        self.lags = lags
        self.alpha = alpha
        self.horizon = horizon
        self.max_train_samples = max_train_samples
        self.seed = seed

    def _fit_model(self, x: np.ndarray, y: np.ndarray) -> None:
        self.model_ = Ridge(alpha=self.alpha).fit(x, y)

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "model_")
        le = self.num_layers_ * self.num_experts_
        d = self.lags + 2
        return PredictorCost(
            flops=2 * d * le + le, bytes=_F32 * (d + 1) * le, per="batch", where="cpu_offpath",
            launches=0, note=f"{d} multiply-adds per (layer, expert) + mean of lags",
        )  # fmt: skip


class LightGBMLoadPredictor(_LagModel):
    """LightGBM regression on lag features (+ lag mean, prior, layer and expert index).

    The trees fit the target's deviation from the mean of the ``lags`` window (boosting from
    a smoothed persistence forecast), so a constant series is predicted exactly whatever the
    number of trees.
    """

    def __init__(
        self,
        lags: int = 8,
        n_estimators: int = 50,
        num_leaves: int = 15,
        learning_rate: float = 0.1,
        horizon: int = 1,
        max_train_samples: int = 200_000,
        n_jobs: int = 1,
        seed: int = 0,
    ) -> None:
        self.lags = lags
        self.n_estimators = n_estimators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.horizon = horizon
        self.max_train_samples = max_train_samples
        self.n_jobs = n_jobs
        self.seed = seed

    def _baseline(self, x: np.ndarray) -> np.ndarray:
        return x[:, self.lags + 1]  # mean of the lags: trees fit the deviation from it

    def _extra_columns(self, m: int, layers: int, experts: int) -> list[np.ndarray]:
        layer = np.broadcast_to(np.arange(layers)[None, :, None, None], (m, layers, experts, 1))
        expert = np.broadcast_to(np.arange(experts)[None, None, :, None], (m, layers, experts, 1))
        return [layer.astype(float), expert.astype(float)]

    def _fit_model(self, x: np.ndarray, y: np.ndarray) -> None:
        self.model_ = lgb.LGBMRegressor(
            n_estimators=self.n_estimators,
            num_leaves=self.num_leaves,
            learning_rate=self.learning_rate,
            random_state=self.seed,
            n_jobs=self.n_jobs,
            deterministic=True,
            force_col_wise=True,
            verbose=-1,
        )
        with expected_warnings_silenced():
            self.model_.fit(x, y)

    def _forecast(self, p: np.ndarray, origins: np.ndarray) -> np.ndarray:
        with expected_warnings_silenced():
            return super()._forecast(p, origins)

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "model_")
        le = self.num_layers_ * self.num_experts_
        comparisons = tree_comparisons(self.model_.booster_)
        nodes = self.model_.booster_.num_trees() * (self.num_leaves * 2 - 1)
        return PredictorCost(
            flops=comparisons * le, bytes=_F32 * (self.lags + 5) * le, per="batch",
            where="cpu_offpath", launches=0, fixed_bytes=16.0 * nodes,
            note=(f"{comparisons:.0f} node comparisons (sum of mean leaf depths) per (layer, "
                  "expert) sample; 16 bytes per tree node read once per batch"),
        )  # fmt: skip


def tree_comparisons(booster: lgb.Booster) -> float:
    """Comparisons one prediction makes: sum over trees of the mean leaf depth.

    The mean is unweighted over leaves (an assumption: real inputs reach shallow leaves more
    or less often than that).
    """
    total = 0.0
    for tree in booster.dump_model()["tree_info"]:
        stack, depths = [(tree["tree_structure"], 0)], []
        while stack:
            node, depth = stack.pop()
            if "leaf_index" in node or "left_child" not in node:
                depths.append(depth)
            else:
                stack += [(node["left_child"], depth + 1), (node["right_child"], depth + 1)]
        total += float(np.mean(depths))
    return total


# --------------------------------------------------------------------------- token ids


class TokenIdDistributionPredictor(DistributionPredictor):
    """Maximum-likelihood batch distribution from the batch's token ids (or domains).

    ``fit(trace)`` counts, per key (token id, or domain with ``key="domain"``) and layer, how
    often each expert was chosen. A token with key ``v`` is expected to add
    ``q[v, l] = (c[v, l] + smoothing * k * g[l]) / (n_v + smoothing)`` to layer ``l``'s loads
    (``c`` counts, ``n_v`` occurrences, ``g`` the global expert frequencies, ``q`` sums to
    ``k``); the batch's predicted loads are ``sum_tokens q``, normalised. **Fallback**: keys
    never seen in fit (and ``-1``, unknown) use ``k * g[l]``, the global prior.

    Overhead: an embedding-bag on the GPU before MoE layer 0 (``gpu_critical``, once per
    batch): per token read its id and an ``L*E`` fp32 row and add it (``L*E`` FLOPs).
    """

    input_kind = "tokens"

    def __init__(self, key: str = "token_id", smoothing: float = 1.0) -> None:
        self.key = key
        self.smoothing = smoothing

    def _keys(self, trace: TokenTrace, name: str) -> np.ndarray:
        if self.key == "token_id":
            return np.asarray(trace.token_id, dtype=np.int64)
        if self.key == "domain":
            if trace.domain is None:
                raise ValueError(f"{name}: key='domain' but the trace has no domain field")
            return np.asarray(trace.domain, dtype=np.int64)
        raise ValueError(f"key must be 'token_id' or 'domain', got {self.key!r}")

    def fit(self, trace: TokenTrace, y: None = None) -> TokenIdDistributionPredictor:
        """Count expert choices per key and layer on ``trace`` (sparse: ``O(T * L * k)``)."""
        trace = check_trace(trace)
        if not self.smoothing >= 0:
            raise ValueError(f"smoothing must be >= 0, got {self.smoothing!r}")
        keys = self._keys(trace, "trace")
        _, layers, k = trace.experts.shape
        e = trace.num_experts
        known = keys >= 0
        vocab, inv = np.unique(keys[known], return_inverse=True)
        experts = np.asarray(trace.experts[known], dtype=np.int64)
        flat = ((inv[:, None, None] * layers + np.arange(layers)[None, :, None]) * e) + experts
        key, count = unique_counts(flat.ravel(), vocab.size * layers * e)
        everything = np.bincount(
            (np.arange(layers)[None, :, None] * e + np.asarray(trace.experts, np.int64)).ravel(),
            minlength=layers * e,
        ).reshape(layers, e)
        self.prior_ = proportions(everything)
        occurrences = np.bincount(inv, minlength=vocab.size).astype(float)
        s = float(self.smoothing)
        row, col = key // (layers * e), key % (layers * e)
        # q[v] = c[v] / (n_v + s) + w_v * k * g with w_v = s / (n_v + s); row U = unseen keys
        # (c = 0, w = 1). Stored as a sparse [U + 1, L*E] matrix plus the weights w.
        self.table_ = sp.csr_matrix(
            (count / (occurrences[row] + s), (row, col)), shape=(vocab.size + 1, layers * e)
        )
        self.weight_ = np.append(s / (occurrences + s), 1.0)
        self.vocab_ = vocab
        self.num_layers_, self.num_experts_, self.top_k_ = layers, e, k
        return self

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        """Table row of every key; ``U`` (the fallback row) for unseen and ``-1`` keys."""
        if self.vocab_.size == 0:
            return np.zeros(keys.size, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.vocab_, keys), self.vocab_.size - 1)
        hit = (keys >= 0) & (self.vocab_[pos] == keys)
        return np.where(hit, pos, self.vocab_.size)

    def _loads(self, hist: sp.csr_matrix) -> np.ndarray:
        """``[N, U + 1]`` token counts per table row -> ``[N, L, E]`` expected loads."""
        loads = np.asarray((hist @ self.table_).todense())
        loads += (hist @ self.weight_)[:, None] * (self.top_k_ * self.prior_.ravel())[None]
        return loads.reshape(-1, self.num_layers_, self.num_experts_)

    def _as_keys(self, x: TokenTrace | np.ndarray, name: str) -> np.ndarray:
        check_is_fitted(self, "table_")
        if isinstance(x, TokenTrace):
            check_trace(x, name, num_layers=self.num_layers_, num_experts=self.num_experts_)
            return self._keys(x, name)
        keys = np.asarray(x)
        if keys.dtype.kind not in "iu" or keys.ndim != 1:
            raise ValueError(f"{name}: expected a TokenTrace or 1-D integer key array")
        if keys.size == 0:
            raise ValueError(f"{name}: no tokens in the batch")
        return keys.astype(np.int64)

    def predict(self, batch: TokenTrace | np.ndarray) -> np.ndarray:
        """Proportions ``[L, E]`` for one batch: a ``TokenTrace`` or its ``[T]`` keys."""
        rows = self._rows(self._as_keys(batch, "batch"))
        hist = sp.csr_matrix(
            (np.ones(rows.size), (np.zeros(rows.size, dtype=np.int64), rows)),
            shape=(1, self.table_.shape[0]),
        )
        return proportions(self._loads(hist)[0])

    def predict_batches(self, trace: TokenTrace | np.ndarray, batch_size: int) -> np.ndarray:
        """``[N, L, E]`` proportions for consecutive batches of ``batch_size`` tokens
        (``N = T // batch_size``, the partial tail dropped, as ``batch_loads`` does)."""
        keys = self._as_keys(trace, "trace")
        batch_size = _check_int(batch_size, "batch_size", 1)
        n = keys.size // batch_size
        if n == 0:
            raise ValueError(f"trace: {keys.size} tokens, fewer than batch_size={batch_size}")
        rows = self._rows(keys[: n * batch_size])
        batch = np.arange(n * batch_size) // batch_size
        hist = sp.csr_matrix((np.ones(rows.size), (batch, rows)), shape=(n, self.table_.shape[0]))
        return proportions(self._loads(hist))

    def cost(self) -> PredictorCost:
        check_is_fitted(self, "table_")
        le = self.num_layers_ * self.num_experts_
        return PredictorCost(
            flops=le, bytes=4.0 + _F32 * le, per="token", where="gpu_critical", launches=1,
            fixed_flops=le, fixed_bytes=_F32 * le,
            note="embedding-bag: per token read id + an L*E fp32 row and add; normalise once",
        )  # fmt: skip
