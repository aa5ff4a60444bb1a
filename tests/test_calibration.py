"""Efficiency fit (gps/calibration.py) and the committed H100 calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cost_helpers import gpu

from gps.calibration import anchors, fit_expert_ffn, roofline_s
from gps.profiles import load_gpu

RESULTS = Path(__file__).parents[1] / "benchmarks/gpu/results/h100_sxm5_80gb_2026-11-24.json"


def _rows(c: float, m: float, launch: float, p: float = 4.0) -> list[dict]:
    """expert_ffn rows timed by the model itself on the test GPU (1e15 FLOP/s, 2e12 B/s)."""
    d, f, ne = 1024, 4096, 2
    rows = []
    for tokens in (1, 16, 256, 4096, 65536):
        flops = 6.0 * d * f * tokens * ne
        bytes_ = 2.0 * ne * (3.0 * d * f + 2.0 * (d + f) * tokens)
        x, y = flops / (1e15 * c), bytes_ / (2e12 * m)
        seconds = (x**p + y**p) ** (1 / p) + launch
        rows.append({"kind": "expert_ffn", "flops": flops, "bytes": bytes_, "seconds": seconds})
    return rows


def test_roofline_hand_computed() -> None:
    # 1e12 FLOPs at 1e15*0.5 = 2 ms; 1e9 B at 2e12*0.5 = 1 ms; + 3 us launch -> 2.003 ms
    t = roofline_s(np.array([1e12]), np.array([1e9]), 1e15, 2e12, np.array([0.5, 0.5, 3e-6, 0.0]))
    assert t[0] == pytest.approx(2.003e-3)


def test_fit_recovers_planted_factors() -> None:
    fit = fit_expert_ffn(_rows(0.6, 0.8, 2e-6), gpu(), launch_overhead_s=2e-6)
    assert fit.compute_efficiency == pytest.approx(0.6, rel=1e-4)
    assert fit.memory_efficiency == pytest.approx(0.8, rel=1e-4)
    assert fit.knee_exponent == pytest.approx(4.0, rel=1e-3)
    assert fit.max_rel_error < 1e-4


def test_knee_rounds_the_corner_hand_computed() -> None:
    # equal compute and memory time 1 ms, p = 2: sqrt(2) ms; far from the knee: the max
    t = roofline_s(np.array([1e12, 1e12]), np.array([2e9, 2e6]), 1e15, 2e12,
                   np.array([1.0, 1.0, 0.0, 2.0]))  # fmt: skip
    assert t[0] == pytest.approx(np.sqrt(2) * 1e-3)
    assert t[1] == pytest.approx(np.sqrt(1 + 1e-6) * 1e-3)


def test_anchors_hand_computed() -> None:
    rows = [
        {"kind": "matmul", "flops": 1e12, "bytes": 0.0, "seconds": 4e-3},  # 2.5e14 / 1e15
        {"kind": "copy", "flops": 0.0, "bytes": 1e9, "seconds": 1e-3},  # 1e12 / 2e12
        {"kind": "launch_graph", "launches": 1000, "flops": 0, "bytes": 0, "seconds": 2e-3},
    ]
    got = anchors(rows, gpu())
    assert got["matmul_compute_efficiency"] == pytest.approx(0.25)
    assert got["copy_memory_efficiency"] == pytest.approx(0.5)
    assert got["launch_graph_s"] == pytest.approx(2e-6)


@pytest.mark.parametrize(
    ("rows", "launch", "match"),
    [
        (_rows(0.6, 0.8, 0.0)[:2], 0.0, "need >= 3"),
        ([{**r, "seconds": 0.0} for r in _rows(0.6, 0.8, 0.0)], 0.0, "seconds > 0"),
        (_rows(0.6, 0.8, 0.0), -1e-6, "launch_overhead_s"),
    ],
)
def test_fit_rejects_bad_input(rows: list[dict], launch: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_expert_ffn(rows, gpu(), launch_overhead_s=launch)


def test_committed_h100_profile_is_the_fit_of_the_committed_measurements() -> None:
    data = json.loads(RESULTS.read_text())
    profile = load_gpu("h100_sxm5_80gb")
    launch = anchors(data["measurements"], profile)["launch_graph_s"]
    fit = fit_expert_ffn(data["measurements"], profile, launch)
    assert profile.efficiency_source.startswith(f"measured: {data['device']} {data['date']}")
    assert profile.compute_efficiency == pytest.approx(fit.compute_efficiency, abs=5e-4)
    assert profile.memory_efficiency == pytest.approx(fit.memory_efficiency, abs=5e-4)
    assert profile.launch_overhead_s == pytest.approx(launch, abs=5e-9)
    assert profile.roofline_knee == pytest.approx(fit.knee_exponent, abs=5e-3)
    assert fit.max_rel_error < 0.12  # the sharp roofline was 16% off at the knee
