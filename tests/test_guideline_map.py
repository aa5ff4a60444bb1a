"""The guideline map: in-process sweep, its CSV / heat map / report section, and the same axes
as a multirun aggregated by gps-report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir

from gps.app import CONF_DIR, run
from gps.report.guideline_map import MAP_COLUMNS, no_win_reason, whatif_curve
from gps.report.plots import all_tied
from gps.report.sweep import aggregate
from predictors.splits import expected_split

SMALL = ["+experiment=guideline_map", "guideline_map.skews=[1.2,2.0]",
         "guideline_map.link_gbps=[600,32]", "guideline_map.tokens=[2048,8192]",
         "guideline_map.resident_experts=[1.0,0.34]",
         "guideline_map.accuracies=[0.5,1.0]", "guideline_map.overheads_us=[0,50]",
         "report.plots=false"]  # fmt: skip


def _cfg(*over: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(over))


def test_expected_split_by_hand() -> None:
    x, w = np.array([[[6.0, 2.0]]]), np.array([[[1.0, 7.0]]])
    s = expected_split(x, w, 0.75)
    np.testing.assert_allclose(s.hit, [[[4.5, 1.5]]])
    np.testing.assert_allclose(s.miss, [[[1.5, 0.5]]])
    np.testing.assert_allclose(s.guessed, [[[4.75, 3.25]]])  # 0.75 x + 0.25 w
    with pytest.raises(ValueError, match="accuracy"):
        expected_split(x, w, 1.5)


@pytest.fixture(scope="module")
def small_map(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("map")
    run(_cfg(*SMALL), out)
    return out


def test_map_rows_csv_and_regions(small_map: Path) -> None:
    res = json.loads((small_map / "results.json").read_text())
    gm = res["guideline_map"]
    rows = gm["rows"]
    assert len(rows) == 2 * 2 * 2 * 2 * 2 * 2  # skews x links x tokens x memory x ovh x acc
    with (small_map / "guideline_map.csv").open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == MAP_COLUMNS and len(table) == len(rows)
    assert {float(r["resident_experts"]) for r in table} == {1.0, 0.34}
    # the measured skew follows the target (the trace's Zipf knob, calibrated)
    for target in (1.2, 2.0):
        seen = [r["skew_measured"] for r in rows if r["skew_target"] == target]
        assert abs(np.mean(seen) - target) < 0.15, (target, seen)
    # each family wins somewhere; the winner matches the speed-ups
    assert {"token", "distribution"} <= {r["winner"] for r in rows}
    for r in rows:
        t, d = r["token_speedup"], r["distribution_speedup"]
        want = "tie" if abs(t / d - 1) <= 1e-6 else "token" if t > d else "distribution"
        assert r["winner"] == want
        # the oracle is never behind either family, by construction
        assert r["oracle_speedup"] >= max(r["distribution_speedup"], r["token_speedup"]) - 1e-12
    for key in {(r["skew_target"], r["link_gbps"], r["tokens_per_step"], r["resident_experts"])
                for r in rows}:  # fmt: skip
        cell = {(r["overhead_us"], r["accuracy"]): r["token_speedup"] for r in rows
                if (r["skew_target"], r["link_gbps"], r["tokens_per_step"],
                    r["resident_experts"]) == key}  # fmt: skip
        assert cell[(0.0, 1.0)] > cell[(50.0, 1.0)]  # overhead only lowers Token-to-Expert
    # experts streamed over PCIe: a 352 MB expert outlasts any attention window, so the step
    # waits for weights whatever the prediction (every strategy alike)
    slow = [r for r in rows if r["resident_experts"] == 0.34]
    assert all(r["distribution_speedup"] == pytest.approx(1.0, abs=0.02) for r in slow)
    assert any(r["winner"] == "tie" for r in slow)  # said as a tie, not a win
    assert gm["reason"] is None and "Guideline map" in (small_map / "report.md").read_text()
    c = whatif_curve(rows)
    assert (
        f"accuracies is {c['last_step']:.2%}, against {c['earlier_rise']:.2%}"
        in (small_map / "report.md").read_text()
    )
    # a cell where the families tie at every accuracy is said as a tie, not as "DO"
    for line in (small_map / "report.md").read_text().splitlines():
        if line.startswith("| 0.34 |"):
            assert "| tie / DO (b/e 0 us) |" in line, line


def test_whatif_curve_by_hand() -> None:
    """Two cells at the lowest overhead: (1.0, 1.1, 1.0, 1.2) and (1.0, 1.05, 1.05, 1.05)."""

    def row(skew, acc, speedup, overhead=0.0):
        return {"overhead_us": overhead, "skew_target": skew, "link_gbps": 100.0,
                "tokens_per_step": 512, "resident_experts": 1.0, "accuracy": acc,
                "token_speedup": speedup}  # fmt: skip

    accs = (0.7, 0.8, 0.9, 1.0)
    rows = [row(1.2, a, v) for a, v in zip(accs, (1.0, 1.1, 1.0, 1.2), strict=True)]
    rows += [row(2.0, a, v) for a, v in zip(accs, (1.0, 1.05, 1.05, 1.05), strict=True)]
    rows += [row(2.0, 1.0, 9.9, overhead=50.0)]  # a higher overhead is not read
    c = whatif_curve(rows)
    assert c["cells"] == 2 and c["non_decreasing"] == 1
    assert c["largest_dip"] == pytest.approx(1.1 / 1.0 - 1.0)  # 1.1 -> 1.0
    assert c["last_step"] == pytest.approx(0.2)  # 1.0 -> 1.2 into accuracy 1.0
    assert c["earlier_rise"] == pytest.approx(0.1)  # 1.0 -> 1.1


def test_all_tied_by_hand() -> None:
    row = {"overhead_us": 0.0, "resident_experts": 1.0, "link_gbps": 600.0, "skew_target": 1.2,
           "tokens_per_step": 512}  # fmt: skip
    rows = [dict(row, accuracy=0.5, winner="tie"), dict(row, accuracy=1.0, winner="tie"),
            dict(row, tokens_per_step=2048, accuracy=0.5, winner="tie"),
            dict(row, tokens_per_step=2048, accuracy=1.0, winner="distribution")]  # fmt: skip
    key = (0.0, 1.0, 600.0, 1.2)
    assert all_tied(rows) == {(*key, 512): True, (*key, 2048): False}


def test_no_win_reason_names_numbers() -> None:
    rows = [{"winner": "distribution", "margin": -0.02, "breakeven_overhead_us": -3.0,
             "skew_target": 1.4, "link_gbps": 600.0, "tokens_per_step": 512}]  # fmt: skip
    text = no_win_reason(rows)
    assert "-2.00%" in text and "-3.0 us" in text


def test_multirun_axes_aggregate(small_map: Path, tmp_path: Path) -> None:
    """Two jobs, each one link of the map, merge into one map in gps-report's output."""
    for i, link in enumerate((600, 32)):
        job = tmp_path / str(i)
        over = [*SMALL[:2], f"guideline_map.link_gbps=[{link}]", *SMALL[3:]]
        run(_cfg(*over), job)
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(over))
    aggregate(tmp_path)
    with (tmp_path / "guideline_map.csv").open() as f:
        merged = list(csv.DictReader(f))
    with (small_map / "guideline_map.csv").open() as f:
        whole = list(csv.DictReader(f))
    key = ("skew_target", "link_gbps", "tokens_per_step", "overhead_us", "accuracy")
    got = {tuple(r[k] for k in key): float(r["token_speedup"]) for r in merged}
    want = {tuple(r[k] for k in key): float(r["token_speedup"]) for r in whole}
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k], rel=1e-9) for k in want)
    assert "Guideline map" in (tmp_path / "sweep_report.md").read_text()
