"""The on-disk cache (``gps.cache``) and the sped-up hot paths: identical results with and
without the cache, keys that hit on a hardware override and miss on a seed change, a killed
writer whose entry is never read back, and the fast paths equal to the reference ones."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as hs

from gps import cache
from gps.advisor import advise
from gps.app import CONF_DIR
from gps.plans import capacity_drop, capacity_reroute
from gps.plans.capacity import stable_argsort
from gps.report.cli import main as report_main
from gps.timing import show_progress
from gps.traces.synthetic import SyntheticTraceConfig, generate_token_trace
from gps.traces.trace import TokenTrace
from predictors.base import topk_from_scores
from predictors.metrics import exact_set_accuracy, expert_histogram
from predictors.splits import split_copies
from predictors.token import (
    MLPTokenPredictor,
    PreviousLayerPredictor,
    TokenIdTablePredictor,
    previous_layer_experts,
)
from predictors.whatif import WhatIfTokenPredictor

SMALL = ["workload.seq_len=256", "workload.batch_size=2", "evaluation.train_batches=3",
         "evaluation.test_batches=2", "predictor=fast", "report=minimal",
         "report.guidelines=true", "strategy.ilp_time_limit_s=1"]  # fmt: skip
# What differs between two runs of one config whatever the cache does (docs/results.md).
VOLATILE = {"timings_s", "measured_fit_s", "measured_predict_s", "solve_time_s", "message",
            "cache", "cache_dir"}  # fmt: skip


def _advise(tmp: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"cache_dir={tmp}", *overrides])
    return advise(cfg)


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def test_results_identical_with_and_without_cache_and_keys(tmp_path: Path) -> None:
    off = _advise(tmp_path, "cache=off")
    assert not cache.enabled() and not list(tmp_path.iterdir())
    cold = _advise(tmp_path)
    assert cache.stats["predictors:miss"] == 6 and cache.stats["traces:miss"] == 1
    warm = _advise(tmp_path)
    hits = {k: v for k, v in cache.stats.items() if v}
    assert hits == {"traces:hit": 1, "predictors:hit": 6, "whatif:hit": 1, "ilp:hit": 1,
                    "capacity:hit": 4}  # fmt: skip
    assert _strip(off) == _strip(cold) == _strip(warm)
    assert all(p["cached"] for p in warm["timings_s"]["predictors"].values())
    # a hardware override (same topology) hits everything; a seed change misses everything
    _advise(tmp_path, "hardware=a100_nvlink")
    assert not any(cache.stats[f"{k}:miss"] for k in cache.KINDS)
    _advise(tmp_path, "seed=1")
    assert cache.stats["traces:miss"] == 1 and cache.stats["predictors:miss"] == 6
    assert not any(cache.stats[f"{k}:hit"] for k in ("traces", "predictors", "whatif"))
    held = cache.summary(tmp_path)
    assert held["traces"]["entries"] == 2 and held["predictors"]["entries"] == 12


def test_timings_cover_every_phase(tmp_path: Path) -> None:
    res = _advise(tmp_path, "cache=off")
    t = res["timings_s"]
    assert {"data", "strategies", "predictors", "pricing", "guidelines"} <= set(t)
    assert set(t["strategies"]) >= {"no_balancing", "eplb", "oracle", "ilp"}
    assert all(v["fit"] >= 0 and v["predict"] >= 0 for v in t["predictors"].values())


def test_progress_is_quiet_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert show_progress(None) and show_progress(True) and not show_progress(False)
    monkeypatch.setattr("gps.timing.in_multirun", lambda: True)
    assert not show_progress(None) and show_progress(True)


_KILLED_WRITER = """
import os, signal, sys
import numpy as np
from gps import cache

class Bomb:  # pickling it kills the process half-way through writing the entry
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)

