"""Seeded, vectorised synthetic routing traces (token traces and load series) and presets.

Two generators:

- :func:`generate_token_trace` (:class:`SyntheticTraceConfig`) -> :class:`TokenTrace`: per
  token and MoE layer a top-k of ``E`` experts drawn without replacement from a mixture of
  three components, each imitating a structure real routers show:

  1. **layer popularity, shifted per domain**: ``pop[l, d]`` (``[L, D, E]``), a skewed
     per-layer expert popularity (Dirichlet or Zipf, skew varying across layers) multiplied
     by a per-domain log-normal perturbation; every sequence belongs to one domain;
  2. **token-id affinity**: each vocabulary id prefers ``k`` experts per layer (a fixed
     random table, evaluated lazily by hashing ``(seed, layer, token id, slot)``), what makes
     token-to-expert prediction possible;
  3. **cross-layer Markov transition**: the previous layer's best expert hands the token to
     a few experts at this layer (a doubly stochastic matrix, a mixture of random
     permutations), what MoETuner-style placement exploits.

  ``p = (1 - m) * ((1 - a) * pop[l, domain] + a * token_pref[l, token_id]) + m * T[l][prev]``
  with ``a = token_affinity`` and ``m`` the layer pair's Markov strength (none at layer 0). The
  top-k is an exponential race (equivalent to Gumbel-top-k on ``log p``): keys
  ``X / p`` with ``X ~ Exp(1)``, the ``k`` smallest win, best first. The gate scores are the
  softmax over the top-k of the perturbed logits ``-log(key) / score_temperature`` (float16).

- :func:`generate_load_series` (:class:`LoadSeriesConfig`) -> :class:`LoadSeries`: expert
  log-proportions over training steps are a slow mean-reverting walk plus a fast one whose
  noise decays: a *transient* phase (large fluctuation) settles into a *stable* phase
  (temporal locality), as "Prediction Is All MoE Needs" (arXiv 2404.16914) reports; counts
  are multinomial draws of ``tokens_per_step * top_k`` assignments.

Every random choice comes from ``np.random.default_rng`` seeded from ``config.seed`` (one
independent stream per component, via ``np.random.SeedSequence``), so a config and seed give
bit-identical output, whatever the machine's thread count. Presets are YAML files in
``conf/trace/`` (:func:`load_preset`, :func:`generate_from_preset`). See
``docs/traces_synthetic.md`` for the knobs, presets, calibration and throughput.

Shapes: ``T`` tokens, ``L`` MoE layers, ``k`` top-k, ``E`` experts, ``D`` domains, ``V``
vocabulary size, ``S`` steps of a load series.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import gps
from gps.traces.trace import LoadSeries, TokenTrace
from gps.traces.validate import validate_load_series, validate_token_trace

# Token chunk of the router: ~2^18 float32 cells per [n, E] work array (cache-sized).
_CHUNK_CELLS = 1 << 18
_MIN_CHUNK_TOKENS = 256
_MAX_THREADS = 4  # chunks are independent streams; numpy releases the GIL in the hot loops
_P_FLOOR = np.float32(1e-30)  # popularity floor: keeps X / p finite (p = 0 never wins)
_PRESET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# Stream ids under the seed (SeedSequence spawn keys); fixed so streams never shift.
_STREAM_MODEL, _STREAM_SEQUENCES, _STREAM_TOKENS, _STREAM_ROUTING = 0, 1, 2, 3


def _conf_dir() -> Path:
    """``conf/`` of the project (next to the ``gps`` package)."""
    return Path(gps.__file__).resolve().parents[1] / "conf"


# ----------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------


def _check_types(config: Any) -> None:
    """Check every field of a config dataclass has its declared plain type (bool is no int)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        origin = typing.get_origin(hint)
        if hint is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif hint is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif hint is str:
            ok = isinstance(value, str)
        elif origin is list:
            (item,) = typing.get_args(hint)
            ok = isinstance(value, list | tuple) and all(isinstance(v, item) for v in value)
        else:  # pragma: no cover - only plain types are declared
            ok = True
        if not ok:
            want = getattr(hint, "__name__", str(hint))
            raise ValueError(
                f"{type(config).__name__}.{f.name} must be {want}, got {value!r} "
                f"({type(value).__name__})"
            )


