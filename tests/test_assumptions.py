"""Pricing assumptions (ours vs the MoE-GPS paper's) and the assumption ladder between them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from gps.advisor.assumptions import (
    LADDER,
    ROOFLINE,
    Assumptions,
    epsilon_slot_tokens,
    load_assumptions,
)
from gps.app import CONF_DIR, run


def test_epsilon_slot_tokens_by_hand() -> None:
    slots = np.array([[[[6.0, 2.0], [4.0, 0.0], [0.0, 0.0], [2.0, 2.0]]]])  # [1, 1, G=4, R=2]
    got = epsilon_slot_tokens(slots, np.array([[0.5]]))
    # mean 4 tokens per GPU; the busiest (GPU 0) at 1.5 x 4 = 6, split 3:1 as simulated
    np.testing.assert_allclose(got[0, 0], [[4.5, 1.5], [4.0, 0.0], [2.0, 2.0], [2.0, 2.0]])


def test_members_and_validation() -> None:
    paper = load_assumptions("moe_gps_paper")
    assert (paper.skew, paper.do_error) == (1.39, 0.018)  # the paper's MMLU figures
    assert (paper.load_model, paper.weight_copies, paper.t2e_dispatch) == (
        "epsilon", "hidden", "skip_scatter")  # fmt: skip
    assert load_assumptions("roofline") == ROOFLINE
    with pytest.raises(ValueError, match=r"assumptions\.load_model"):
        Assumptions(load_model="guess")
    with pytest.raises(ValueError, match=r"assumptions\.skew"):
        Assumptions(skew=0.5)
    # switching every ladder rung off lands exactly on ours
    for key, value, _ in LADDER:
        paper = Assumptions(**{**paper.__dict__, key: value})
    assert Assumptions(**{**paper.__dict__, "name": "roofline"}) == ROOFLINE


def test_paper_preset_under_paper_assumptions(tmp_path: Path) -> None:
    """Under the paper's assumptions Distribution-Only comes out ahead of Token-to-Expert by
    about the paper's margin, the ladder ends at our pricing, and the report shows it."""
    over = ["+experiment=moe_gps_mixtral_mmlu", "assumptions=moe_gps_paper", "predictor=fast",
            "report=minimal", "strategy.ilp=false", "evaluation.train_batches=3",
            "evaluation.test_batches=2", "strategy.capacity_factors=[1.0]"]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=over)
    report = run(cfg, tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    ladder = res["paper"]["assumption_ladder"]
    assert res["paper"]["assumptions"] == "moe_gps_paper"
    assert [r["step"] for r in ladder] == list(range(len(LADDER) + 1))
    # Under the paper's assumptions our Distribution-Only gain lands near the paper's own
    # headline (+23%, arXiv 2506.07366: a number moe-gps does not produce), within the 30%
    # the project calls agreement (gps.advisor.paper); under ours it collapses (last rung).
    assert ladder[0]["gain"] == pytest.approx(0.23, rel=0.3)
    assert abs(ladder[-1]["gain"]) < 0.05
    assert ladder[-1]["assumptions"]["name"] == "roofline"
    best = {
        f: max(
            (s for s in res["strategies"] if s["family"] == f and not s["synthetic"]),
            key=lambda s: s["speedup_vs_baseline"],
        )
        for f in ("distribution", "token")
    }
    assert best["distribution"]["e2e_time_s"] == pytest.approx(ladder[0]["distribution_s"])
    assert best["token"]["e2e_time_s"] > best["distribution"]["e2e_time_s"]
    text = report.read_text()
    assert "Assumption ladder" in text and "the paper's assumptions" in text


@pytest.mark.parametrize(
    ("override", "key"),
    [("assumptions.load_model=guess", r"assumptions\.load_model"),
     ("strategy.resident_experts=1.5", r"strategy\.resident_experts"),
     ("strategy.dispatch_chunks=0", r"strategy\.dispatch_chunks")],
)  # fmt: skip
def test_bad_knobs_fail_before_work(override: str, key: str) -> None:
    from gps.advisor.advise import advise

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[override])
    with pytest.raises(ValueError, match=key):
        advise(cfg)
