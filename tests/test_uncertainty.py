"""Speed-up intervals (gps/advisor/uncertainty.py): hand cases, pairing, seeds, bad inputs, and
a run with evaluation.seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from gps.advisor.advise import recommend
from gps.advisor.eplb.verdict import choose
from gps.advisor.uncertainty import (
    overlaps,
    resample_weights,
    speedup_interval,
    tied_with_leader,
)
from gps.app import CONF_DIR, run


def test_constant_ratio_gives_a_point_interval() -> None:
    base = np.array([1.0, 2.0, 3.0, 4.0])
    lo, hi = speedup_interval(base, base / 1.25)
    assert lo == pytest.approx(1.25) and hi == pytest.approx(1.25)


def test_paired_resampling_keeps_batches_together() -> None:
    """Batch sizes vary 10x but the strategy is always 20% faster: paired draws give a tight
    interval; unpaired draws of the same numbers would not."""
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 10.0, 8)
    strat = base / 1.2 * rng.uniform(0.99, 1.01, 8)
    lo, hi = speedup_interval(base, strat, seed=1)
    assert 1.18 < lo <= base.mean() / strat.mean() <= hi < 1.22
    # the same numbers drawn unpaired would spread over the batches' 10x range
    rng2 = np.random.default_rng(1)
    unpaired = [base[rng2.integers(0, 8, 8)].mean() / strat[rng2.integers(0, 8, 8)].mean()
                for _ in range(400)]  # fmt: skip
    assert np.percentile(unpaired, 97.5) - np.percentile(unpaired, 2.5) > 5 * (hi - lo)
    w = resample_weights(1, 8, np.random.default_rng(0), resamples=5)
    assert w.shape == (5, 1, 8) and np.all(w.sum(axis=(1, 2)) == 8)


def test_seeds_are_resampled_before_batches() -> None:
    w = resample_weights(3, 4, np.random.default_rng(2), resamples=1000)
    assert np.all(w.sum(axis=(1, 2)) == 12)
    per_seed = w.sum(axis=2)  # [B, S]: multiples of 4 (a drawn seed brings all its batches)
    assert np.all(per_seed % 4 == 0)
    # one seed 30% faster than the others widens the interval beyond the batches' spread
    base = np.ones((3, 4))
    strat = np.array([[0.8] * 4, [0.8] * 4, [0.6] * 4])
    lo, hi = speedup_interval(base, strat, seed=0)
    assert lo == pytest.approx(1 / 0.8, rel=1e-9) and hi == pytest.approx(1 / 0.6, rel=1e-9)
    assert overlaps((lo, hi), (1.3, 1.4)) and not overlaps((lo, hi), (1.7, 1.8))


def test_block_one_draws_batches_one_by_one_as_before() -> None:
    """``block=1`` (``gps``'s default) makes exactly the draws of one batch at a time."""
    rng = np.random.default_rng(7)
    picks = rng.integers(0, 2, size=(50, 2))
    inner = rng.integers(0, 5, size=(50, 2, 5))
    ref = np.zeros((50, 2, 5))
    np.add.at(ref, (np.arange(50)[:, None, None], picks[:, :, None], inner), 1.0)
    assert np.array_equal(resample_weights(2, 5, np.random.default_rng(7), 50), ref)
    assert np.array_equal(resample_weights(2, 5, np.random.default_rng(7), 50, block=1), ref)


def test_moving_blocks_keep_consecutive_steps_together() -> None:
    """``block=b``: each resample is ``ceil(N / b)`` runs of ``b`` consecutive steps cut to
    ``N``; a block of the whole series draws only the series itself (a point interval), and a
    trending series' interval is wider with blocks than with independent steps."""
    w = resample_weights(1, 10, np.random.default_rng(0), resamples=200, block=4)
    assert np.all(w.sum(axis=(1, 2)) == 10)
    whole = resample_weights(1, 6, np.random.default_rng(0), resamples=20, block=6)
    assert np.all(whole == 1.0)
    assert np.array_equal(resample_weights(1, 6, np.random.default_rng(0), 20, block=99), whole)
    # hand case, N = 3, b = 2: 2 blocks from starts {0, 1}, cut to 3 steps
    w = resample_weights(1, 3, np.random.default_rng(1), resamples=400, block=2)
    allowed = {(2, 1, 0), (1, 2, 0), (1, 1, 1), (0, 2, 1)}  # starts (0,0) (0,1) (1,0) (1,1)
    assert {tuple(int(v) for v in r[0]) for r in w} == allowed
    # a strategy whose gain drifts along the series: blocks keep the drift's runs together
    n = np.arange(100)
    base = np.ones(100)
    strat = 1.0 / (1.1 + 0.1 * np.sin(n / 8.0))
    lo1, hi1 = speedup_interval(base, strat, seed=3)
    lo8, hi8 = speedup_interval(base, strat, seed=3, block=16)
    assert lo8 <= base.mean() / strat.mean() <= hi8 and hi8 - lo8 > hi1 - lo1
    with pytest.raises(ValueError, match="block=0"):
        speedup_interval(base, strat, block=0)


def test_tied_with_leader_is_the_overlap_rule() -> None:
    """Hand cases: the leader is the first largest speed-up; an interval overlapping its
    interval ties (touching included), one clear of it does not, and overlapping a tied
    strategy other than the leader is not enough."""
    speedups = [1.00, 1.20, 1.15, 1.05, 1.20]
    intervals = [(1.0, 1.0), (1.18, 1.22), (1.10, 1.18), (1.04, 1.12), (1.19, 1.21)]
    assert tied_with_leader(speedups, intervals) == [1, 2, 4]  # 3 overlaps 2, not 1
    assert tied_with_leader([1.0, 1.3], [(1.0, 1.0), (1.25, 1.35)]) == [1]
    assert tied_with_leader([1.0, 1.3], [(1.0, 1.0), (0.99, 1.35)]) == [0, 1]
    assert tied_with_leader([1.1], [[1.0, 1.2]]) == [0]
    with pytest.raises(ValueError, match="need equal"):
        tied_with_leader([], [])
    with pytest.raises(ValueError, match="need equal"):
        tied_with_leader([1.0, 1.1], [(1.0, 1.0)])


@settings(max_examples=40, deadline=None)
@given(
    seeds=st.integers(1, 3), batches=st.integers(1, 9), block=st.integers(1, 12),
    data=st.integers(0, 2**31 - 1), level=st.floats(0.5, 0.99),
)  # fmt: skip
def test_interval_holds_the_point_on_any_draw(seeds, batches, block, data, level) -> None:
    """By construction (percentiles widened to the point): ``lo <= point <= hi`` for any step
    seconds, seeds, blocks and coverage, and a wider coverage never gives a narrower interval."""
    rng = np.random.default_rng(data)
    base = rng.uniform(0.5, 2.0, (seeds, batches))
    strat = base * rng.uniform(0.6, 1.4, (seeds, batches))
    point = base.mean() / strat.mean()
    lo, hi = speedup_interval(base, strat, seed=data, resamples=300, level=level, block=block)
    assert lo <= point <= hi
    lo2, hi2 = speedup_interval(base, strat, seed=data, resamples=300, level=0.995, block=block)
    assert lo2 <= lo and hi <= hi2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 2.0), st.floats(0.0, 0.3)), min_size=1, max_size=8))
