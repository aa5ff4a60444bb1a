"""The `gps` Hydra app end to end: tiny runs, multirun + aggregation, overrides that must fail."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gps.app import CONF_DIR, run
from gps.report.cli import main as report_main

GPS = [sys.executable, "-c", "from gps.app import main; main()"]
# A step of 256 tokens, 3 training + 2 held-out batches, cheap predictors: a run in seconds.
TINY = ["workload.batch_size=1", "workload.seq_len=256", "evaluation.train_batches=3",
        "evaluation.test_batches=2", "predictor=fast", "strategy.ilp_time_limit_s=2"]  # fmt: skip


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_tiny_run_writes_results_and_report(tmp_path: Path, capsys) -> None:
    report = run(compose_cfg(*TINY, "report.accuracy_grid=[0.5,1.0]",
                             "report.overhead_grid_us=[0,50]"), tmp_path)  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    names = [s["name"] for s in results["strategies"]]
    assert names[0] == "no_balancing" and "oracle" in names and "ilp_moetuner" in names
    assert {"distribution", "token", "periodic", "capacity", "ilp"} <= {
        s["family"] for s in results["strategies"]
    }
    for s in results["strategies"]:
        assert s["e2e_time_s"] >= s["balanced_time_s"] * (1 - 1e-9)
        assert s["speedup_vs_baseline"] == pytest.approx(
            results["strategies"][0]["e2e_time_s"] / s["e2e_time_s"]
        )
        assert sum(s["breakdown_s"].values()) == pytest.approx(s["e2e_time_s"], rel=1e-9)
    assert results["recommendation"]["strategy"] in names
    guide = results["guidelines"]
    assert len(guide["token_speedup"]) == 2 and len(guide["token_speedup"][0]) == 2
    text = report.read_text()
    assert report.name == "report.md" and results["recommendation"]["strategy"] in text
    # a tie is said in the report's first paragraph, naming every tied strategy
    first = next(line for line in text.splitlines() if line.startswith("**Recommendation.**"))
    tie = results["recommendation"]["tie"]
    assert ("**Tie:**" in first) == (tie is not None)
    assert tie is None or all(name in first for name in tie["strategies"])
    for png in ("breakdown", "gpu_load", "accuracy_speedup", "frontier"):
        assert (tmp_path / "plots" / f"{png}.png").stat().st_size > 1000
        assert f"plots/{png}.png" in text
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "Recommendation" in html


def test_same_config_same_results(tmp_path: Path) -> None:
    cfg = compose_cfg(*TINY, "report=minimal")
    a = json.loads(run(cfg, tmp_path / "a").with_name("results.json").read_text())
    b = json.loads(run(cfg, tmp_path / "b").with_name("results.json").read_text())
    for sa, sb in zip(a["strategies"], b["strategies"], strict=True):
        assert sa["e2e_time_s"] == sb["e2e_time_s"] and sa["accuracy"] == sb["accuracy"]
    assert (tmp_path / "a" / "report.md").read_text() == (tmp_path / "b" / "report.md").read_text()


def test_cli_prints_report_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*GPS, *TINY, "report=minimal", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1] == f"report: {tmp_path / 'report.md'}"


def test_multirun_and_aggregate(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [*GPS, "-m", *TINY, "report=minimal", "strategy.ilp=false",
         "workload.batch_size=1,2", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(list(sweep.glob("*/results.json"))) == 2
    (sweep / "9" / ".hydra").mkdir(parents=True)  # a run that was killed before writing
    assert report_main([str(sweep)]) == 0
    assert report_main([str(sweep), "--strict"]) == 1
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert {r["overrides"].split("workload.batch_size=")[1].split()[0] for r in rows} == {"1", "2"}
    assert sum(r["recommended"] == "True" for r in rows) == 2
    report = (sweep / "sweep_report.md").read_text()
    assert "2 of 3 runs finished" in report and "missing" in report


def test_failed_run_writes_error_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*GPS, "model=deepseek_v3", "hardware=a100_nvlink", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "overflows by" in proc.stderr and "A100" in proc.stderr
    assert "overflows by" in json.loads((tmp_path / "error.json").read_text())["error"]
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    "override",
    ["workload.batch_sze=8", "hardware=h900_nvlink", "model.top_k=two", "workload.phase=train",
     "strategy.replan_intervall=3", "trace.markov_strenght=0.1", "predictor=nonexistent"],
)  # fmt: skip
def test_bad_override_fails_cleanly(tmp_path: Path, override: str) -> None:
    proc = subprocess.run(
        [*GPS, *override.split(), f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results.json").exists()


def test_unknown_predictor_name_fails_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*GPS, *TINY, "predictor.token=[no_such_predictor]", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "no_such_predictor" in proc.stderr
    assert not (tmp_path / "results.json").exists()