def _require(condition: bool, config: Any, name: str, rule: str) -> None:
    if not condition:
        raise ValueError(
            f"{type(config).__name__}.{name} = {getattr(config, name)!r}: must be {rule}"
        )


@dataclass
class SyntheticTraceConfig:
    """Knobs of :func:`generate_token_trace`; every field a plain type (Hydra-ready).

    What real routers look like, knob by knob (see ``docs/traces_synthetic.md``):

    Attributes:
        num_tokens: ``T`` tokens generated.
        num_layers: ``L`` MoE layers.
        num_experts: ``E`` routed experts per layer.
        top_k: ``k`` experts per token and layer (distinct, ``k <= E``).
        popularity: ``"dirichlet"`` or ``"zipf"``: how each layer's expert popularity is
            drawn. Real routers trained with a load-balancing loss stay mildly skewed
            (Mixtral-8x7B: per-layer max/mean 1.1-1.8 over a few hundred tokens), with a few
            "hot" experts per layer in fine-grained models.
        dirichlet_alpha: Dirichlet concentration per expert (``> 0``); smaller = more skew.
            ``popularity="dirichlet"`` only.
        zipf_exponent: popularity ``∝ rank^-s`` over a random expert order (``>= 0``; 0 =
            uniform); larger = more skew. ``popularity="zipf"`` only.
        layer_skew_spread: log-normal spread (``>= 0``) of the skew parameter across layers
            (``alpha_l = alpha * exp(spread * z_l)``, ``s_l = s * exp(spread * z_l)``): real
            layers differ in imbalance (Mixtral: max/mean from 1.08 to 1.76 at 577 tokens).
        num_domains: ``D`` domains (MMLU: 57 subjects); each sequence draws one uniformly.
        domain_names: ``D`` names for ``meta["domains"]``, or empty for ``domain_0..``.
        domain_shift: std (``>= 0``) of the per-(layer, domain, expert) log-normal factor on
            the popularity: how much the topic moves the load (Mixtral's GSM8K and HumanEval
            loads differ per layer by a few percentage points).
        min_sequence_length: shortest sequence (tokens, ``>= 1``).
        max_sequence_length: longest sequence; lengths uniform in ``[min, max]``, tokens laid
            out sequence after sequence (positions ``0..len-1``).
        vocab_size: ``V`` token ids ``0..V-1``.
        token_zipf_exponent: token frequency ``∝ (id + 1)^-s`` (``>= 0``; natural text:
            about 1, Zipf's law), so frequent ids dominate and add load skew of their own.
        token_affinity: ``a`` in ``[0, 1]``, the share of the routing distribution fixed by
            the token id: each id prefers ``k`` experts per layer (weights ``2^-j``, best
            first). Routers key strongly on token identity (Mixtral's paper: syntax tokens
            such as ``self`` or indentation go to the same experts), which is what a
            token-to-expert lookup predictor learns.
        markov_strength: ``m`` in ``[0, 1]``, the share of the routing distribution fixed by
            the previous layer's best expert (cross-layer dependency, MoETuner).
        markov_branching: random permutations mixed into each transition matrix
            (``1..E``): 1 = each expert hands off to one expert of the next layer,
            larger = spread out. Doubly stochastic, so it adds no load skew of its own.
        markov_layer_spread: log-normal spread (``>= 0``) of the Markov strength across
            layer pairs, ``m_l = min(1, m * exp(spread * z_l))`` (median ``m``): real layer
            pairs differ (Mixtral: cross-layer MI from 0.03 to 0.21 bits at 577 tokens).
        score_temperature: ``> 0``, temperature of the gate-score softmax over the top-k
            perturbed logits; 1.0 gives Mixtral-like top-1 weights (~0.7 of 2).
        seed: seed of every random choice (``>= 0``).
        model: model name for ``meta["model"]``.
        description: what the preset imitates (``meta["description"]``).
        calibration: which statistic the preset was calibrated on, and the figures.
    """

    num_tokens: int = 4096
    num_layers: int = 32
    num_experts: int = 8
    top_k: int = 2
    popularity: str = "dirichlet"
    dirichlet_alpha: float = 20.0
    zipf_exponent: float = 0.0
    layer_skew_spread: float = 0.0
    num_domains: int = 1
    domain_names: list[str] = field(default_factory=list)
    domain_shift: float = 0.0
    min_sequence_length: int = 64
    max_sequence_length: int = 256
    vocab_size: int = 32000
    token_zipf_exponent: float = 1.0
    token_affinity: float = 0.0
    markov_strength: float = 0.0
    markov_branching: int = 2
    markov_layer_spread: float = 0.0
    score_temperature: float = 1.0
    seed: int = 0
    model: str = ""
    description: str = ""
    calibration: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field with a wrong type or value."""
        _check_types(self)
        _require(self.num_tokens >= 1, self, "num_tokens", ">= 1")
        _require(self.num_layers >= 1, self, "num_layers", ">= 1")
        _require(1 <= self.num_experts <= 32767, self, "num_experts", "in [1, 32767]")
        _require(1 <= self.top_k <= self.num_experts, self, "top_k", "in [1, num_experts] (k <= E)")
        _require(
            self.popularity in ("dirichlet", "zipf"), self, "popularity", "'dirichlet' or 'zipf'"
        )
        _require(self.dirichlet_alpha > 0, self, "dirichlet_alpha", "> 0")
        _require(self.zipf_exponent >= 0, self, "zipf_exponent", ">= 0")
        _require(self.layer_skew_spread >= 0, self, "layer_skew_spread", ">= 0")
        _require(1 <= self.num_domains <= 32767, self, "num_domains", "in [1, 32767]")
        _require(
            len(self.domain_names) in (0, self.num_domains),
            self,
            "domain_names",
            f"empty or {self.num_domains} names (num_domains)",
        )
        _require(self.domain_shift >= 0, self, "domain_shift", ">= 0")
        _require(self.min_sequence_length >= 1, self, "min_sequence_length", ">= 1")
        _require(
            self.max_sequence_length >= self.min_sequence_length,
            self,
            "max_sequence_length",
            ">= min_sequence_length",
        )
        _require(self.max_sequence_length <= 2**31 - 1, self, "max_sequence_length", "< 2^31")
        _require(1 <= self.vocab_size <= 2**31 - 1, self, "vocab_size", "in [1, 2^31)")
        _require(self.token_zipf_exponent >= 0, self, "token_zipf_exponent", ">= 0")
        _require(0 <= self.token_affinity <= 1, self, "token_affinity", "a fraction in [0, 1]")
        _require(0 <= self.markov_strength <= 1, self, "markov_strength", "a fraction in [0, 1]")
        _require(
            1 <= self.markov_branching <= self.num_experts,
            self,
            "markov_branching",
            "in [1, num_experts]",
        )
        _require(self.markov_layer_spread >= 0, self, "markov_layer_spread", ">= 0")
        _require(self.score_temperature > 0, self, "score_temperature", "> 0")
        _require(self.seed >= 0, self, "seed", ">= 0")


@dataclass
class LoadSeriesConfig:
    """Knobs of :func:`generate_load_series`; every field a plain type (Hydra-ready).

    Log-proportions ``x [L, E]`` (``p = softmax(x)``) are the sum of two Ornstein-Uhlenbeck
    processes in training-step time ``t``:

    - a **slow** one, pulled at rate ``mean_reversion`` toward a target ``mu`` with constant
      noise ``stable_noise``; it starts at 0 (uniform loads, a fresh router), and ``mu``
      (``log Dirichlet(dirichlet_alpha)``) itself wanders with ``transient_drift *
      exp(-t / transient_steps)`` while the router is still learning;
    - a **fast** one (rate ``transient_reversion``) whose noise ``transient_noise *
      exp(-t / transient_steps)`` dies out: large, short-lived load swings.

    Training of MoE LLMs shows exactly this: a transient state with large load fluctuation,
    then a stable state with temporal locality (small, slowly varying loads) — arXiv
    2404.16914 (GPT-3 125M/350M MoE).

    Attributes:
        num_steps: ``S`` recorded steps.
        step_interval: training steps between two records (``>= 1``); ``step = s *
            step_interval``. Rates and noise are per training step, so the dynamics do not
            depend on it (exact OU discretisation).
        num_layers: ``L`` MoE layers.
        num_experts: ``E`` experts per layer.
        top_k: experts per token (``k <= E``); each step routes ``tokens_per_step * k``.
        tokens_per_step: tokens per training step (global batch tokens, ``>= 1``).
        dirichlet_alpha: concentration (``> 0``) of the initial target popularity
            ``softmax(mu)`` per layer; smaller = more skew.
        transient_steps: decay time constant (training steps, ``> 0``) of the transient.
        transient_noise: noise (log space, per sqrt(step), ``>= 0``) of the fast process at
            step 0.
        transient_reversion: rate (per step, ``> 0``) of the fast process; ``1 / rate`` is
            how long a transient swing lasts.
        transient_drift: wander (per sqrt(step), ``>= 0``) of the target ``mu`` at step 0.
        stable_noise: noise (per sqrt(step), ``>= 0``) of the slow process; with
            ``mean_reversion`` it sets the stable-phase predictability.
        mean_reversion: rate (per step, ``>= 0``) of the slow process; ``1 / rate`` is the
            memory of the stable-phase load in steps (0: a plain random walk).
        seed: seed of every random choice (``>= 0``).
        model: model name for ``meta["model"]``.
        description: what the preset imitates.
        calibration: which statistic the preset was calibrated on, and the figures.
    """

    num_steps: int = 2000
    step_interval: int = 10
    num_layers: int = 12
    num_experts: int = 16
    top_k: int = 1
    tokens_per_step: int = 524288
    dirichlet_alpha: float = 20.0
    transient_steps: float = 3000.0
    transient_noise: float = 0.07
    transient_reversion: float = 0.01
    transient_drift: float = 0.005
    stable_noise: float = 0.01
    mean_reversion: float = 0.0001
    seed: int = 0
    model: str = ""
    description: str = ""
    calibration: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field with a wrong type or value."""
        _check_types(self)
        _require(self.num_steps >= 1, self, "num_steps", ">= 1")
        _require(self.step_interval >= 1, self, "step_interval", ">= 1")
        _require(self.num_layers >= 1, self, "num_layers", ">= 1")
        _require(self.num_experts >= 1, self, "num_experts", ">= 1")
        _require(1 <= self.top_k <= self.num_experts, self, "top_k", "in [1, num_experts] (k <= E)")
        _require(self.tokens_per_step >= 1, self, "tokens_per_step", ">= 1")
        _require(self.dirichlet_alpha > 0, self, "dirichlet_alpha", "> 0")
        _require(self.transient_steps > 0, self, "transient_steps", "> 0")
        _require(self.transient_noise >= 0, self, "transient_noise", ">= 0")
        _require(self.stable_noise >= 0, self, "stable_noise", ">= 0")
        _require(self.transient_drift >= 0, self, "transient_drift", ">= 0")
        _require(self.transient_reversion > 0, self, "transient_reversion", "> 0")
        _require(self.mean_reversion >= 0, self, "mean_reversion", ">= 0")
        _require(self.seed >= 0, self, "seed", ">= 0")