def test_gps_and_gps_eplb_tie_the_same_candidates(rows) -> None:
    """``gps``'s recommendation and ``gps-eplb``'s verdict tie exactly the candidates
    ``tied_with_leader`` ties (one rule for both), the fastest always among them."""
    speedups = [s for s, _ in rows]
    cis = [[s * (1 - w), s * (1 + w)] for s, w in rows]
    want = set(tied_with_leader(speedups, cis))
    assert int(np.argmax(speedups)) in want
    entries = [{"name": f"d{i}", "family": "distribution", "speedup_vs_baseline": s,
                "synthetic": False, "e2e_time_s": 1.0 / s, "balanced_time_s": 0.4 / s,
                "dropped_token_fraction": 0.0, "rerouted_token_fraction": 0.0,
                "overhead": None, "migration_bytes_per_step": 0.0, "speedup_ci95": ci}
               for i, (s, ci) in enumerate(zip(speedups, cis, strict=True))]  # fmt: skip
    tie = recommend(entries, entries[0])["tie"]
    if tie is None:
        assert len(want) == 1
    else:
        assert {int(n[1:]) for n in tie["strategies"]} == want
    eplb_rows = [
        {"strategy": "static", "num_redundant_experts": i, "speedup": s, "speedup_ci95": ci}
        for i, (s, ci) in enumerate(zip(speedups, cis, strict=True))
    ]
    _, tied = choose(eplb_rows)
    assert {r["num_redundant_experts"] for r in tied} == want


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same batches"):
        speedup_interval(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="finite and > 0"):
        speedup_interval(np.ones(3), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="level"):
        speedup_interval(np.ones(3), np.ones(3), level=1.0)
    with pytest.raises(ValueError, match="shape"):
        speedup_interval(np.ones((1, 1, 3)), np.ones((1, 1, 3)))


def _cfg(*over: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(over))


TINY = ["workload.seq_len=256", "workload.batch_size=2", "evaluation.train_batches=3",
        "evaluation.test_batches=3", "predictor=fast", "report=minimal", "strategy.ilp=false",
        "strategy.capacity_factors=[1.25]"]  # fmt: skip


def test_a_run_over_seeds_pools_them(tmp_path: Path) -> None:
    run(_cfg(*TINY, "evaluation.seeds=[0,1]"), tmp_path / "two")
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["setup"]["seeds"] == [0, 1]
    for s in res["strategies"]:
        lo, hi = s["speedup_ci95"]
        assert lo <= s["speedup_vs_baseline"] <= hi and s["seeds"] == [0, 1]
    rec = res["recommendation"]
    assert rec["speedup_ci95"] == next(s["speedup_ci95"] for s in res["strategies"]
                                       if s["name"] == rec["strategy"])  # fmt: skip
    assert "95% interval" in rec["text"]
    with pytest.raises(ValueError, match=r"evaluation\.seeds"):
        run(_cfg(*TINY, "evaluation.seeds=[1,1]"), tmp_path / "bad")
    assert not (tmp_path / "bad" / "results.json").exists()
