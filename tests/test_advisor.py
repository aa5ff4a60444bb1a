"""Advisor internals: held-out data without leaks, decode steps, the recommendation rule, EPLB's
re-plan rate, paper figures, and results.json against its documented schema."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as hs

from gps.advisor import strategies as st
from gps.advisor.advise import MAX_CHANGED_FRACTION, recommend
from gps.advisor.data import prepare
from gps.advisor.paper import paper_figure
from gps.app import CONF_DIR, run
from gps.model import load_model_spec
from gps.profiles import load_cluster_config
from gps.report.sweep import find_runs
from gps.traces.synthetic import generate_load_series, load_preset
from gps.workload import Workload
from predictors import LastBatchPredictor, horizon_errors

DOCS = Path(__file__).parents[1] / "docs" / "results.md"
TINY = ["workload.seq_len=256", "evaluation.train_batches=3", "evaluation.test_batches=2",
        "predictor=fast", "report=minimal", "strategy.ilp=false"]  # fmt: skip
MIXTRAL = load_model_spec("mixtral_8x7b")


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("workload", "steps_tokens"),
    [(Workload(phase="prefill", batch_size=2, seq_len=64), 128),
     (Workload(phase="decode", batch_size=16, context_len=512), 16)],
)  # fmt: skip
def test_prepare_shapes_and_no_leak(workload: Workload, steps_tokens: int) -> None:
    data = prepare(load_preset("mixtral_mmlu_like"), MIXTRAL, workload, train_batches=3,
                   test_batches=2, seed=0)  # fmt: skip
    assert data.tokens_per_batch == steps_tokens
    assert data.train_loads.shape == (3, 32, 8) and data.test_loads.shape == (2, 32, 8)
    assert (data.test_loads.sum(axis=-1) == steps_tokens * 2).all()  # T tokens x top-2
    assert not np.intersect1d(data.fit.sequence_id, data.test.sequence_id).size
    assert data.fit.num_tokens > 0
    if workload.phase == "decode":  # a step = one new token of each of the B sequences
        for n in range(2):
            batch = data.test_batch(n)
            assert np.unique(batch.sequence_id).size == 16
            assert (batch.position == 3 + n).all()


def test_seed_changes_the_trace() -> None:
    w = Workload(phase="prefill", batch_size=1, seq_len=64)
    a, b = (prepare(load_preset("mixtral_mmlu_like"), MIXTRAL, w, train_batches=1,
                    test_batches=1, seed=s) for s in (0, 1))  # fmt: skip
    assert not np.array_equal(a.test_loads, b.test_loads)


def _documented() -> tuple[set[str], set[str], dict[str, str]]:
    """Keys of docs/results.md: top-level table, strategy-entry table, and each top-level
    key's 'what' cell."""
    text = DOCS.read_text()
    top, entry = text.split("## A strategy entry", 1)
    entry = entry.split("\n## ", 1)[0]

    def rows(part: str) -> list[tuple[str, str]]:
        found = re.findall(r"^\| ([^|]+) \| (.+) \|$", part, flags=re.M)
        return [(k, w) for k, w in found if k.strip() not in ("key", "---")]

    def keys(part: str) -> set[str]:
        return {k for cell, _ in rows(part) for k in re.findall(r"`([a-z0-9_]+)`", cell)}

    what = {re.findall(r"`([a-z0-9_]+)`", k)[0]: w for k, w in rows(top)}
    return keys(top), keys(entry), what


def _section_keys(heading: str) -> set[str]:
    """Keys of the table under ``heading`` in docs/results.md."""
    part = DOCS.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    cells = re.findall(r"^\| ([^|]+) \| .+ \|$", part, flags=re.M)
    return {k for cell in cells for k in re.findall(r"`([a-z0-9_]+)`", cell)} - {"key"}


