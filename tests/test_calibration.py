"""Shape-aware efficiency fit (gps/calibration.py) and the committed H100 calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cost_helpers import gpu

from gps.calibration import _kernels, anchors, fit_efficiency, gemm_efficiency, kernels_s
from gps.profiles import load_gpu

RESULTS = Path(__file__).parents[1] / "benchmarks/gpu/results/h100_sxm5_80gb_2026-11-24.json"


def _rows(c: float, k0: float, m: float, launch: float, p: float = 4.0) -> list[dict]:
    """expert_ffn rows at two shapes and a matmul, timed by the fit's own kernel model on the
    test GPU (1e15 FLOP/s, 2e12 B/s)."""
    rows = [{"kind": "matmul", "flops": 2.0 * 4096**3, "bytes": 0.0, "seconds": 1.0}]
    for d, f, ne in ((1024, 4096, 2), (4096, 512, 8)):
        for tokens in (1, 16, 256, 4096, 65536):
            rows.append({"kind": "expert_ffn", "hidden": d, "intermediate": f, "experts": ne,
                         "tokens_per_expert": tokens, "seconds": 1.0})  # fmt: skip
    times = kernels_s(_kernels(rows), 1e15, 2e12, np.array([c, k0, m, p]), launch)
    return [{**r, "seconds": float(t)} for r, t in zip(rows, times, strict=True)]


def test_gemm_efficiency_hand_computed() -> None:
    # c * K / (K + k0): 0.8 * 512 / (512 + 512) = 0.4; large K tends to c
    assert float(gemm_efficiency(512, 0.8, 512)) == pytest.approx(0.4)
    assert float(gemm_efficiency(1e9, 0.8, 512)) == pytest.approx(0.8, rel=1e-6)
    assert gpu(gemm_k_knee=512.0).gemm_efficiency(512) == pytest.approx(0.25)  # c = 0.5


def test_kernel_times_hand_computed() -> None:
    # matmul 1000^3 on the test GPU, c = 0.5, k0 = 1000 -> e = 0.25: 2e9 / 2.5e14 = 8 us;
    # bytes 2 * 3e6 = 6e6 at 2e12 * 0.5 = 6 us; sharp max (p = 1 would add): take p = 50
    rows = [{"kind": "matmul", "flops": 2e9, "m": 1000, "n": 1000, "k": 1000, "seconds": 1.0}]
    t = kernels_s(_kernels([*rows, *_rows(0.5, 0, 0.5, 0.0)[1:4]]), 1e15, 2e12,
                  np.array([0.5, 1000.0, 0.5, 50.0]), 1e-6)  # fmt: skip
    assert t[0] == pytest.approx(8e-6 * (1 + (6 / 8) ** 50) ** (1 / 50) + 1e-6)
    # an expert FFN row: gate/up GEMM + down GEMM + elementwise (5*M*f*ne*2 bytes) + 4 launches
    ffn = {"kind": "expert_ffn", "hidden": 1000, "intermediate": 1000, "experts": 1,
           "tokens_per_expert": 1000, "seconds": 1.0}  # fmt: skip
    t = kernels_s(_kernels([ffn] * 3), 1e15, 2e12, np.array([0.5, 1000.0, 0.5, 50.0]), 1e-6)
    up = 16e-6 * (1 + (10 / 16) ** 50) ** (1 / 50)  # 4e9 FLOPs at 2.5e14; 1e7 B at 1e12
    down = 8e-6 * (1 + (6 / 8) ** 50) ** (1 / 50)
    assert t[0] == pytest.approx(up + down + 10e6 / 1e12 + 4e-6)


def test_fit_recovers_planted_factors() -> None:
    fit = fit_efficiency(_rows(0.7, 800.0, 0.8, 2e-6), gpu(), launch_overhead_s=2e-6)
    assert fit.compute_efficiency == pytest.approx(0.7, rel=1e-3)
    assert fit.gemm_k_knee == pytest.approx(800.0, rel=1e-2)
    assert fit.memory_efficiency == pytest.approx(0.8, rel=1e-3)
    assert fit.knee_exponent == 4.0
    assert fit.max_rel_error < 1e-3


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
        (_rows(0.6, 100.0, 0.8, 0.0)[:3], 0.0, "need >= 3"),
        ([{**r, "seconds": 0.0} for r in _rows(0.6, 100.0, 0.8, 0.0)], 0.0, "must be > 0"),
        ([{"kind": "expert_ffn", "seconds": 1.0}] * 3, 0.0, "needs a number 'tokens_per"),
        (_rows(0.6, 100.0, 0.8, 0.0), -1e-6, "launch_overhead_s"),
    ],
)
def test_fit_rejects_bad_input(rows: list[dict], launch: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_efficiency(rows, gpu(), launch_overhead_s=launch)


def test_committed_h100_profile_is_the_fit_of_the_committed_measurements() -> None:
    data = json.loads(RESULTS.read_text())
    profile = load_gpu("h100_sxm5_80gb")
    launch = anchors(data["measurements"], profile)["launch_graph_s"]
    fit = fit_efficiency(data["measurements"], profile, launch)
    assert profile.efficiency_source.startswith(f"measured: {data['device']} {data['date']}")
    assert profile.compute_efficiency == pytest.approx(fit.compute_efficiency, abs=5e-4)
    assert profile.gemm_k_knee == pytest.approx(fit.gemm_k_knee, abs=0.5)
    assert profile.memory_efficiency == pytest.approx(fit.memory_efficiency, abs=5e-4)
    assert profile.launch_overhead_s == pytest.approx(launch, abs=5e-9)
    assert profile.roofline_knee == pytest.approx(fit.knee_exponent, abs=5e-3)
    assert fit.max_rel_error < 0.09  # one roofline per GEMM, kernels as measured
    # small-K GEMMs run below the large-GEMM efficiency (MLA kv_up: K = 512)
    assert profile.gemm_efficiency(512) < 0.5 * profile.gemm_efficiency(8192)
