"""FP8 GEMM efficiency of the Hopper profiles: DeepGEMM's published table, priced by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks" / "gpu"))

import fit_fp8_gemm

from gps.cost.roofline import compute_efficiency, op_time
from gps.profiles import load_gpu

HOPPER = ("h100_sxm5_80gb", "h800_sxm5_80gb", "h200_sxm_141gb", "h20_96gb")


def test_fp8_gemms_use_their_own_fit_and_bf16_gemms_keep_theirs() -> None:
    gpu = load_gpu("h100_sxm5_80gb")
    # by hand: 0.72 * 512 / (512 + 400) = 0.40421; bf16: 0.88 * 512 / (512 + 1245) = 0.25643
    assert gpu.gemm_efficiency(512, "fp8") == pytest.approx(0.72 * 512 / 912)
    assert gpu.gemm_efficiency(512, "bf16") == pytest.approx(0.88 * 512 / 1757)
    assert gpu.gemm_efficiency(512) == gpu.gemm_efficiency(512, "bf16")
    # FLOP-weighted harmonic mean over a SwiGLU's GEMMs (2/3 at K = 7168, 1/3 at K = 2048)
    e1, e2 = 0.72 * 7168 / 7568, 0.72 * 2048 / 2448
    mixed = ((7168.0, 2 / 3), (2048.0, 1 / 3))
    expected = 1 / (2 / 3 / e1 + 1 / 3 / e2)
    assert compute_efficiency(gpu, mixed, dtype="fp8") == pytest.approx(expected)


def test_an_fp8_gemm_op_by_hand() -> None:
    gpu = load_gpu("h800_sxm5_80gb")
    m, n, k = 4096, 32768, 512  # DeepGEMM's MLA kv_up-like row: 775 TFLOPS published
    flops, nbytes = 2.0 * m * n * k, m * k + n * k + 2.0 * m * n
    compute = flops / (1979e12 * 0.72 * k / (k + 400))
    memory = nbytes / (3350e9 * 0.838)
    by_hand = (compute**6 + memory**6) ** (1 / 6) + 1e-6  # knee p = 6, one 1 us launch
    gemm = ((float(k), 1.0),)
    assert float(op_time(flops, nbytes, gpu, "fp8", 1, gemm)) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(flops / 775e12, rel=0.05)  # within 5% of the table


def test_profiles_carry_the_fit_of_the_published_table() -> None:
    c, k0, ratios = fit_fp8_gemm.fit()
    assert len(ratios) == 10 and np.abs(ratios - 1).max() < 0.2
    for name in HOPPER:
        gpu = load_gpu(name)
        assert gpu.fp8_compute_efficiency == pytest.approx(c, abs=0.005)
        assert gpu.fp8_gemm_k_knee == pytest.approx(k0, abs=5)
    assert load_gpu("a100_sxm4_80gb").fp8_compute_efficiency == 0.0  # no FP8 tensor cores


def test_fit_recovers_a_planted_efficiency(monkeypatch) -> None:
    planted = fit_fp8_gemm.model_s(0.6, 900.0)
    monkeypatch.setattr(fit_fp8_gemm, "measured_s", lambda: planted)
    c, k0, ratios = fit_fp8_gemm.fit()
    assert (c, k0) == (pytest.approx(0.6, rel=1e-3), pytest.approx(900.0, rel=1e-2))
    assert np.abs(ratios - 1).max() < 1e-4
