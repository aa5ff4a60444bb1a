"""Trace statistics on tiny hand-built traces with known answers, and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gps.traces import stats as stats_module
from gps.traces.batching import take_tokens
from gps.traces.stats import (
    TraceStats,
    coefficient_of_variation,
    cross_layer_mutual_information,
    format_stats_table,
    imbalance_ratio,
    load_autocorrelation,
    load_entropy,
    load_series_stats,
    token_id_predictability,
    trace_stats,
    transition_matrix,
)
from gps.traces.trace import LoadSeries, TokenTrace
from gps.traces.validate import validate_token_trace


def _trace(
    experts: list | np.ndarray, num_experts: int, token_id: list | None = None
) -> TokenTrace:
    """A valid trace from ``experts [T, L, k]`` (one sequence, positions 0..T-1)."""
    experts = np.asarray(experts, dtype=np.int16)
    t = experts.shape[0]
    ids = np.full(t, -1) if token_id is None else np.asarray(token_id)
    trace = TokenTrace(
        experts=experts,
        token_id=ids.astype(np.int32),
        sequence_id=np.zeros(t, dtype=np.int32),
        position=np.arange(t, dtype=np.int32),
        num_experts=num_experts,
        meta={"model": "toy"},
    )
    return validate_token_trace(trace)


def _random_trace(t: int, layers: int, k: int, e: int, seed: int, vocab: int = 0) -> TokenTrace:
    rng = np.random.default_rng(seed)
    experts = np.argsort(rng.random((t, layers, e)), axis=-1)[..., :k]  # k distinct ids
    ids = rng.integers(-1, vocab, t) if vocab else None
    return _trace(experts, e, None if ids is None else ids.tolist())


# ---------------------------------------------------------------- elementwise statistics


def test_uniform_loads_are_balanced() -> None:
    loads = np.full((2, 3, 8), 5)
    assert np.array_equal(imbalance_ratio(loads), np.ones((2, 3)))
    assert np.array_equal(imbalance_ratio(loads, ep_degree=4), np.ones((2, 3)))
    assert np.allclose(load_entropy(loads), 3.0)  # log2(8)
    assert np.array_equal(coefficient_of_variation(loads), np.zeros((2, 3)))


def test_one_hot_expert() -> None:
    loads = np.array([16, 0, 0, 0, 0, 0, 0, 0])
    # experts: max 16 / mean 2 = 8 = E; GPUs (G=4, 2 experts each): [16,0,0,0], 16/4 = 4 = G
    assert imbalance_ratio(loads) == pytest.approx(8.0)
    assert imbalance_ratio(loads, ep_degree=4) == pytest.approx(4.0)
    assert imbalance_ratio(loads, ep_degree=1) == pytest.approx(1.0)  # one GPU holds all
    assert load_entropy(loads) == pytest.approx(0.0)
    # mean 2, population variance (14^2 + 7 * 2^2) / 8 = 28, std sqrt(28); sqrt(7) = sqrt(E-1)
    assert coefficient_of_variation(loads) == pytest.approx(np.sqrt(7.0))


def test_hand_computed_values_and_contiguous_placement() -> None:
    # [3,1,0,4], G=2 contiguous: GPU0 = 3+1 = 4, GPU1 = 0+4 = 4 -> 1.0
    # (interleaved placement would give [3,5] -> 1.25); experts: 4 / 2 = 2.0
    assert imbalance_ratio(np.array([3, 1, 0, 4]), ep_degree=2) == pytest.approx(1.0)
    assert imbalance_ratio(np.array([3, 1, 0, 4])) == pytest.approx(2.0)
    # [1,1,2,0]: p = [1/4,1/4,1/2,0] -> H = 1/4*2 + 1/4*2 + 1/2*1 + 0 = 1.5 bits
    assert load_entropy(np.array([1, 1, 2, 0])) == pytest.approx(1.5)
    # mean 1, population variance (0 + 0 + 1 + 1) / 4 = 0.5 -> CV sqrt(0.5)
    assert coefficient_of_variation(np.array([1, 1, 2, 0])) == pytest.approx(np.sqrt(0.5))


def test_all_zero_rows_count_as_balanced() -> None:
    loads = np.zeros((3, 4))
    assert np.array_equal(imbalance_ratio(loads, ep_degree=2), np.ones(3))
    assert np.allclose(load_entropy(loads), 2.0)
    assert np.array_equal(coefficient_of_variation(loads), np.zeros(3))


def test_uneven_experts_per_gpu_follow_the_home_placement_by_hand() -> None:
    # E=6 on G=4: ceil(6/4) = 2 slots, GPUs hold {0,1} {2,3} {4,5} {} -> loads 3, 7, 11, 0;
    # mean over the 4 GPUs 21/4 -> max/mean 11 / 5.25
    loads = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert imbalance_ratio(loads, ep_degree=4) == pytest.approx(11 / 5.25)
    # E=2 on G=4: each expert has two copies sharing its tokens: GPU loads 1, 1, 3, 3
    assert imbalance_ratio(np.array([2.0, 6.0]), ep_degree=4) == pytest.approx(3 / 2)


def test_bad_loads_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="ep_degree must be >= 1"):
        imbalance_ratio(np.ones(4), ep_degree=0)
    for fn in (imbalance_ratio, load_entropy, coefficient_of_variation):
        with pytest.raises(ValueError, match="non-negative"):
            fn(np.array([1, -1, 2, 0]))
    with pytest.raises(ValueError, match="finite"):
        load_entropy(np.array([1.0, np.nan]))


# ---------------------------------------------------------------- autocorrelation


def test_alternating_load_has_autocorrelation_minus_one() -> None:
    n = np.arange(6)
    alternating = 5 * (-1) ** n
    loads = np.zeros((6, 3, 3), dtype=np.int64)
    # layer 0: experts 0/1 swap 15/5 every batch -> shares 0.75/0.25 alternate: r(lag 1) = -1
    loads[:, 0, 0], loads[:, 0, 1] = 10 + alternating, 10 - alternating
    # layer 1: same plus expert 2 at a constant share 1/2 (zero variance: skipped) -> -1
    loads[:, 1, 0], loads[:, 1, 1], loads[:, 1, 2] = 10 + alternating, 10 - alternating, 20
    # layer 2: constant loads -> every expert skipped -> NaN
    loads[:, 2] = [1, 2, 3]
    lag1 = load_autocorrelation(loads)
    assert lag1[:2] == pytest.approx([-1.0, -1.0])
    assert np.isnan(lag1[2])
    assert load_autocorrelation(loads, lag=2)[:2] == pytest.approx([1.0, 1.0])  # period 2


def test_autocorrelation_bad_input() -> None:
    with pytest.raises(ValueError, match="more than lag=2"):
        load_autocorrelation(np.ones((2, 1, 4)), lag=2)
    with pytest.raises(ValueError, match="lag must be"):
        load_autocorrelation(np.ones((5, 1, 4)), lag=0)
    with pytest.raises(ValueError, match=r"\[N, L, E\]"):
        load_autocorrelation(np.ones((5, 4)))


# ---------------------------------------------------------------- cross-layer statistics


def test_deterministic_layer_map_gives_one_hot_transitions_and_log2e_bits() -> None:
    # k = 1, E = 4: layer 1 = (layer 0 + 1) % 4, layer 2 = 3 - layer 1; each expert used twice
    first = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    second = (first + 1) % 4
    experts = np.stack([first, second, 3 - second], axis=1)[:, :, None]  # [8, 3, 1]
    trace = _trace(experts, 4)
    p = transition_matrix(trace)
    assert p.shape == (2, 4, 4) and p.dtype == np.float64
    assert np.array_equal(p[0], np.eye(4)[[1, 2, 3, 0]])  # row i one-hot at (i + 1) % 4
    assert np.array_equal(p[1], np.eye(4)[[3, 2, 1, 0]])
    # uniform marginals, Y a function of X: I = H(X) = log2(4) = 2 bits
    assert cross_layer_mutual_information(trace) == pytest.approx([2.0, 2.0])


def test_independent_layers_have_zero_mutual_information() -> None:
    # every (layer 0, layer 1) combination once: joint 1/16 = (1/4)(1/4) -> I = 0, rows uniform
    a, b = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    trace = _trace(np.stack([a.ravel(), b.ravel()], axis=1)[:, :, None], 4)
    assert cross_layer_mutual_information(trace) == pytest.approx([0.0], abs=1e-12)
    assert np.allclose(transition_matrix(trace), 0.25)


def test_top2_pairs_and_unused_rows() -> None:
    # k = 2, E = 4: half the tokens route {0,1} -> {0,1}, half {2,3} -> {2,3}. The k*k pairs
    # are (0,0),(0,1),(1,0),(1,1),(2,2),(2,3),(3,2),(3,3), each 1/8; marginals 1/4 each, so
    # I = 8 * 1/8 * log2((1/8) / (1/16)) = 1 bit.
    trace = _trace([[[0, 1], [0, 1]], [[2, 3], [3, 2]]] * 3, 4)
    assert cross_layer_mutual_information(trace) == pytest.approx([1.0])
    p = transition_matrix(trace)
    assert np.allclose(p[0, 0], [0.5, 0.5, 0, 0]) and np.allclose(p[0, 3], [0, 0, 0.5, 0.5])
    # only experts 0 and 1 at layer 0 -> rows 2 and 3 have no counts -> uniform 1/E
    p = transition_matrix(_trace([[[0], [2]], [[1], [3]]], 4))
    assert np.allclose(p[0, 2:], 0.25) and np.array_equal(p[0, 0], [0, 0, 1, 0])


def test_single_layer_trace_has_no_transitions() -> None:
    trace = _trace([[[0, 1]], [[1, 2]]], 3)
    assert transition_matrix(trace).shape == (0, 3, 3)
    assert cross_layer_mutual_information(trace).shape == (0,)


def test_chunked_transitions_match_a_per_token_count(monkeypatch: pytest.MonkeyPatch) -> None:
    trace = _random_trace(t=300, layers=4, k=2, e=6, seed=1)
    expected = np.zeros((3, 6, 6))
    for tok in trace.experts.astype(int):  # brute force: every (slot, slot) pair
        for layer in range(3):
            for i in tok[layer]:
                for j in tok[layer + 1]:
                    expected[layer, i, j] += 1
    expected /= expected.sum(axis=-1, keepdims=True)
    monkeypatch.setattr(stats_module, "_CHUNK_ELEMENTS", 50)  # ~4 tokens per chunk
    assert np.allclose(transition_matrix(trace), expected)


# ---------------------------------------------------------------- token-id predictability


def test_token_id_predictability_known_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # layer 0: id -> expert deterministic -> 1.0. layer 1 (k = 1): id 7 -> [0, 0, 1] (table
    # says 0: 2 hits), id 9 -> [2] (1 hit): 3 of 4 = 0.75. Tokens without an id are ignored.
    experts = [[[3], [0]], [[3], [0]], [[3], [1]], [[1], [2]], [[0], [3]], [[2], [1]]]
    trace = _trace(experts, 4, token_id=[7, 7, 7, 9, -1, -1])
    assert token_id_predictability(trace) == pytest.approx([1.0, 0.75])
    # k = 2: id 5 -> {0,1}, {0,2}, {0,1}: counts 0:3, 1:2, 2:1 -> table {0,1} hits 3 + 2 = 5 of
    # k * T = 6; id 6 -> {3,1} once: 2 of 2. Total 7 / 8.
    trace2 = _trace([[[0, 1]], [[0, 2]], [[1, 0]], [[3, 1]]], 4, token_id=[5, 5, 5, 6])
    assert token_id_predictability(trace2) == pytest.approx([7 / 8])
    monkeypatch.setattr(stats_module, "_DENSE_TOKEN_ID_CELLS", 0)  # the sparse path
    assert token_id_predictability(trace) == pytest.approx([1.0, 0.75])
    assert token_id_predictability(trace2) == pytest.approx([7 / 8])


def test_token_id_predictability_sparse_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    trace = _random_trace(t=400, layers=3, k=2, e=8, seed=2, vocab=30)
    dense = token_id_predictability(trace)
    assert np.all((dense >= 2 / 8) & (dense <= 1.0))
    monkeypatch.setattr(stats_module, "_DENSE_TOKEN_ID_CELLS", 0)
    monkeypatch.setattr(stats_module, "_CHUNK_ELEMENTS", 60)
    assert np.allclose(token_id_predictability(trace), dense)


def test_token_id_predictability_without_ids_is_nan() -> None:
    assert np.isnan(token_id_predictability(_trace([[[0], [1]]], 2))).all()


# ---------------------------------------------------------------- TraceStats


def test_trace_stats_hand_computed_batches() -> None:
    # B = 2, E = 4, G = 2 (GPU0 = experts 0,1), k = 1, L = 1, 5 tokens (last batch partial)
    # batch 0 experts {0,1}: GPUs [2,0] -> 2.0, experts [1,1,0,0] -> 1 / 0.5 = 2.0
    # batch 1 experts {0,2}: GPUs [1,1] -> 1.0, experts [1,0,1,0] -> 2.0
    # whole trace (5th token on expert 3): [2,1,1,1] -> max/mean = 2 / 1.25 = 1.6
    trace = _trace([[[0]], [[1]], [[0]], [[2]], [[3]]], 4)
    st = trace_stats(trace, batch_size=2, ep_degree=2)
    assert st.kind == "token_trace" and st.num_batches == 2 and "partial batch" in st.note
    assert st.imbalance == pytest.approx([1.5])
    assert st.imbalance_expert_batch == pytest.approx([2.0])
    assert st.imbalance_expert == pytest.approx([1.6])
    assert np.allclose(st.proportions, [[0.4, 0.2, 0.2, 0.2]])
    assert st.mutual_information.shape == (0,) and st.transitions.shape == (0, 4, 4)
    assert st.summary["imbalance"] == pytest.approx(1.5)


def test_trace_stats_short_trace_and_serialisation() -> None:
    trace = _random_trace(t=10, layers=3, k=2, e=4, seed=3, vocab=5)
    st = trace_stats(trace, batch_size=64, ep_degree=2)
    assert st.num_batches == 1 and "fewer than batch_size=64" in st.note
    assert np.isnan(st.autocorrelation).all()  # one batch: no autocorrelation
    data = st.to_dict()
    text = json.dumps(data, allow_nan=False)  # NaN became null
    assert data["autocorrelation"] == [None, None, None] and "transitions" not in data
    assert len(st.to_dict(include_transitions=True)["transitions"]) == 2
    assert json.loads(text)["summary"]["entropy"] == pytest.approx(np.median(st.entropy))
    table = format_stats_table(st)
    assert "tokid_hit" in table and len(table.splitlines()) > 3 + 3


def test_trace_stats_rejects_bad_arguments() -> None:
    trace = _random_trace(t=8, layers=2, k=1, e=6, seed=4)
    with pytest.raises(ValueError, match=r"ep_degree must be >= 1"):
        trace_stats(trace, batch_size=4, ep_degree=0)
    with pytest.raises(ValueError, match="batch_size"):
        trace_stats(trace, batch_size=0, ep_degree=2)
    with pytest.raises(ValueError, match="no tokens"):
        trace_stats(take_tokens(trace, slice(0, 0)), ep_degree=2)


def test_load_series_stats() -> None:
    counts = np.zeros((6, 2, 4), dtype=np.int64)
    alt = 5 * (-1) ** np.arange(6)
    counts[:, 0] = np.stack([10 + alt, 10 - alt, 10 + 0 * alt, 10 + 0 * alt], axis=1)
    counts[:, 1] = [40, 0, 0, 0]  # one hot expert: GPUs (G=2) [40, 0] -> 2.0, experts -> 4.0
    series = LoadSeries(counts=counts, step=np.arange(6, dtype=np.int64) * 100)
    st = load_series_stats(series, ep_degree=2)
    assert isinstance(st, TraceStats) and st.kind == "load_series" and st.num_steps == 6
    assert st.mutual_information is None and st.transitions is None
    assert st.token_id_predictability is None
    assert st.autocorrelation[0] == pytest.approx(-1.0) and np.isnan(st.autocorrelation[1])
    # layer 0 per step: GPU0 = experts 0+1 = 20, GPU1 = 20 -> 1.0; layer 1 -> 2.0
    assert st.imbalance == pytest.approx([1.0, 2.0])
    assert st.imbalance_expert == pytest.approx([1.0, 4.0])
    assert st.entropy == pytest.approx([2.0, 0.0])
    assert "MI_next" not in format_stats_table(st)
    json.dumps(st.to_dict(), allow_nan=False)


def test_mixtral_real_trace_ratios_are_plausible(mixtral_trace: TokenTrace) -> None:
    # docs/traces.md: per-layer expert max/mean over each file, median 1.48 (GSM8K) and 1.45
    # (HumanEval), ranges 1.26-1.87 and 1.14-1.86
    trace = mixtral_trace
    for domain, median, lo, hi in ((0, 1.48, 1.26, 1.87), (1, 1.45, 1.14, 1.86)):
        ratio = trace_stats(take_tokens(trace, trace.domain == domain)).imbalance_expert
        assert np.median(ratio) == pytest.approx(median, abs=0.005)
        assert (ratio.min(), ratio.max()) == pytest.approx((lo, hi), abs=0.005)
    st = trace_stats(trace, batch_size=64, ep_degree=8)
    assert np.all((st.entropy > 2.8) & (st.entropy <= 3.0))  # near-uniform, log2(8) = 3
    assert np.all((st.mutual_information > 0) & (st.mutual_information < 0.5))
    assert np.isnan(st.token_id_predictability).all()  # the logs carry no token ids
    assert len(format_stats_table(st).splitlines()) > 32


# ---------------------------------------------------------------- plots


def _stats_for_plots(kind: str) -> TraceStats:
    if kind == "token_trace":
        return trace_stats(_random_trace(t=96, layers=3, k=2, e=4, seed=5), 16, 2)
    counts = np.random.default_rng(6).integers(0, 50, (8, 2, 4))
    return load_series_stats(LoadSeries(counts=counts, step=np.arange(8, dtype=np.int64)), 2)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("token_trace", {"expert_load_heatmap", "layer_balance", "transitions", "autocorrelation"}),
        (
            "load_series",
            {"expert_load_heatmap", "layer_balance", "autocorrelation", "load_over_steps"},
        ),
    ],
)
def test_plots_are_png_files(tmp_path: Path, kind: str, expected: set[str]) -> None:
    from gps.traces.plots import plot_trace_stats

    written = plot_trace_stats(_stats_for_plots(kind), tmp_path / "plots")
    assert {p.stem for p in written} == expected and all(p.suffix == ".png" for p in written)
    for path in written:
        assert path.parent == tmp_path / "plots"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