# ----------------------------------------------------------------------------------------
# token traces
# ----------------------------------------------------------------------------------------


def _rng(seed: int, stream: int, *more: int) -> np.random.Generator:
    """Independent generator ``stream`` (and sub-stream ``more``) under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, *more)))


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic): a fixed random hash."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@dataclass
class _Model:
    """The fixed random structure of one config+seed (independent of ``T``)."""

    pop: np.ndarray  # [L, D, E] float32 popularity per layer and domain (rows sum to 1)
    perm: np.ndarray  # [L, b, E] intp: perm[l, j, i] = next-layer expert of permutation j
    perm_weight: np.ndarray  # [L, b] float32 weights of the permutations (sum to 1)
    markov: np.ndarray  # [L] float32 Markov strength m_l into layer l (entry 0 unused)
    pref_weight: np.ndarray  # [k] float32 weights of a token's preferred experts (sum 1)
    salt: int  # hash salt of the token-id preference table (64-bit)


def _layer_popularity(config: SyntheticTraceConfig, rng: np.random.Generator) -> np.ndarray:
    """``[L, E]`` float64 per-layer expert popularity (rows sum to 1)."""
    layers, e = config.num_layers, config.num_experts
    spread = np.exp(config.layer_skew_spread * rng.standard_normal(layers))
    if config.popularity == "dirichlet":
        alpha = config.dirichlet_alpha * spread  # [L]
        # Dirichlet via normalised Gamma draws, vectorised over layers.
        g = rng.standard_gamma(np.repeat(alpha[:, None], e, axis=1))
        g = np.maximum(g, 1e-300)
        return g / g.sum(axis=1, keepdims=True)
    exponent = config.zipf_exponent * spread  # [L]
    ranks = np.arange(1, e + 1, dtype=np.float64)
    weights = ranks[None, :] ** -exponent[:, None]  # [L, E] by rank
    order = rng.permuted(np.tile(np.arange(e), (layers, 1)), axis=1)  # random expert order
    pop = np.empty_like(weights)
    np.put_along_axis(pop, order, weights, axis=1)
    return pop / pop.sum(axis=1, keepdims=True)


def _build_model(config: SyntheticTraceConfig) -> _Model:
    rng = _rng(config.seed, _STREAM_MODEL)
    layers, e, d, b = (
        config.num_layers,
        config.num_experts,
        config.num_domains,
        config.markov_branching,
    )
    base = _layer_popularity(config, rng)  # [L, E]
    shift = np.exp(config.domain_shift * rng.standard_normal((layers, d, e)))
    pop = base[:, None, :] * shift
    pop /= pop.sum(axis=2, keepdims=True)
    # perm[l, j] maps the expert chosen at layer l-1 to one of layer l (row 0 unused).
    perm = rng.permuted(np.tile(np.arange(e, dtype=np.intp), (layers, b, 1)), axis=2)
    perm_weight = rng.dirichlet(np.ones(b), size=layers)
    pref_weight = 0.5 ** np.arange(config.top_k)
    z = rng.standard_normal(layers)
    markov = np.minimum(1.0, config.markov_strength * np.exp(config.markov_layer_spread * z))
    salt = int(rng.integers(0, 2**63))
    pop = np.maximum(pop, 1e-30).astype(np.float32)
    return _Model(
        pop=pop,
        perm=perm,
        perm_weight=perm_weight.astype(np.float32),
        markov=markov.astype(np.float32),
        pref_weight=(pref_weight / pref_weight.sum()).astype(np.float32),
        salt=salt,
    )


def _sequences(config: SyntheticTraceConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sequence_id``, ``position`` (int32 ``[T]``) and ``domain`` (int16 ``[T]``)."""
    rng = _rng(config.seed, _STREAM_SEQUENCES)
    t, lo, hi = config.num_tokens, config.min_sequence_length, config.max_sequence_length
    n_seq = -(-t // lo)  # enough sequences even if all are shortest
    lengths = rng.integers(lo, hi + 1, size=n_seq)
    domains = rng.integers(0, config.num_domains, size=n_seq)
    ends = np.cumsum(lengths)
    used = int(np.searchsorted(ends, t)) + 1  # sequences touching [0, T)
    lengths = lengths[:used].copy()
    lengths[-1] -= int(ends[used - 1]) - t  # the last one is cut at T
    sequence_id = np.repeat(np.arange(used, dtype=np.int32), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = (np.arange(t) - np.repeat(starts, lengths)).astype(np.int32)
    domain = np.repeat(domains[:used], lengths).astype(np.int16)
    return sequence_id, position, domain


def _token_ids(config: SyntheticTraceConfig) -> np.ndarray:
    """``[T]`` int32 token ids with Zipfian frequency ``∝ (id + 1)^-s``."""
    rng = _rng(config.seed, _STREAM_TOKENS)
    weights = np.arange(1, config.vocab_size + 1, dtype=np.float64) ** -config.token_zipf_exponent
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    u = rng.random(config.num_tokens)
    return np.minimum(np.searchsorted(cdf, u, side="right"), config.vocab_size - 1).astype(np.int32)


def _layer_parts(
    config: SyntheticTraceConfig,
    model: _Model,
    layer: int,
    ids: np.ndarray,
    prev: np.ndarray | None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """The mixture of one layer: dense weight, sparse targets ``[n, c]`` and their weights ``[c]``.

    ``p[t] = w_pop * pop[layer, domain[t]] + sum_c weight[c] * onehot(targets[t, c])``: the
    token's ``k`` hashed preferred experts (token affinity) and the ``b`` experts its previous
    layer's best expert hands to (Markov); weights sum to 1 with ``w_pop``.
    """
    e = config.num_experts
    a = config.token_affinity
    m = float(model.markov[layer]) if prev is not None else 0.0
    targets, weights = [], []
    if a > 0:  # token-id preference table, evaluated by hashing (salt, layer, id, slot)
        salt = np.uint64((model.salt + layer * 0x9E3779B97F4A7C15) % 2**64)
        targets.append((_splitmix64(ids ^ salt) % np.uint64(e)).astype(np.intp))  # [n, k]
        weights.append(a * (1 - m) * model.pref_weight)
    if m > 0:
        targets.append(model.perm[layer][:, prev].T)  # [n, b]
        weights.append(m * model.perm_weight[layer])
    if not targets:
        return 1.0, np.empty((ids.shape[0], 0), dtype=np.intp), np.empty(0, dtype=np.float32)
    return (
        (1 - a) * (1 - m),
        np.concatenate(targets, axis=1),
        np.concatenate(weights).astype(np.float32),
    )


def _scores(keys: np.ndarray, temperature: float) -> np.ndarray:
    """Gate weights ``[n, k]``: softmax of the perturbed logits ``-log(key) / temperature``."""
    logit = -np.log(np.maximum(keys.astype(np.float64), 1e-300)) / temperature  # X can be 0
    w = np.exp(logit - logit[:, :1])
    return w / w.sum(axis=1, keepdims=True)


def _route_layers(
    config: SyntheticTraceConfig,
    model: _Model,
    rng: np.random.Generator,
    ids: np.ndarray,
    domain: np.ndarray,
    experts: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Exponential race over all ``E`` experts (Gumbel-top-k): ``[n, E]`` work per layer."""
    n = ids.shape[0]
    e, k = config.num_experts, config.top_k
    flat_row = np.arange(n, dtype=np.intp) * e  # p.ravel() offset of each row
    keys = np.empty((n, e), dtype=np.float32)
    prev = None
    for layer in range(config.num_layers):
        w_pop, targets, weights = _layer_parts(config, model, layer, ids, prev)
        p = model.pop[layer][domain]  # [n, E] float32 (a gathered copy)
        if w_pop != 1:
            p *= np.float32(w_pop)
        pf = p.reshape(-1)
        for c in range(targets.shape[1]):  # (row, expert) pairs unique per c: += is exact
            pf[flat_row + targets[:, c]] += weights[c]
        rng.standard_exponential(out=keys, dtype=np.float32)
        np.maximum(p, _P_FLOOR, out=p)
        np.divide(keys, p, out=keys)  # exponential race: smallest key = best
        if k < e:
            top = np.argpartition(keys, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(e), (n, e))
        top_keys = np.take_along_axis(keys, top, axis=1)
        order = np.argsort(top_keys, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        experts[:, layer] = top
        scores[:, layer] = _scores(
            np.take_along_axis(top_keys, order, axis=1), config.score_temperature
        )
        prev = top[:, 0]


def _route_chunk(
    config: SyntheticTraceConfig,
    model: _Model,
    index: int,
    token_id: np.ndarray,
    domain: np.ndarray,
    experts: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Route chunk ``index`` through all layers; fill ``experts``/``scores`` ``[n, L, k]``."""
    rng = _rng(config.seed, _STREAM_ROUTING, index)
    k = config.top_k
    ids = token_id.astype(np.uint64)[:, None] * np.uint64(k) + np.arange(k, dtype=np.uint64)
    _route_layers(config, model, rng, ids, domain, experts, scores)


def _chunk_tokens(config: SyntheticTraceConfig) -> int:
    """Tokens per chunk: ``~2^18`` cells per ``[n, E]`` work array."""
    return max(_MIN_CHUNK_TOKENS, _CHUNK_CELLS // config.num_experts)


def generate_token_trace(config: SyntheticTraceConfig, *, threads: int | None = None) -> TokenTrace:
    """Synthetic :class:`TokenTrace` from ``config`` (validated; bit-identical per seed).

    Tokens are routed in chunks of ``~2^18 / E`` tokens, each chunk from its own random
    stream, so the output does not depend on ``threads``.

    Args:
        config: the knobs (:class:`SyntheticTraceConfig`).
        threads: worker threads over chunks (default: ``min(4, cpu count)``).

    Returns:
        ``experts [T, L, k]`` int16 (distinct per token and layer, best first), ``scores``
        float16 (renormalised over the top-k, descending), ``token_id``, ``sequence_id``,
        ``position`` int32, ``domain`` int16 with ``meta["domains"]``; ``meta`` also holds
        the config (``meta["config"]``) and what the preset imitates.

    Raises:
        ValueError: invalid config values.
    """
    config.validate()
    model = _build_model(config)
    sequence_id, position, domain = _sequences(config)
    token_id = _token_ids(config)
    t, layers, k = config.num_tokens, config.num_layers, config.top_k
    experts = np.empty((t, layers, k), dtype=np.int16)
    scores = np.empty((t, layers, k), dtype=np.float16)
    step = _chunk_tokens(config)
    starts = range(0, t, step)

    def work(i: int, t0: int) -> None:
        t1 = min(t, t0 + step)
        _route_chunk(
            config, model, i, token_id[t0:t1], domain[t0:t1], experts[t0:t1], scores[t0:t1]
        )

    n_threads = threads if threads is not None else min(_MAX_THREADS, os.cpu_count() or 1)
    if n_threads <= 1 or len(starts) == 1:
        for i, t0 in enumerate(starts):
            work(i, t0)
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(work, range(len(starts)), starts))
    names = list(config.domain_names) or [f"domain_{i}" for i in range(config.num_domains)]
    meta = {
        "model": config.model,
        "source": "synthetic (gps.traces.synthetic.generate_token_trace)",
        "description": config.description,
        "calibration": config.calibration,
        "seed": config.seed,
        "domains": names,
        "config": _jsonable(config),
    }
    trace = TokenTrace(
        experts=experts,
        token_id=token_id,
        sequence_id=sequence_id,
        position=position,
        num_experts=config.num_experts,
        scores=scores,
        domain=domain,
        meta=meta,
    )
    return validate_token_trace(trace, "<synthetic>")


def _jsonable(config: Any) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    return {key: list(v) if isinstance(v, tuple) else v for key, v in out.items()}


# ----------------------------------------------------------------------------------------
# load series
# ----------------------------------------------------------------------------------------


def _ou(
    rate: float,
    sigma: np.ndarray,
    target: np.ndarray | float,
    dt: float,
    shape: tuple[int, int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Ornstein-Uhlenbeck path of ``shape`` ``[S, L, E]`` from 0, exact at ``dt`` steps.

    ``x_{s+1} = a x_s + (1 - a) target_s + sigma_s sqrt((1 - a^2) / (2 rate)) eps_s`` with
    ``a = exp(-rate dt)`` (``sigma_s sqrt(dt) eps_s`` for ``rate = 0``); run as one linear
    filter (``scipy.signal.lfilter``) over all layers and experts.
    """
    from scipy.signal import lfilter

    a = float(np.exp(-rate * dt))
    scale = np.sqrt((1 - a * a) / (2 * rate)) if rate > 0 else np.sqrt(dt)
    u = (1 - a) * np.broadcast_to(target, shape) + sigma * scale * rng.standard_normal(shape)
    u = np.concatenate([np.zeros((1, *shape[1:])), u[:-1]], axis=0)  # x_0 = 0
    return lfilter([1.0], [1.0, -a], u, axis=0)


def generate_load_series(config: LoadSeriesConfig) -> LoadSeries:
    """Synthetic :class:`LoadSeries` (training-time expert loads) from ``config``.

    ``x = slow + fast`` (see :class:`LoadSeriesConfig`), ``p_s = softmax(x_s)`` per layer,
    ``counts_s ~ Multinomial(tokens_per_step * k, p_s)``. Counts are multinomial over ``E``
    (a token's ``k`` experts are not forced distinct: at training batch sizes the difference
    is far below the sampling noise).

    Returns:
        ``counts [S, L, E]`` int64 (rows sum to ``tokens_per_step * k``), ``step [S]`` int64
        ``= s * step_interval``; ``meta["config"]`` holds the config.

    Raises:
        ValueError: invalid config values.
    """
    config.validate()
    rng = _rng(config.seed, _STREAM_MODEL)
    s, layers, e = config.num_steps, config.num_layers, config.num_experts
    dt = float(config.step_interval)
    decay = np.exp(-np.arange(s) * dt / config.transient_steps)[:, None, None]  # [S, 1, 1]
    alpha = np.full(e, config.dirichlet_alpha)
    mu0 = np.log(np.maximum(rng.dirichlet(alpha, size=layers), 1e-300))  # [L, E]
    wander = config.transient_drift * np.sqrt(dt) * decay * rng.standard_normal((s, layers, e))
    mu = mu0 + np.cumsum(wander, axis=0) - wander  # mu_s: wander of steps < s
    stable = np.full((s, 1, 1), config.stable_noise)
    x = _ou(config.mean_reversion, stable, mu, dt, (s, layers, e), rng)
    x += _ou(
        config.transient_reversion, config.transient_noise * decay, 0.0, dt, (s, layers, e), rng
    )
    x -= x.max(axis=2, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=2, keepdims=True)
    counts = rng.multinomial(config.tokens_per_step * config.top_k, p).astype(np.int64)
    meta = {
        "model": config.model,
        "source": "synthetic (gps.traces.synthetic.generate_load_series)",
        "description": config.description,
        "calibration": config.calibration,
        "seed": config.seed,
        "tokens_per_step": config.tokens_per_step,
        "top_k": config.top_k,
        "step_interval": config.step_interval,
        "config": _jsonable(config),
    }
    step = np.arange(s, dtype=np.int64) * config.step_interval
    return validate_load_series(LoadSeries(counts=counts, step=step, meta=meta), "<synthetic>")


# ----------------------------------------------------------------------------------------
# presets
# ----------------------------------------------------------------------------------------

_TARGETS: dict[str, type] = {
    f"{__name__}.{cls.__name__}": cls for cls in (SyntheticTraceConfig, LoadSeriesConfig)
}


def available_presets() -> list[str]:
    """Names of the presets in ``conf/trace/`` (file stems, sorted)."""
    return sorted(p.stem for p in (_conf_dir() / "trace").glob("*.yaml"))


def load_preset(name: str) -> SyntheticTraceConfig | LoadSeriesConfig:
    """Config of preset ``name`` (``conf/trace/<name>.yaml``).

    The YAML holds ``_target_`` (the config dataclass, e.g.
    ``gps.traces.synthetic.SyntheticTraceConfig``) and that dataclass's fields; a
    ``calibration`` field says what the preset was calibrated on.

    Raises:
        ValueError: unknown preset (the message lists the available ones), unreadable YAML,
            missing or unknown ``_target_``, unknown field (naming file and field), or a bad
            value.
    """
    available = available_presets()
    if not isinstance(name, str) or not _PRESET_NAME.match(name) or name not in available:
        raise ValueError(
            f"unknown trace preset {name!r}; available: {', '.join(available) or '(none)'} "
            f"(in {_conf_dir() / 'trace'})"
        )
    path = _conf_dir() / "trace" / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read preset: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset must be a mapping of fields")
    data = dict(data)
    target = data.pop("_target_", None)
    cls = _TARGETS.get(target) if isinstance(target, str) else None
    if cls is None:
        raise ValueError(
            f"{path}: field '_target_' must be one of {sorted(_TARGETS)}, got {target!r}"
        )
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ValueError(
                f"{path}: field {key!r}: unknown field of {cls.__name__} "
                f"(known: {', '.join(sorted(known))})"
            )
    try:
        return cls(**data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def generate_from_preset(
    name: str, *, seed: int | None = None, num_tokens: int | None = None
) -> TokenTrace | LoadSeries:
    """Generate preset ``name``, optionally with another ``seed`` and size.

    Args:
        name: preset in ``conf/trace/`` (see :func:`available_presets`).
        seed: overrides the preset's seed.
        num_tokens: overrides ``num_tokens`` (token trace) or ``num_steps`` (load series).

    Raises:
        ValueError: unknown preset or bad values (nothing is generated).
    """
    config = load_preset(name)
    changes: dict[str, int] = {}
    if seed is not None:
        changes["seed"] = seed
    if num_tokens is not None:
        changes["num_tokens" if isinstance(config, SyntheticTraceConfig) else "num_steps"] = (
            num_tokens
        )
    config = dataclasses.replace(config, **changes)  # re-validates
    if isinstance(config, SyntheticTraceConfig):
        return generate_token_trace(config)
    return generate_load_series(config)


__all__ = [
    "LoadSeriesConfig",
    "SyntheticTraceConfig",
    "available_presets",
    "generate_from_preset",
    "generate_load_series",
    "generate_token_trace",
    "load_preset",
]