cache.configure(True, sys.argv[1])
cache.remember("predictors", {"name": "x"}, lambda: (np.ones(1 << 20), Bomb()))
"""


def test_entry_of_a_killed_job_is_never_read_back(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)],
                          env={**os.environ}, capture_output=True)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL
    held = cache.summary(tmp_path)["predictors"]
    assert held["entries"] == 0 and held["partial"] == 1 and held["bytes"] > 1 << 20
    cache.configure(True, tmp_path)
    assert cache.remember("predictors", {"name": "x"}, lambda: "fresh") == "fresh"
    assert cache.stats["predictors:miss"] == 1
    assert cache.remember("predictors", {"name": "x"}, lambda: "again") == "fresh"
    assert report_main(["--cache", str(tmp_path)]) == 0
    cache.configure(False)


def test_cache_limit_drops_least_recently_used_entries(tmp_path: Path, capsys) -> None:
    cache.configure(True, tmp_path)
    cache.remember("predictors", {"name": "old"}, lambda: np.ones(1 << 20))  # ~8 MB
    for entry in (tmp_path / "joblib").rglob("*"):  # last used long ago
        os.utime(entry, (1.0, 1.0))
    cache.remember("predictors", {"name": "new"}, lambda: np.ones(1 << 20))
    cache.configure(False)
    assert cache.summary(tmp_path)["predictors"]["entries"] == 2
    assert report_main(["--cache", str(tmp_path), "--cache-limit", "10M"]) == 0
    assert cache.summary(tmp_path)["predictors"]["entries"] == 1
    assert "predictors" in capsys.readouterr().out
    cache.configure(True, tmp_path)  # the survivor is the recently used one
    survivor = cache.remember("predictors", {"name": "new"}, lambda: "recomputed")
    assert isinstance(survivor, np.ndarray)
    assert cache.stats["predictors:hit"] == 1
    cache.configure(False)


@pytest.mark.parametrize("size", ["lots", "-1G", "G", "", "inf", "1e400"])
def test_cache_limit_rejects_a_bad_size(tmp_path: Path, size: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        report_main(["--cache", str(tmp_path), f"--cache-limit={size}"])
    assert exc.value.code == 2 and "cache size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report_main(["--cache-limit", "1G"])  # needs --cache


def test_parse_size() -> None:
    assert cache.parse_size("500M") == 500_000_000
    assert cache.parse_size("1.5g") == 1_500_000_000
    assert cache.parse_size("2GB") == 2_000_000_000
    assert cache.parse_size("1024") == 1024


# --------------------------------------------------------------------------- stale code

ROOT = Path(__file__).resolve().parents[1]
_RUN_TREE = """
import json, sys
from hydra import compose, initialize_config_dir
from gps.app import CONF_DIR
from gps.advisor import advise
with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
    cfg = compose("config", overrides=sys.argv[1:])
res = advise(cfg)
print(json.dumps({"cached": {k: v["cached"] for k, v in res["timings_s"]["predictors"].items()},
                  "e2e": {s["name"]: s["e2e_time_s"] for s in res["strategies"]},
                  "accuracy": {s["name"]: s["accuracy"] for s in res["strategies"]}}))
