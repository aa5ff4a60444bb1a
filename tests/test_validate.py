"""benchmarks/validate.py: the published-measurement table, its fitted constant and its doc."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import validate  # noqa: E402

from gps.cost.comm import DEEPEP_LL_FIXED_S  # noqa: E402


@pytest.fixture(scope="module")
def table() -> tuple[list[str], list[list[str]]]:
    return validate.table(validate.all_rows())


def test_ll_fixed_cost_is_the_fit_of_the_published_table() -> None:
    assert DEEPEP_LL_FIXED_S == pytest.approx(validate.fit_ll_fixed(), abs=0.1e-6)


def test_every_row_in_band_or_names_its_missing_mechanism(table) -> None:
    _, body = table
    assert len(body) >= 25
    for row in body:
        ratio = float(row[4])
        if not validate.BAND[0] <= ratio <= validate.BAND[1]:
            assert row[5] and row[5] != "UNEXPLAINED", row


def test_deepep_kernels_within_band(table) -> None:
    _, body = table
    kernels = [r for r in body if "DeepEP" in r[0] and "EP16 (internode)" not in r[0]]
    assert len(kernels) == 18
    assert all(validate.BAND[0] <= float(r[4]) <= validate.BAND[1] for r in kernels), kernels


def test_docs_table_is_the_scripts_output(table) -> None:
    text = (ROOT / "docs" / "validation.md").read_text()
    assert validate.markdown(*table) in text