def _check_nested(results: dict, what: dict[str, str]) -> None:
    for key in ("setup", "recommendation", "forecast"):
        if isinstance(results.get(key), dict):
            names = re.findall(r"`([a-z0-9_]+)(?:\[i\]\.([a-z0-9_]+))?[^`]*`", what[key])
            documented = {n for pair in names for n in pair if n}  # `rows[i].mae`: rows, mae
            emitted = set(results[key])
            for row in results[key].get("rows", []):
                emitted |= set(row)
            assert emitted <= documented, (key, emitted - documented)


def test_decode_run_and_documented_schema(tmp_path: Path) -> None:
    run(_cfg(*TINY, "workload=decode", "workload.batch_size=8"), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"] is None  # composed outside the gps command
    top, entry, what = _documented()
    # both ways: every documented key is emitted, every emitted key documented
    # (`forecast` only in load-series runs: test_forecast_run_counts_training_steps;
    # `guideline_map` only in map runs: tests/test_guideline_map.py)
    top -= {"forecast", "guideline_map"}
    assert set(results) == top, set(results) ^ top
    for s in results["strategies"]:
        assert set(s) == entry, (s["name"], set(s) ^ entry)
    published = _section_keys("## A `published_predictors` entry")
    assert results["published_predictors"]  # methods published on other models still show
    for p in results["published_predictors"]:
        assert set(p) == published, (p["name"], set(p) ^ published)
    _check_nested(results, what)
    names = {s["name"]: s for s in results["strategies"]}
    # home + spare slots: serving from home copies is always reachable at zero migration
    assert names["oracle"]["speedup_vs_baseline"] >= 1.0


def test_forecast_run_counts_training_steps(tmp_path: Path) -> None:
    """The training preset records every 10 steps: horizons and windows come out in steps."""
    run(_cfg("+experiment=load_forecast_training", "trace.num_steps=400",
             "predictor.distribution=[last_batch,window_mean]", "report=minimal",
             "predictor.params.window_mean.window=10",
             "evaluation.horizons=[10,100,1000,2000]"), tmp_path)  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    top, _, what = _documented()
    top -= {"guideline_map", "timings_s"}  # map runs / token-trace runs only
    assert set(results) == top, set(results) ^ top
    _check_nested(results, what)
    fc = results["forecast"]
    assert fc["record_interval_steps"] == 10
    assert fc["horizons_steps"] == [10, 100, 1000, 2000] and fc["horizons"] == [1, 10, 100, 200]
    assert results["setup"]["steps"] == 4000 and results["setup"]["records"] == 400
    rows = {r["predictor"]: r for r in fc["rows"]}
    assert rows["window_mean"]["window_steps"] == 100 and rows["last_batch"]["window_steps"] is None
    series = generate_load_series(dataclasses.replace(load_preset("training_gpt_350m_like"),
                                                      num_steps=400, seed=0))  # fmt: skip
    at_1000 = horizon_errors(series, LastBatchPredictor(), (1000,))[1000]
    assert rows["last_batch"]["mae"][2] == pytest.approx(at_1000)  # 100 records ahead
    assert "at 1,000 steps" in results["paper"]["ours"]
    with pytest.raises(ValueError, match=r"evaluation\.horizons=15"):
        run(_cfg("+experiment=load_forecast_training", "trace.num_steps=50",
                 "evaluation.horizons=[15]"), tmp_path / "bad")  # fmt: skip


def test_eplb_replans_at_its_interval() -> None:
    w = Workload(phase="prefill", batch_size=1, seq_len=256)
    data = prepare(load_preset("mixtral_mmlu_like"), MIXTRAL, w, train_batches=3,
                   test_batches=5, seed=0)  # fmt: skip
    ctx = st.Context(MIXTRAL, load_cluster_config("h100_nvlink"), w, data, 2)
    routed = st.periodic(ctx, interval=2, window=2)
    moved = np.flatnonzero(routed.migration_bytes.sum(axis=1) > 0)
    assert set(moved) <= {1, 3}  # absolute steps 3 + n divisible by 2


def _entry(name: str, family: str, speedup: float, changed: float = 0.0,
           spread: float = 0.0, **kw) -> dict:  # fmt: skip
    """A strategy entry with a 95% interval of ``speedup * (1 -/+ spread)``."""
    return {"name": name, "family": family, "speedup_vs_baseline": speedup, "synthetic": False,
            "e2e_time_s": 1.0 / speedup, "balanced_time_s": 0.5, "dropped_token_fraction": changed,
            "rerouted_token_fraction": 0.0, "overhead": None, "migration_bytes_per_step": 0.0,
            "speedup_ci95": [speedup * (1 - spread), speedup * (1 + spread)], **kw}  # fmt: skip


def test_recommend_excludes_oracle_whatif_and_lossy_rules() -> None:
    base = _entry("no_balancing", "baseline", 1.0)
    entries = [
        base, _entry("oracle", "oracle", 2.0), _entry("whatif", "token", 1.9, synthetic=True),
        _entry("capacity_drop@1", "capacity", 1.8, changed=MAX_CHANGED_FRACTION * 2),
        _entry("distribution:ewma", "distribution", 1.3),
    ]  # fmt: skip
    rec = recommend(entries, base)
    assert rec["strategy"] == "distribution:ewma"
    assert "capacity_drop@1" in rec["text"] and "quality cost" in rec["text"]


def test_recommend_breaks_ties_towards_the_simplest() -> None:
    base = _entry("no_balancing", "baseline", 1.0, spread=0.01)
    lossy = _entry("capacity_drop@1.5", "capacity", 1.003, changed=0.003, spread=0.01)
    costly = _entry("token:mlp", "token", 1.002, overhead={"seconds_per_batch": 1e-4},
                    spread=0.01)  # fmt: skip
    rec = recommend([base, lossy, costly], base)
    assert rec["strategy"] == "no_balancing"  # every interval overlaps the leader's
    assert rec["speedup_ci95"] == base["speedup_ci95"]
    assert "95% interval 0.990-1.010x" in rec["text"]
    # the same speed-ups measured tighter: the lossy rule leads alone
    tight = [dict(e, speedup_ci95=[e["speedup_vs_baseline"]] * 2) for e in (base, lossy, costly)]
    assert recommend(tight, tight[0])["strategy"] == "capacity_drop@1.5"


def test_token_level_prediction_is_recommended_only_when_its_interval_clears_the_rest() -> None:
    base = _entry("no_balancing", "baseline", 1.0)
    do = _entry("distribution:ewma", "distribution", 1.06, spread=0.01,
                overhead={"seconds_per_batch": 1e-9})  # fmt: skip
    t2e = _entry("token:popularity", "token", 1.07, spread=0.005,
                 overhead={"seconds_per_batch": 1e-5})  # fmt: skip
    rec = recommend([base, do, t2e], base)
    assert rec["strategy"] == "distribution:ewma" and rec["tie"] is not None
    clear = dict(t2e, speedup_vs_baseline=1.2, speedup_ci95=[1.18, 1.22])
    assert recommend([base, do, clear], base)["strategy"] == "token:popularity"
    # the leader is a token strategy and so is the simplest one tied with it, but that one's
    # interval overlaps Distribution-Only's: Distribution-Only is recommended
    do = _entry("distribution:ewma", "distribution", 1.10, speedup_ci95=[1.08, 1.12])
    lead = _entry("token:a", "token", 1.16, speedup_ci95=[1.14, 1.18],
                  overhead={"seconds_per_batch": 1e-3})  # fmt: skip
    cheap = _entry("token:b", "token", 1.13, speedup_ci95=[1.11, 1.15],
                   overhead={"seconds_per_batch": 1e-5})  # fmt: skip
    rec = recommend([base, do, lead, cheap], base)
    assert rec["strategy"] == "distribution:ewma"
    assert "distribution:ewma" in rec["tie"]["strategies"]


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.tuples(hs.sampled_from(["distribution", "token", "static", "periodic"]),
                          hs.floats(0.8, 1.5), hs.floats(0.0, 0.2), hs.floats(0.0, 0.02)),
                min_size=1, max_size=7))  # fmt: skip
