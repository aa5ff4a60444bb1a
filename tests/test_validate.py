"""benchmarks/validate.py: the published-measurement table, its fitted constant and its doc."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import validate  # noqa: E402

from gps.cost.comm import DEEPEP_LL_FIXED_S, expected_distinct_bins  # noqa: E402

# The summary of the committed table (docs/validation.md): every row's band status is pinned
# through these counts and the doc equality below; nothing is excused or excluded.
PINNED = validate.Summary(rows=46, in_band=31, independent=34, independent_in_band=21,
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


def test_eplb_rows_route_through_the_simulated_288_expert_layout() -> None:
    spec = validate.load_model_spec("deepseek_v3")
    # prefill: 16,384 tokens on each of 32 GPUs, 4,096-token requests; 288 / 32 = 9 slots
    st = validate.eplb_routing(spec, 32, 16384, 4096).slot_tokens
    assert st.shape == (validate.EPLB_STEPS, 58, 32, 9)
    assert st.sum(axis=(-2, -1)) == pytest.approx(16384 * 32 * 8)  # every copy lands
    per_gpu = st.sum(axis=-1)
    imbalance = per_gpu.max(axis=-1) / per_gpu.mean(axis=-1)
    assert 1.0 < imbalance.mean() < 1.1  # the residual of an in-distribution EPLB
    # decode at EP72: 288 / 72 = 4 slots on every GPU (no idle GPU, unlike 256 contiguous)
    dec = validate.eplb_routing(spec, 72, 256, 1).slot_tokens
    assert dec.shape[-2:] == (72, 4) and dec.sum(axis=-1).min() > 0
    again = validate.eplb_routing(spec, 72, 256, 1).slot_tokens
    assert np.array_equal(dec, again)  # seeded


def test_rows_that_ran_eplb_say_so_and_the_balanced_ones_do_not(table) -> None:
    rows = table[0]
    eplb = [r for r in rows if validate.EPLB_SETUP in r.configuration]
    assert sorted(r.reference[len(validate.SGLANG) + 2 :] for r in eplb) == sorted([
        "prefill, 1K prompts, default EPLB",
        "prefill, 2K prompts (read as 2,000 tokens, the blog's headline length), default EPLB",
        "prefill, 4K prompts, default EPLB",
        "decode, 2,000-token inputs, two-batch overlap",
        "decode, 2,000-token inputs, no overlap (ablation: TBO +25.5% at 256/GPU)",
    ])  # fmt: skip


def test_deepseek_profile_row_gives_communication_24_sms() -> None:
    from gps.cost.e2e import step_setting

    eng = validate.deepseek_engine()
    wl = validate.Workload("prefill", 128, 4096, alltoall="deepep", overlap="two_batch")
    _, _, rate = step_setting(validate.h800(32), wl, eng, True)
    assert rate == pytest.approx(108 / 132)  # profile-data: computation 108 SMs, comm 24
    assert validate.engine("sglang").alltoall_sms["deepep"] == 20  # SGLang's own unchanged


def test_ant_row_steps_hold_the_reproductions_chunk() -> None:
    (row,) = validate.ant_rows()
    assert validate.ANT_CHUNK == 16384 and "= 4 prompts" in row.configuration


def test_nvlink_fitted_marks_only_rows_the_constant_decides() -> None:
    """A row is dependent on the DeepEP-read NVLink efficiency only where halving it moves the
    model: the intranode EP8 rows do, a value that ignores the cluster does not."""
    cl = validate.h800(16)
    assert validate.nvlink_fitted(lambda c: 1.0, cl) == ""
    nvlink_s = validate.nvlink_fitted(lambda c: 1.0 / c.intra_link.efficiency, cl)
    assert nvlink_s == validate.NVLINK_FIT
    rows = [r for r in validate.deepep_normal_rows() if "EP8 " in r.reference]
    assert rows and all(r.fitted == validate.NVLINK_FIT for r in rows)