"""


def _copy_tree(dst: Path) -> Path:
    for name in ("gps", "predictors", "conf", "hardware_profiles"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _in_tree(tree: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          cwd=tree, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_changing_a_cached_computations_source_makes_the_next_run_recompute(tmp_path):
    """Edit ``split_copies`` (what a token predictor's cached entry holds is its output) in a
    copy of the tree: the next run misses and prices the changed code, where a key over a
    hand-picked file list served the old entries with ``cached: True``."""
    tree = _copy_tree(tmp_path / "tree")
    args = ["-c", _RUN_TREE, *SMALL, "report.guidelines=false", "strategy.ilp=false",
            "strategy.capacity_factors=[]", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    cold = json.loads(_in_tree(tree, *args))
    assert cold["cached"] and not any(cold["cached"].values())
    source = tree / "predictors" / "splits.py"
    text = source.read_text()
    old = "    return CopySplit(hits, count(true, every) - hits, count(guess, every))\n"
    assert old in text
    # every guess names expert 0: the guesses' histogram (what the plan and the induced
    # accuracy come from) changes
    source.write_text(text.replace(old, old.replace("count(guess, every)",
                                                    "count(0 * guess, every)")))  # fmt: skip
    after = json.loads(_in_tree(tree, *args))
    token = [n for n in after["cached"] if n.startswith("token:")]
    assert token and not any(after["cached"].values())  # recomputed, not served
    for n in token:  # with the changed code
        assert after["accuracy"][n]["induced_tv"] != cold["accuracy"][n]["induced_tv"]


def test_code_hash_covers_every_source_file(tmp_path):
    """The key changes with any file of the package, including the ones the old hand-picked
    list missed."""
    tree = _copy_tree(tmp_path / "tree")
    probe = ["-c", "from gps import cache; print(cache.code_hash(), cache.source_files()[0])"]
    before = _in_tree(tree, *probe)
    assert str(tree) in before  # the copy's files are the ones hashed
    seen = {before}
    for rel in ("gps/cost/ledger.py", "predictors/hidden.py", "predictors/__init__.py",
                "predictors/published.yaml"):  # fmt: skip
        with open(tree / rel, "a") as f:
            f.write("\n# edited\n")
        seen.add(_in_tree(tree, *probe))
    assert len(seen) == 5


# --------------------------------------------------------------------------- fast paths


@settings(max_examples=40, deadline=None)
@given(
    hs.integers(1, 300), hs.integers(2, 32), hs.integers(1, 4), hs.integers(0, 2**31 - 1),
    hs.booleans(),
)  # fmt: skip
def test_topk_fast_path_equals_the_stable_sort(rows: int, e: int, k: int, seed: int,
                                               all_inf: bool) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 3, (rows, e)).astype(float)  # many ties
    x[rng.random(x.shape) < 0.3] = -np.inf
    if all_inf:
        x[: rows // 2] = -np.inf
    k = min(k, e)
    want = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    assert np.array_equal(topk_from_scores(x, k), want)


@settings(max_examples=40, deadline=None)
@given(hs.integers(0, 2000), hs.sampled_from(["small", "wide", "float", "half"]),
       hs.integers(0, 2**31 - 1))  # fmt: skip
def test_stable_argsort_equals_numpy(n: int, kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = {
        "small": rng.integers(-40, 40, n), "wide": rng.integers(0, 1 << 40, n),
        "float": rng.random(n), "half": -rng.random(n).astype(np.float16).astype(float),
    }[kind]  # fmt: skip
    if kind == "half" and n:
        keys[: n // 3] = 0.0
        keys[n // 3 : n // 2] = -0.0
    assert np.array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))


def _reference_drop(experts: np.ndarray, scores: np.ndarray | None, e: int, cap: int):
    """The former rule: one lexsort over every copy by (layer, priority, token)."""
    t, lay, k = experts.shape
    ids = experts.transpose(1, 0, 2).astype(np.int64).copy()
    flat = ids.ravel()
    layer = np.broadcast_to(np.arange(lay)[:, None, None], (lay, t, k)).ravel()
    token = np.broadcast_to(np.arange(t)[None, :, None], (lay, t, k)).ravel()
    primary = (-scores.transpose(1, 0, 2).ravel() if scores is not None
               else np.broadcast_to(np.arange(k)[None, None, :], (lay, t, k)).ravel())  # fmt: skip
    order = np.lexsort((token, primary, layer))
    key = np.where(flat[order] >= 0, layer[order] * e + flat[order], -1)
    rank = np.empty(key.size, dtype=np.int64)
    for g in np.unique(key):
        where = np.flatnonzero(key == g)
        rank[where] = np.arange(where.size)
    flat[order[(key >= 0) & (rank >= cap)]] = -1
    return ids.transpose(1, 0, 2)


@pytest.mark.parametrize("with_scores", [True, False])
@pytest.mark.parametrize("factor", [0.6, 1.0, 1.3])
def test_capacity_drop_keeps_the_reference_priority(with_scores: bool, factor: float) -> None:
    trace = generate_token_trace(SyntheticTraceConfig(
        num_tokens=600, num_layers=3, num_experts=6, top_k=2, dirichlet_alpha=1.0, seed=2,
    ))  # fmt: skip
    scores = np.round(np.asarray(trace.scores, float) * 8) / 8 if with_scores else None  # ties
    res = capacity_drop(trace.experts, factor, scores=scores, num_experts=6)
    want = _reference_drop(np.asarray(trace.experts), scores, 6, res.capacity)
    assert np.array_equal(res.experts, want)
    rer = capacity_reroute(trace.experts, factor, scores=scores, num_experts=6)
    assert (rer.loads_after <= rer.capacity).all()


def _trace(seed: int, e: int = 8, tokens: int = 4000) -> TokenTrace:
    return generate_token_trace(SyntheticTraceConfig(
        num_tokens=tokens, num_layers=4, num_experts=e, top_k=2, dirichlet_alpha=1.0,
        vocab_size=500, token_affinity=0.5, seed=seed))  # fmt: skip


def test_whatif_splits_in_one_pass_equal_each_prediction() -> None:
    fit, test = _trace(0), _trace(1)
    base = WhatIfTokenPredictor(seed=3).fit(fit)
    accuracies = [0.0, 0.5, 0.9, 1.0]
    guessed, hits = base.predict_splits(test, accuracies, 700)
    for a, g, h in zip(accuracies, guessed, hits, strict=True):
        guess = WhatIfTokenPredictor(accuracy=a, seed=3).fit(fit).predict(test)
        assert np.array_equal(g, expert_histogram(guess, 8, 700))
        split = split_copies(guess[: 5 * 700], np.asarray(test.experts)[: 5 * 700], 8, 700)
        assert np.array_equal(h, split.hit) and np.array_equal(g, split.guessed)
        true = np.asarray(test.experts)
        want = float(np.all(np.sort(guess, -1) == np.sort(true, -1), -1).mean())
        assert exact_set_accuracy(guess, true) == want


@pytest.mark.parametrize("e", [8, 40])
def test_token_table_dense_equals_sparse(e: int, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = _trace(4, e=e)
    dense = TokenIdTablePredictor().fit(trace).table_
    monkeypatch.setattr("predictors.token._DENSE_TABLE", 0)
    assert np.array_equal(dense, TokenIdTablePredictor().fit(trace).table_)


def _reference_mlp_features(model: MLPTokenPredictor, trace: TokenTrace, rows: np.ndarray):
    """The MLP's inputs built entry by entry (the documented encoding), as a dense array."""
    layers, e, b = model.num_layers_, model.num_experts_, model.id_buckets
    prev = previous_layer_experts(trace)
    out = np.zeros((rows.size, model._num_inputs))
    for i, row in enumerate(rows):
        tok, layer = divmod(int(row), layers)
        tid = int(trace.token_id[tok])
        if tid >= 0:
            out[i, (tid * 2654435761) % b] = 1.0
        out[i, b + layer] = 1.0
        for j in prev[tok, layer]:
            if j >= 0:
                out[i, b + layers + j] = 1.0
        out[i, b + layers + e] = np.log1p(float(trace.position[tok])) / 10.0
    return out


def test_mlp_features_and_chunked_predict_equal_the_reference() -> None:
    fit, test = _trace(0), _trace(1, tokens=600)
    test.token_id[::7] = -1  # unknown ids set no bucket
    model = MLPTokenPredictor(id_buckets=64, max_iter=2, max_train_samples=2000).fit(fit)
    rows = np.arange(test.num_tokens * model.num_layers_)
    x = model._features(test, previous_layer_experts(test), rows)
    reference = _reference_mlp_features(model, test, rows).astype(model.dtype)  # float32
    assert x.dtype == np.float32 and np.array_equal(x.toarray(), reference)
    proba = model.model_.predict_proba(reference)
    scores = proba.reshape(test.num_tokens, model.num_layers_, -1) + 1e-9 * model.popularity_
    assert np.array_equal(model.predict(test), topk_from_scores(scores, 2))


def test_previous_layer_first_layer_equals_the_full_token_table() -> None:
    fit, test = _trace(0), _trace(1, tokens=600)
    prev = PreviousLayerPredictor().fit(fit)  # fits the table on layer 0 only
    full = TokenIdTablePredictor().fit(fit)
    assert np.array_equal(prev.predict(test)[:, 0], full.predict(test)[:, 0])


def test_whatif_splits_skip_dropped_copies() -> None:
    """A dropped copy (``-1``) is neither guessed nor hit, as in ``split_copies``."""
    fit, test = _trace(0), _trace(1, tokens=2100)
    test.experts[::5, 1, 1] = -1
    base = WhatIfTokenPredictor(seed=3).fit(fit)
    guessed, hits = base.predict_splits(test, [0.0, 0.7, 1.0], 700)
    for a, g, h in zip([0.0, 0.7, 1.0], guessed, hits, strict=True):
        guess = WhatIfTokenPredictor(accuracy=a, seed=3).fit(fit).predict(test)
        split = split_copies(guess, np.asarray(test.experts), 8, 700)
        assert np.array_equal(h, split.hit) and np.array_equal(g, split.guessed)
    assert hits[-1].sum() == (np.asarray(test.experts) >= 0).sum()  # accuracy 1: every live copy
