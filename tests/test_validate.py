"""benchmarks/validate.py: the published-measurement table, its fitted constant and its doc."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import validate  # noqa: E402

from gps.cost.comm import DEEPEP_LL_FIXED_S, expected_distinct_bins  # noqa: E402

# The summary of the committed table (docs/validation.md): every row's band status is pinned
# through these counts and the doc equality below; nothing is excused or excluded.
PINNED = validate.Summary(rows=46, in_band=31, independent=38, independent_in_band=23,
                          independent_steps=26, independent_steps_in_band=13)  # fmt: skip


@pytest.fixture(scope="module")
def table():
    rows = validate.all_rows()
    return rows, *validate.table(rows)


def test_ll_fixed_cost_is_the_fit_of_the_pure_rdma_generation() -> None:
    assert DEEPEP_LL_FIXED_S == pytest.approx(validate.fit_ll_fixed(), abs=0.05e-6)
    fitted = [r for r in validate.deepep_ll_rows() if "DEEPEP_LL_FIXED_S" in r.fitted]
    assert len(fitted) == 4 and all("pure RDMA" in r.configuration for r in fitted)


def test_h20_decode_constants_are_the_fit_of_the_dense_qwen3_rows() -> None:
    from gps.profiles import load_gpu

    memory, launch, ratios = validate.fit_h20_decode()
    h20 = load_gpu("h20_96gb")
    assert h20.memory_efficiency == pytest.approx(memory, abs=5e-4)
    assert h20.launch_overhead_s == pytest.approx(launch, abs=0.05e-6)
    assert len(ratios) == 12 and max(abs(ratios - 1)) < 0.15
    # fitted on dense models only: no MoE row of the table is among the fit's data
    assert all("A3B" not in s and "A22B" not in s for s in validate.DENSE_QWEN3)


def test_sixteen_gpu_prefill_reports_its_imbalance_share() -> None:
    rows = validate.sixteen_gpu_rows()
    assert [r[0] for r in rows] == ["1,024", "16,384"]
    for r in rows:
        assert 0.0 < float(r[3].rstrip("%")) < 100.0
        assert float(r[1].replace(",", "")) >= float(r[2].replace(",", ""))  # overlap helps


def test_deepep_test_routing_by_hand() -> None:
    # intranode: plain top-8 of 256 over 8 GPUs = the uniform expectation
    gpus, _ = validate.deepep_test_routing(8)
    assert gpus == pytest.approx(expected_distinct_bins(256, 8, 8), abs=0.05)
    # internode: the best min(nodes, 4) nodes by their best expert, then top-8 inside them:
    # EP64 spreads 3.98 nodes per token (not the 3.63 of 8 uniform draws from 4 nodes)
    assert validate.deepep_test_routing(64)[1] == pytest.approx(3.98, abs=0.01)
    assert validate.deepep_test_routing(16)[1] == pytest.approx(1.99, abs=0.01)


def test_sglang_2k_row_counts_its_tokens_and_compares_with_the_2k_figure(table) -> None:
    rows = [r for r in table[0] if "2K prompts" in r.reference]
    assert len(rows) == 1
    assert "8 x 2,000 = 16,000 tokens per GPU" in rows[0].configuration
    assert rows[0].measured_s == pytest.approx(1 / 54_543)


def test_independence_is_declared_and_fitted_rows_name_their_constant(table) -> None:
    rows, _, body, summary = table
    for row, cells in zip(rows, body, strict=True):
        assert cells[5] == ("yes" if row.independent else f"no: {row.fitted}")
    assert summary.independent == sum(r.independent for r in rows)


def test_every_out_of_band_row_names_its_missing_mechanism(table) -> None:
    _, _, body, _ = table
    for cells in body:
        if not validate.BAND[0] <= float(cells[4]) <= validate.BAND[1]:
            assert cells[6] and cells[6] != "UNEXPLAINED", cells[0]


def test_summary_is_pinned(table) -> None:
    assert table[3] == PINNED


def test_docs_table_is_the_scripts_output(table) -> None:
    _, header, body, summary = table
    text = (ROOT / "docs" / "validation.md").read_text()
    assert validate.markdown(header, body) in text
    for line in summary.lines():
        assert f"- {line}" in text
    assert validate.markdown(validate.SIXTEEN_HEADER, validate.sixteen_gpu_rows()) in text
