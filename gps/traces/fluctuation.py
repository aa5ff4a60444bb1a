"""Per-batch fluctuation of expert loads around aggregate statistics.

Aggregate statistics (an engine's recorded mean load, ``[L, E]`` proportions ``mu``) say
where tokens go on average; a batch deviates from them. Sampling its tokens independently
understates the deviation, because the tokens of one request share experts (a prompt about
law keeps choosing law experts). This module models a batch's counts with a
Dirichlet-multinomial-like over-dispersion per layer, fitted on real per-token traces
(``docs/eplb.md``, "Per-batch fluctuation"; fit and validation data in
``benchmarks/bench_eplb_fluctuation.py`` and ``docs/calibration.md``).

**Model.** A request contributes ``n`` tokens to the step (prefill: its prompt or chunk;
decode: 1), each routed to ``k`` distinct experts. Its copies' counts have mean ``n k mu``
and variance ``phi(n) * n k mu_e (1 - mu_e)`` (multinomial variance times ``phi``) with

    phi_l(n) = c0_l + (n - 1) * k * rho_l,    c0_l = sum_e mu_e (1 - k mu_e) / sum_e mu_e (1 - mu_e)

``c0 < 1`` because a token's ``k`` copies go to distinct experts (inclusion probability
``k mu_e``); ``rho_l >= 0`` is the correlation between copies of two different tokens of one
request in layer ``l`` (the Dirichlet-multinomial intra-class correlation). Requests are
independent, so a step of ``B`` requests of ``n`` tokens has the same ``phi`` and ``B`` times
the variance. ``rho`` is fitted per layer by the method of moments on per-sequence counts
(:func:`fit_fluctuation`).

**Sampling** (:meth:`FluctuationModel.sample`): a multinomial draw ``m`` of the step's ``N``
copies from ``mu``, its deviation scaled by ``sqrt(phi)``: ``x = N mu + sqrt(phi) (m - N mu)``,
clipped at 0 and rescaled to ``N`` copies. It matches the first two moments of the model
(the covariance of a Dirichlet-multinomial is the multinomial's times ``phi``), not its
higher ones; vectorised over steps and layers.

Shapes: ``S`` steps, ``L`` layers, ``E`` experts, ``T`` tokens, ``k`` top-k.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from gps.traces.trace import TokenTrace


def within_token_factor(mu: np.ndarray, top_k: int) -> np.ndarray:
    """``c0 [..., L]``: variance of one token's ``k`` distinct copies over the multinomial's,
    ``sum_e mu (1 - k mu) / sum_e mu (1 - mu)`` (clipped to ``[0, 1]``; ``mu [..., L, E]``)."""
    mu = np.asarray(mu, dtype=float)
    num = (mu * (1.0 - top_k * mu)).sum(axis=-1)
    den = (mu * (1.0 - mu)).sum(axis=-1)
    return np.clip(np.divide(num, den, out=np.ones_like(den), where=den > 0), 0.0, 1.0)


@dataclass(frozen=True)
class FluctuationModel:
    """Over-dispersion of a step's expert counts around the aggregate proportions.

    Attributes:
        rho: ``[L]`` correlation between copies of two tokens of one request (``>= 0``), or
            ``[1]`` (one value for every layer).
        top_k: ``k`` of the model it was fitted on (``c0`` uses the priced model's ``k``).
        meta: fit data, per-layer fit diagnostics (JSON-serialisable).
    """

    rho: np.ndarray
    top_k: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        rho = np.asarray(self.rho, dtype=float)
        if rho.ndim != 1 or rho.size == 0 or not np.all(np.isfinite(rho)) or np.any(rho < 0):
            raise ValueError(f"rho: expected finite values >= 0 of shape [L], got {rho!r}")

    @classmethod
    def independent(cls, num_layers: int = 1, top_k: int = 1) -> FluctuationModel:
        """Tokens routed independently (``rho = 0``): the understating baseline."""
        return cls(rho=np.zeros(num_layers), top_k=top_k, meta={"fit": "independent tokens"})

    def layer_rho(self, num_layers: int) -> np.ndarray:
        """``[L]`` rho for a model of ``L`` layers: per layer when the fit has ``L`` layers,
        else the fit's median for every layer (the fit came from another model)."""
        rho = np.asarray(self.rho, dtype=float)
        if rho.size == num_layers:
            return rho
        return np.full(num_layers, float(np.median(rho)))

    def phi(self, mu: np.ndarray, top_k: int, tokens_per_request: float) -> np.ndarray:
        """``[..., L]`` variance factor over the multinomial for requests of
        ``tokens_per_request`` tokens in the step (``mu [..., L, E]`` proportions)."""
        mu = np.asarray(mu, dtype=float)
        rho = self.layer_rho(mu.shape[-2])
        n = max(float(tokens_per_request), 1.0)
        return within_token_factor(mu, top_k) + (n - 1.0) * top_k * rho

    def sample(
        self,
        mu: np.ndarray,
        copies_per_step: float,
        top_k: int,
        tokens_per_request: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """``[S, L, E]`` float64 counts of steps of ``copies_per_step`` copies around ``mu``.

        Args:
            mu: ``[S, L, E]`` (or ``[L, E]``, one step) proportions, rows summing to 1.
            copies_per_step: ``N`` = tokens of the step times ``k``.
            top_k: the priced model's ``k``.
            tokens_per_request: tokens one request brings to the step (``>= 1``).
            rng: the run's seeded generator.

        Raises:
            ValueError: ``mu`` not ``[S, L, E]`` / ``[L, E]`` proportions, ``N < 1``.
        """
        mu = np.asarray(mu, dtype=float)
        if mu.ndim == 2:
            mu = mu[None]
        if mu.ndim != 3 or np.any(mu < 0) or not np.allclose(mu.sum(axis=-1), 1.0, atol=1e-6):
            raise ValueError(f"mu: expected [S, L, E] proportions (rows sum to 1), got {mu.shape}")
        n = round(copies_per_step)
        if n < 1:
            raise ValueError(f"copies_per_step: {copies_per_step} < 1")
        m = rng.multinomial(n, mu / mu.sum(axis=-1, keepdims=True)).astype(float)
        scale = np.sqrt(self.phi(mu, top_k, tokens_per_request))[..., None]
        x = np.maximum(n * mu + scale * (m - n * mu), 0.0)
        total = x.sum(axis=-1, keepdims=True)
        return x * np.divide(n, total, out=np.zeros_like(total), where=total > 0)


def sequence_counts(trace: TokenTrace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(counts [Q, L, E], tokens [Q], group [Q])`` per sequence ``Q`` of ``trace``: token
    copies per expert, tokens, and the sequence's domain (``0`` without domains)."""
    seq = np.asarray(trace.sequence_id, dtype=np.int64)
    q = int(seq.max()) + 1 if seq.size else 0
    layers = trace.num_layers
    e = trace.num_experts
    counts = np.zeros((q, layers, e), dtype=np.int64)
    for layer in range(layers):  # one bincount per layer over all tokens
        idx = (seq[:, None] * e + np.asarray(trace.experts[:, layer, :], dtype=np.int64)).ravel()
        counts[:, layer, :] = np.bincount(idx, minlength=q * e).reshape(q, e)
    tokens = np.bincount(seq, minlength=q)
    group = np.zeros(q, dtype=np.int64)
    if trace.domain is not None:
        group[seq] = np.asarray(trace.domain, dtype=np.int64)
    return counts, tokens, group


def fit_fluctuation(
    trace: TokenTrace,
    *,
    groups: list[int] | None = None,
    min_tokens: int = 2,
    name: str = "",
) -> FluctuationModel:
    """Fit ``rho [L]`` by the method of moments on the sequences of ``trace``.

    Each group (domain; the whole trace without domains) has its own mean ``mu_g`` (what an
    engine's statistics of that workload would hold). For sequence ``j`` of ``N_j = n_j k``
    copies, ``E[sum_e (c_je - N_j mu_e)^2] = N_j v (c0 + (n_j - 1) k rho) (1 - N_j / N_g)``
    with ``v = sum_e mu_e (1 - mu_e)`` (the last factor: ``mu_g`` is estimated from the same
    sequences); summing over sequences gives one linear equation per layer, solved for
    ``rho`` and clipped at 0.

    Args:
        trace: token trace with ``sequence_id`` (and ``domain`` to fit per-domain means).
        groups: domains to use (default: all).
        min_tokens: sequences shorter than this are left out.
        name: the fit data's name, kept in ``meta["fit"]``.

    Raises:
        ValueError: fewer than two usable sequences in every group.
    """
    counts, tokens, group = sequence_counts(trace)
    k = trace.top_k
    use = tokens >= min_tokens
    if groups is not None:
        use &= np.isin(group, groups)
    lhs = np.zeros(trace.num_layers)
    rhs0 = np.zeros(trace.num_layers)
    rhs1 = np.zeros(trace.num_layers)
    used = 0
    for g in np.unique(group[use]):
        sel = use & (group == g)
        if sel.sum() < 2:
            continue
        c = counts[sel].astype(float)
        n = tokens[sel].astype(float)
        big_n = n * k
        total = big_n.sum()
        mu = c.sum(axis=0) / total  # [L, E]
        v = (mu * (1 - mu)).sum(axis=-1)  # [L]
        c0 = within_token_factor(mu, k)
        w = big_n * (1.0 - big_n / total)  # [Q_g]
        dev = ((c - big_n[:, None, None] * mu[None]) ** 2).sum(axis=(0, 2))  # [L]
        lhs += dev
        rhs0 += w.sum() * v * c0
        rhs1 += (w * (n - 1.0) * k).sum() * v
        used += int(sel.sum())
    if used < 2:
        raise ValueError("fit_fluctuation: fewer than two usable sequences per group")
    rho = np.clip(np.divide(lhs - rhs0, rhs1, out=np.zeros_like(lhs), where=rhs1 > 0), 0, None)
    meta = {
        "fit": name or str(trace.meta.get("model", "")),
        "sequences": used,
        "groups": None if groups is None else list(groups),
        "top_k": k,
        "rho_median": float(np.median(rho)),
    }
    return FluctuationModel(rho=rho, top_k=k, meta=meta)


def request_chunks(trace: TokenTrace, tokens: int) -> TokenTrace:
    """``trace`` with each sequence cut into requests of ``tokens`` consecutive positions
    (a generated sequence's chunks stand for the requests of a fit on generation traces)."""
    if tokens < 1:
        raise ValueError(f"tokens: {tokens} < 1")
    seq = np.asarray(trace.sequence_id, dtype=np.int64)
    pos = np.asarray(trace.position, dtype=np.int64)
    _, new = np.unique(
        seq * (int(pos.max(initial=0)) // tokens + 1) + pos // tokens, return_inverse=True
    )
    return dataclasses.replace(trace, sequence_id=new.astype(np.int32))


#: ``rho`` (median over layers) of :func:`fit_fluctuation` on the real traces in
#: ``../shared/traces`` (fit and validation data: ``docs/calibration.md``; recomputed by
#: ``benchmarks/bench_eplb_fluctuation.py`` and checked by ``tests/test_eplb.py``).
FITTED_RHO: dict[str, tuple[float, str]] = {
    "esft": (
        8.01e-4,
        "ESFT routing of DeepSeek-V2-Lite (deepseek-ai/ESFT-vanilla-lite), domains intent and "
        "law (160 sequences, top-6 of 64); validated on summary and translation",
    ),
    "mixtral": (
        8.71e-3,
        "Mixtral-8x7B-Instruct vLLM routing, GSM8K, requests = 32-token chunks of the 2 "
        "generated sequences (9, top-2 of 8); validated on HumanEval",
    ),
}


def fitted_model(name: str) -> FluctuationModel:
    """The committed fit ``name`` (``FITTED_RHO``), or ``independent`` tokens, or a number
    (one ``rho`` for every layer).

    Raises:
        ValueError: an unknown name or a negative number.
    """
    if name == "independent":
        return FluctuationModel.independent()
    if name in FITTED_RHO:
        rho, data = FITTED_RHO[name]
        return FluctuationModel(rho=np.array([rho]), top_k=0, meta={"fit": data})
    try:
        rho = float(name)
    except ValueError:
        raise ValueError(
            f"eplb.fluctuation: {name!r} is none of auto, "
            f"{', '.join(FITTED_RHO)}, independent, or a number"
        ) from None
    return FluctuationModel(rho=np.array([rho]), top_k=0, meta={"fit": f"rho={rho} (given)"})