def test_recommendation_is_tied_with_the_leader_and_token_clears_the_rest(rows) -> None:
    """Property of ``recommend`` on any deployable entries (none changing the experts of more
    than ``MAX_CHANGED_FRACTION`` of the copies is picked): the pick is the leader, or its
    interval overlaps the leader's, or it is a strategy without token-level knowledge whose
    interval overlaps a Token-to-Expert one tied with the leader; a Token-to-Expert pick's
    interval clears every strategy without token-level knowledge; a tie names the pick, and
    without a tie the pick is the leader."""

    def meet(a: dict, b: dict) -> bool:
        return a["speedup_ci95"][0] <= b["speedup_ci95"][1] and b["speedup_ci95"][0] <= a[
            "speedup_ci95"][1]  # fmt: skip

    base = _entry("no_balancing", "baseline", 1.0)
    entries = [base, *(_entry(f"{fam}:{i}", fam, s, changed=c, spread=w)
                       for i, (fam, s, w, c) in enumerate(rows))]  # fmt: skip
    ok = [e for e in entries if e["dropped_token_fraction"] <= MAX_CHANGED_FRACTION]
    rec = recommend(entries, base)
    pick = next(e for e in ok if e["name"] == rec["strategy"])
    leader = max(ok, key=lambda e: e["speedup_vs_baseline"])
    tied_token = [e for e in ok if e["family"] == "token" and meet(e, leader)]
    assert (pick is leader or meet(pick, leader)
            or (pick["family"] != "token" and any(meet(pick, t) for t in tied_token)))  # fmt: skip
    if pick["family"] == "token":
        assert not any(meet(pick, e) for e in ok if e["family"] != "token")
    if rec["tie"] is None:
        assert pick["speedup_vs_baseline"] == leader["speedup_vs_baseline"]
    else:
        assert pick["name"] in rec["tie"]["strategies"]


