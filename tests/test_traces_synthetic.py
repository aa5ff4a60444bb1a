"""Synthetic routing traces: determinism, validity, knob directions, presets, bad configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import gps.traces.synthetic as synthetic
from gps.traces import batch_loads, validate_load_series, validate_token_trace
from gps.traces.stats import (
    cross_layer_mutual_information,
    imbalance_ratio,
    token_id_predictability,
)
from gps.traces.synthetic import (
    LoadSeriesConfig,
    SyntheticTraceConfig,
    generate_from_preset,
    generate_load_series,
    generate_token_trace,
    load_preset,
)
from gps.traces.trace import LoadSeries, TokenTrace
from predictors import WindowMeanPredictor, horizon_errors

SMALL = SyntheticTraceConfig(
    num_tokens=3000,
    num_layers=6,
    num_experts=8,
    top_k=2,
    num_domains=4,
    domain_shift=0.3,
    vocab_size=200,
    token_affinity=0.3,
    markov_strength=0.3,
)


def _gen(**changes: object) -> TokenTrace:
    return generate_token_trace(dataclasses.replace(SMALL, **changes))


def _imbalance(trace: TokenTrace) -> float:
    """Median over layers of max/mean expert load over the whole trace."""
    return float(np.median(imbalance_ratio(batch_loads(trace, trace.num_tokens)[0])))


def _median_over_seeds(stat, seeds=range(3), **changes: object) -> float:
    return float(np.median([np.median(stat(_gen(seed=s, **changes))) for s in seeds]))


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    a, b, c = _gen(seed=5), _gen(seed=5), _gen(seed=6)
    for name in ("experts", "scores", "token_id", "sequence_id", "position", "domain"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.meta == b.meta
    assert not np.array_equal(a.experts, c.experts)


def test_output_does_not_depend_on_threads() -> None:
    config = dataclasses.replace(SMALL, num_tokens=3 * synthetic._chunk_tokens(SMALL) + 17)
    one = generate_token_trace(config, threads=1)
    two = generate_token_trace(config, threads=2)
    assert np.array_equal(one.experts, two.experts) and np.array_equal(one.scores, two.scores)


def test_token_trace_is_valid_and_well_formed() -> None:
    trace = _gen(seed=1)
    validate_token_trace(trace)
    t, layers, k = trace.experts.shape
    assert (t, layers, k) == (3000, 6, 2) and trace.num_experts == 8
    ordered = np.sort(trace.experts, axis=2)
    assert (np.diff(ordered, axis=2) != 0).all()  # no expert repeated within a top-k
    scores = trace.scores.astype(np.float64)
    assert np.allclose(scores.sum(axis=2), 1.0, atol=2e-3)
    assert (np.diff(scores, axis=2) <= 1e-3).all()  # best first
    assert trace.meta["domains"] == [f"domain_{i}" for i in range(4)]
    assert 0 <= trace.domain.min() and trace.domain.max() < 4
    assert 0 <= trace.token_id.min() and trace.token_id.max() < 200
    # sequences: consecutive runs, positions 0.. inside each, lengths within [64, 256]
    starts = np.flatnonzero(trace.position == 0)
    assert np.array_equal(starts, np.flatnonzero(np.r_[True, np.diff(trace.sequence_id) != 0]))
    lengths = np.diff(np.r_[starts, t])
    assert (lengths[:-1] >= 64).all() and (lengths <= 256).all()
    one_domain = [np.unique(trace.domain[trace.sequence_id == s]).size for s in range(3)]
    assert one_domain == [1, 1, 1]


def test_top_k_equal_to_num_experts_and_zipf_popularity() -> None:
    trace = _gen(num_experts=4, top_k=4, markov_branching=2, popularity="zipf", zipf_exponent=1)
    assert (np.sort(trace.experts, axis=2) == np.arange(4)).all()


def test_more_skew_gives_higher_imbalance() -> None:
    flat = _median_over_seeds(_imbalance, dirichlet_alpha=100.0, token_affinity=0.0)
    skewed = _median_over_seeds(_imbalance, dirichlet_alpha=1.0, token_affinity=0.0)
    assert skewed > flat + 0.3
    zipf_lo = _median_over_seeds(_imbalance, popularity="zipf", zipf_exponent=0.2)
    zipf_hi = _median_over_seeds(_imbalance, popularity="zipf", zipf_exponent=1.5)
    assert zipf_hi > zipf_lo + 0.3


def test_more_token_affinity_gives_more_token_id_predictability() -> None:
    lo = _median_over_seeds(token_id_predictability, token_affinity=0.0)
    mid = _median_over_seeds(token_id_predictability, token_affinity=0.4)
    hi = _median_over_seeds(token_id_predictability, token_affinity=0.9)
    assert lo + 0.05 < mid < hi - 0.05
    # held-out check with our own lookup: token id -> most frequent top-1 expert
    trace = _gen(token_affinity=0.9, num_tokens=6000)
    train, test = slice(0, 3000), slice(3000, 6000)
    e, v = trace.num_experts, SMALL.vocab_size
    counts = np.zeros((v, e), dtype=np.int64)
    np.add.at(counts, (trace.token_id[train], trace.experts[train, 0, 0]), 1)
    seen = counts.sum(axis=1)[trace.token_id[test]] > 0
    hit = counts.argmax(axis=1)[trace.token_id[test]] == trace.experts[test, 0, 0]
    assert hit[seen].mean() > 0.4  # chance is ~1/8


def test_more_markov_strength_gives_more_cross_layer_mi() -> None:
    base = {"token_affinity": 0.0, "domain_shift": 0.0}
    lo = _median_over_seeds(cross_layer_mutual_information, markov_strength=0.0, **base)
    mid = _median_over_seeds(cross_layer_mutual_information, markov_strength=0.4, **base)
    hi = _median_over_seeds(cross_layer_mutual_information, markov_strength=0.9, **base)
    assert lo < 0.02 and lo + 0.03 < mid < hi - 0.1


def test_domain_shift_separates_domains() -> None:
    def domain_distance(trace: TokenTrace) -> float:
        loads = [
            np.stack(
                [
                    np.bincount(trace.experts[trace.domain == d][:, la].ravel(), minlength=8)
                    for la in range(trace.num_layers)
                ]
            )
            for d in range(2)
        ]
        props = [x / x.sum(axis=1, keepdims=True) for x in loads]
        return float(np.abs(props[0] - props[1]).sum(axis=1).mean() / 2)

    same = _median_over_seeds(domain_distance, num_domains=2, domain_shift=0.0, token_affinity=0)
    apart = _median_over_seeds(domain_distance, num_domains=2, domain_shift=1.0, token_affinity=0)
    assert apart > same + 0.1


def test_load_series_valid_deterministic_and_transient_noisier_than_stable() -> None:
    config = LoadSeriesConfig(num_steps=1500, num_layers=3, num_experts=8, transient_steps=2000.0)
    series = generate_load_series(config)
    validate_load_series(series)
    assert series.counts.shape == (1500, 3, 8) and series.counts.dtype == np.int64
    assert (series.counts.sum(axis=2) == config.tokens_per_step).all()
    assert np.array_equal(series.step, np.arange(1500) * 10)
    assert np.array_equal(generate_load_series(config).counts, series.counts)
    p = series.counts / series.counts.sum(axis=2, keepdims=True)
    transient = np.diff(p[:200], axis=0).var()  # first 2,000 steps
    stable = np.diff(p[-200:], axis=0).var()  # after 5 x transient_steps
    assert transient > 10 * stable


def test_training_preset_forecast_error_grows_with_the_stable_noise() -> None:
    """The preset's stable-phase noise is an assumption (no published measurement; it is not
    tuned to the paper's figure): the forecast error it yields must scale with it, as the
    sensitivity table (benchmarks/forecast_noise_sensitivity.py) shows."""
    config = load_preset("training_gpt_350m_like")
    window = WindowMeanPredictor(window=1000 // config.step_interval)  # 1,000 training steps
    errors = []
    for noise in (0.004, config.stable_noise, 0.016):
        series = generate_load_series(dataclasses.replace(config, stable_noise=noise))
        errors.append(horizon_errors(series, window, (1000,))[1000])
    assert errors[0] < errors[1] < errors[2]
    assert errors[2] > 3 * errors[0]  # ~linear in the noise (4x here)


@pytest.mark.parametrize(
    ("name", "kind", "shape"),
    [
        ("mixtral_mmlu_like", SyntheticTraceConfig, (32, 8, 2)),
        ("deepseek_like", SyntheticTraceConfig, (58, 256, 8)),
        ("training_gpt_350m_like", LoadSeriesConfig, (None, None, None)),
    ],
)
def test_presets_load(name: str, kind: type, shape: tuple) -> None:
    config = load_preset(name)
    assert isinstance(config, kind) and config.calibration and config.description
    if kind is SyntheticTraceConfig:
        assert (config.num_layers, config.num_experts, config.top_k) == shape
        trace = generate_from_preset(name, seed=1, num_tokens=64)
        assert isinstance(trace, TokenTrace) and trace.num_tokens == 64
        assert trace.meta["config"]["seed"] == 1
    else:
        series = generate_from_preset(name, num_tokens=50)
        assert isinstance(series, LoadSeries) and series.counts.shape[0] == 50


def test_mixtral_preset_lands_near_the_real_trace() -> None:
    """Per-layer max/mean load median near the real trace's 1.33 at its 577 tokens."""
    config = dataclasses.replace(load_preset("mixtral_mmlu_like"), num_tokens=577)
    medians = [
        _imbalance(generate_token_trace(dataclasses.replace(config, seed=s))) for s in range(4)
    ]
    assert 1.2 < np.mean(medians) < 1.45


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"no_such_preset.*available: .*mixtral_mmlu_like"):
        load_preset("no_such_preset")
    with pytest.raises(ValueError, match="unknown trace preset"):
        generate_from_preset("../conf/config")


