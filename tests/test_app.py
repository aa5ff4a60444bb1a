"""The `gps` Hydra app end to end: default run, overrides, and overrides that must fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gps.app import CONF_DIR, run

GPS = [sys.executable, "-c", "from gps.app import main; main()"]


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_default_run_writes_breakdown(tmp_path: Path, capsys):
    path = run(compose_cfg(), tmp_path)
    out = capsys.readouterr().out
    result = json.loads(path.read_text())
    assert "Mixtral-8x7B" in out and "tokens/s" in out
    assert result["config"]["hardware"]["name"] == "h100_nvlink"
    total = result["cost"]["total_s"]
    assert total > 0 and result["cost"]["balanced_total_s"] <= total


@pytest.mark.parametrize(
    ("hardware", "model"),
    [("a100_nvlink", "qwen3_30b_a3b"), ("h100_2node_ib", "deepseek_v3"),
     ("h200_nvlink", "mixtral_8x22b"), ("h100_4node_ib", "qwen3_235b_a22b")],
)  # fmt: skip
def test_overrides_compose(tmp_path: Path, hardware: str, model: str):
    cfg = compose_cfg(f"hardware={hardware}", f"model={model}", "workload=decode")
    result = json.loads(run(cfg, tmp_path).read_text())
    assert result["config"]["model"]["name"].lower().startswith(model.split("_")[0][:5])


def test_faster_hardware_is_faster(tmp_path: Path):
    a100 = json.loads(run(compose_cfg("hardware=a100_nvlink"), tmp_path / "a").read_text())
    h100 = json.loads(run(compose_cfg("hardware=h100_nvlink"), tmp_path / "h").read_text())
    assert h100["cost"]["total_s"] < a100["cost"]["total_s"]


@pytest.mark.parametrize(
    "override",
    ["workload.batch_sze=8", "hardware=h900_nvlink", "model.top_k=two", "workload.phase=train",
     "model=deepseek_v3 hardware=a100_nvlink"],
)
def test_bad_override_fails_at_start(tmp_path: Path, override: str):
    proc = subprocess.run(
        [*GPS, *override.split(), f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cost_breakdown.json").exists()


def test_model_that_does_not_fit_says_by_how_much(tmp_path: Path):
    proc = subprocess.run(
        [*GPS, "model=deepseek_v3", "hardware=a100_nvlink", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "overflows by" in proc.stderr and "A100" in proc.stderr


def test_cli_run_prints_breakdown_path(tmp_path: Path):
    proc = subprocess.run(
        [*GPS, "workload.batch_size=2", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"breakdown: {tmp_path / 'cost_breakdown.json'}" in proc.stdout
