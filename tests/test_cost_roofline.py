"""Roofline op time: hand-computed GEMMs on both sides of the ridge, zero work, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from test_cost_helpers import HBM, LAUNCH, PEAK, gpu

from gps.cost.roofline import Op, op_time, ops_time


def test_square_gemm_is_compute_bound():
    # 4096^3 bf16 GEMM: 2*4096^3 = 137,438,953,472 FLOPs; 2*3*4096^2 = 100,663,296 bytes.
    # compute 137438953472 / 5e14 = 2.74877906944e-4 s > memory 1.00663296e-4 s.
    t = op_time(137_438_953_472, 100_663_296, gpu())
    assert t == pytest.approx(2.74877906944e-4 + 1e-6, rel=1e-12)


def test_gemv_is_memory_bound():
    # 1 x 4096 @ 4096 x 4096: 2*4096^2 = 33,554,432 FLOPs (6.7e-8 s);
    # bytes 2*(4096 + 4096^2 + 4096) = 33,570,816 -> 3.3570816e-5 s.
    t = op_time(2 * 4096**2, 2 * (4096 + 4096**2 + 4096), gpu())
    assert t == pytest.approx(3.3570816e-5 + 1e-6, rel=1e-12)


def test_zero_work_costs_nothing_and_broadcasts():
    t = op_time(np.array([0.0, 0.0, 5e14]), np.array([0.0, 1e12, 0.0]), gpu(), launches=3)
    np.testing.assert_allclose(t, [0.0, 1.0 + 3 * LAUNCH, 1.0 + 3 * LAUNCH], rtol=1e-12)


def test_ops_time_sums_ops():
    ops = [Op("a", PEAK, 0.0), Op("b", 0.0, 2 * HBM, launches=2)]
    assert float(ops_time(ops, gpu())) == pytest.approx(1.0 + 2.0 + 3 * LAUNCH, rel=1e-12)


def test_other_dtype_and_unknown_dtype():
    g = gpu(peak_flops={"bf16": 1e15, "fp8": 2e15})
    assert op_time(1e15, 0.0, g, dtype="fp8") == pytest.approx(1.0 + LAUNCH)
    with pytest.raises(KeyError, match="fp4"):
        op_time(1.0, 1.0, g, dtype="fp4")


@pytest.mark.parametrize(("flops", "bytes_"), [(-1.0, 0.0), (0.0, -5.0), (np.nan, 0.0)])
def test_bad_work_raises(flops, bytes_):
    with pytest.raises(ValueError, match="op_time"):
        op_time(flops, bytes_, gpu())