def _preset_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    (tmp_path / "trace").mkdir()
    (tmp_path / "trace" / "bad.yaml").write_text(text)
    monkeypatch.setattr(synthetic, "_conf_dir", lambda: tmp_path)


def test_unknown_field_names_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _preset_dir(
        tmp_path, monkeypatch, "_target_: gps.traces.synthetic.SyntheticTraceConfig\nskew: 1\n"
    )
    with pytest.raises(ValueError, match=r"bad\.yaml: field 'skew': unknown field"):
        load_preset("bad")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num_tokens: 5\n", "_target_"),
        ("_target_: os.system\n", "_target_"),
        ("_target_: gps.traces.synthetic.SyntheticTraceConfig\ntop_k: 9\n", "top_k"),
        ("_target_: gps.traces.synthetic.SyntheticTraceConfig\nnum_tokens: many\n", "num_tokens"),
        ("- a\n- b\n", "mapping"),
    ],
)
def test_bad_preset_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    _preset_dir(tmp_path, monkeypatch, text)
    with pytest.raises(ValueError, match=message):
        load_preset("bad")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dirichlet_alpha": -1.0}, "dirichlet_alpha"),
        ({"dirichlet_alpha": 0.0}, "dirichlet_alpha"),
        ({"zipf_exponent": -0.5}, "zipf_exponent"),
        ({"top_k": 9}, "top_k"),
        ({"top_k": 0}, "top_k"),
        ({"token_affinity": 1.5}, "token_affinity"),
        ({"token_affinity": -0.1}, "token_affinity"),
        ({"markov_strength": 2.0}, "markov_strength"),
        ({"popularity": "gauss"}, "popularity"),
        ({"num_tokens": 0}, "num_tokens"),
        ({"num_tokens": True}, "num_tokens"),
        ({"num_tokens": 10.0}, "num_tokens"),
        ({"domain_names": ["a"]}, "domain_names"),
        ({"min_sequence_length": 300}, "max_sequence_length"),
        ({"markov_branching": 9}, "markov_branching"),
        ({"score_temperature": 0.0}, "score_temperature"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_token_config_values(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"SyntheticTraceConfig\.{field}"):
        dataclasses.replace(SMALL, **changes)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"top_k": 17}, "top_k"),
        ({"stable_noise": -1.0}, "stable_noise"),
        ({"transient_steps": 0.0}, "transient_steps"),
        ({"mean_reversion": -0.1}, "mean_reversion"),
        ({"dirichlet_alpha": -2.0}, "dirichlet_alpha"),
    ],
)
def test_bad_load_series_config_values(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"LoadSeriesConfig\.{field}"):
        LoadSeriesConfig(**changes)