def test_recommend_reports_a_tie_and_why() -> None:
    base = _entry("no_balancing", "baseline", 1.0)
    same = [_entry(f"distribution:{n}", "distribution", 1.19, spread=0.01)
            for n in ("ewma", "last_batch")]  # fmt: skip
    slower = _entry(
        "token:mlp",
        "token",
        1.188,
        spread=0.01,
        overhead={"seconds_per_batch": 1e-4},
        breakdown_s={"predictor": 1 / 1.188 - 1 / 1.19},
    )  # the only difference
    entries = [base, *same, slower, _entry("oracle", "oracle", 1.19, spread=0.01),
               _entry("eplb_every_4", "periodic", 1.1, migration_bytes_per_step=1e9,
                      spread=0.02)]  # fmt: skip
    rec = recommend(entries, base)
    tie = rec["tie"]
    assert tie["strategies"][:2] == ["distribution:ewma", "distribution:last_batch"]
    assert set(tie["strategies"]) == {"distribution:ewma", "distribution:last_batch", "token:mlp"}
    assert not tie["same_step_time"] and not tie["moved_weights"] and tie["oracle_tied"]
    assert "**Tie:** 3 strategies' 95% intervals overlap" in rec["text"]
    assert "None of them copied" in rec["text"]
    assert "oracle" in tie["text"] and "differ by at most 0.17% (predictor overhead)" in tie["text"]
    assert "accuracy does not decide" in tie["text"]
    other = dict(slower, breakdown_s={"predictor": 0.0})  # same times, but not from overhead
    text = recommend([base, *same, other], base)["tie"]["text"]
    assert "(predictor overhead and plan or dispatch differences)" in text
    assert "accuracy does not decide" not in text  # a token predictor's accuracy may matter
    other = dict(other, name="distribution:lightgbm_load", family="distribution")
    assert "(predictor overhead and plan differences)" in recommend(
        [base, *same, other], base)["tie"]["text"]  # fmt: skip
    # the whole difference is exposed expert fetch: the order its belief prefetches in
    fetch = dict(other, breakdown_s={"predictor": 0.0, "expert_fetch": 1 / 1.188 - 1 / 1.19})
    assert "(predictor overhead and prefetch order)" in recommend(
        [base, *same, fetch], base)["tie"]["text"]  # fmt: skip
    # one re-planned: no claim that they kept the start plan; the oracle pulls ahead
    moved = [_entry("distribution:ewma", "distribution", 1.19, migration_bytes_per_step=1.0),
             _entry("distribution:last_batch", "distribution", 1.19)]  # fmt: skip
    tie = recommend([base, *moved, _entry("oracle", "oracle", 1.5)], base)["tie"]
    assert tie["same_step_time"] and tie["moved_weights"] and not tie["oracle_tied"]
    assert "None of them" not in tie["text"] and "tie-break" in tie["text"]
    # a clear winner: no tie
    assert recommend([base, _entry("distribution:ewma", "distribution", 1.2)], base)["tie"] is None


def test_paper_figures() -> None:
    results = {"strategies": [
        _entry("no_balancing", "baseline", 1.0), _entry("distribution:ewma", "distribution", 1.2),
        _entry("token:mlp", "token", 1.0), _entry("ilp_moetuner", "ilp", 1.05),
        _entry("capacity_drop@1", "capacity", 1.5, changed=0.02),
    ]}  # fmt: skip
    results["forecast"] = {"horizons": [100, 200], "horizons_steps": [1000, 2000],
                           "rows": [{"predictor": "ewma", "mae": [0.013, None]}]}  # fmt: skip

    class Paper:
        name, claim, why = "p", "c", "w"

    def figure(metric: str) -> str:
        paper = Paper()
        paper.metric = metric
        return paper_figure(paper, results)["ours"]

    assert "+20.0%" in figure("do_vs_t2e")  # T2E time 1.0 / DO time (1/1.2) - 1
    assert "+5.0%" in figure("speedup:ilp")
    assert "1.500x" in figure("speedup:capacity") and "2.00% of token copies dropped" in figure(
        "speedup:capacity"
    )
    assert "1.30% at 1,000 steps" in figure("forecast") and "n/a at 2,000" in figure("forecast")
    with pytest.raises(ValueError, match=r"paper\.metric"):
        figure("nonsense")


def test_multirun_goes_on_past_a_failing_job(tmp_path: Path) -> None:
    gps = [sys.executable, "-c", "from gps.app import main; main()"]
    proc = subprocess.run(
        [*gps, "-m", *TINY, "workload.batch_size=1", "hardware=a100_nvlink",
         "model=mixtral_8x7b,deepseek_v3", f"hydra.sweep.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = {" ".join(r.overrides): r.status for r in find_runs(tmp_path)}
    assert sorted(status.values()) == ["failed", "ok"]
    failed = next(r for r in find_runs(tmp_path) if r.status == "failed")
    assert "overflows by" in failed.error


@pytest.mark.parametrize(
    ("override", "key"),
    [("strategy.migration_overlap=2", "strategy.migration_overlap"),
     ("report.accuracy_grid=[]", "report.accuracy_grid"),
     ("strategy.replica_slots_per_gpu=-1", "strategy.replica_slots_per_gpu")],
)  # fmt: skip
def test_bad_knobs_fail_before_any_work(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(key)):
        run(_cfg(*TINY, "workload.batch_size=1", override), tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_ilp_with_fewer_experts_than_gpus_uses_every_gpu() -> None:
    w = Workload(phase="prefill", batch_size=1, seq_len=256)
    data = prepare(load_preset("mixtral_mmlu_like"), MIXTRAL, w, train_batches=2,
                   test_batches=1, seed=0)  # fmt: skip
    cluster = load_cluster_config("h100_2node_ib")  # 16 GPUs, 8 experts
    ctx = st.Context(MIXTRAL, cluster, w, data, 2)
    routed = st.ilp(ctx, time_limit_s=5.0, mip_gap=1e-4)
    gpu_tokens = routed.sim.slot_tokens.sum(axis=-1)  # [N, L, G]
    assert (gpu_tokens > 0).all()  # no idle GPU
    assert routed.notes["gpu_groups"] == 8
