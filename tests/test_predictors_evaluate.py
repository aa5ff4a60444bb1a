"""Held-out evaluation records, the registry and the report table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_predictors_helpers import gpu, id_mapped_trace

from gps.traces import split_by_sequence
from predictors import (
    DISTRIBUTION_PREDICTORS,
    PREDICTORS,
    TOKEN_PREDICTORS,
    GlobalPriorPredictor,
    TokenIdDistributionPredictor,
    TokenIdTablePredictor,
    WhatIfTokenPredictor,
    evaluate_distribution_predictor,
    evaluate_token_predictor,
    format_table,
    make_predictor,
    price,
)


def test_registry_names_and_make_predictor():
    assert set(PREDICTORS) == set(DISTRIBUTION_PREDICTORS) | set(TOKEN_PREDICTORS)
    assert {"last_batch", "window_mean", "ewma", "global_prior", "linear_ar"} <= set(PREDICTORS)
    assert {"lightgbm_load", "token_id_mle", "whatif_distribution"} <= set(PREDICTORS)
    assert {"popularity", "token_id_table", "previous_layer", "lightgbm_token"} <= set(PREDICTORS)
    assert {"mlp_token", "whatif_token"} <= set(PREDICTORS)
    for cls in DISTRIBUTION_PREDICTORS.values():
        assert cls.family == "distribution"
    for cls in TOKEN_PREDICTORS.values():
        assert cls.family == "token"
    model = make_predictor("ewma", alpha=0.5)
    assert model.get_params() == {"alpha": 0.5}
    with pytest.raises(ValueError, match="unknown predictor 'nope'"):
        make_predictor("nope")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_predictor("ewma", beta=1)


def test_token_record_is_held_out_and_carries_overhead():
    trace, _ = id_mapped_trace(num_tokens=3000, layers=4)
    train, test = split_by_sequence(trace, 0.3, seed=0)
    model = TokenIdTablePredictor()
    record = evaluate_token_predictor(model, train, test, gpu=gpu(), batch_size=100)
    assert record.n_train == train.num_tokens and record.n_test == test.num_tokens
    assert record.accuracy["topk_hit_rate"] > 0.99
    assert record.accuracy["induced_tv"] < 0.01
    assert record.overhead["seconds_per_batch"] == pytest.approx(price(model.cost(), gpu(), 100))
    assert record.overhead["on_critical_path"] is True
    assert record.fit_s >= 0 and record.predict_s >= 0 and record.throughput > 0
    # plain JSON for results.json (no default=str fallback), and nothing lost on the way
    back = json.loads(json.dumps(record.to_dict(), allow_nan=False))
    assert back["accuracy"] == record.accuracy and back["params"] == model.get_params()
    assert back["cost"] == model.cost().to_dict() and back["overhead"] == record.overhead
    assert back["throughput"] == record.throughput and back["name"] == record.name


def test_distribution_records_for_both_input_kinds():
    trace, _ = id_mapped_trace(num_tokens=6000, layers=3, vocab=40)
    train, test = split_by_sequence(trace, 0.3, seed=0)
    tok = evaluate_distribution_predictor(
        TokenIdDistributionPredictor(), gpu=gpu(), batch_size=100, train_trace=train,
        test_trace=test,
    )  # fmt: skip
    prior = evaluate_distribution_predictor(
        GlobalPriorPredictor(), gpu=gpu(), batch_size=100, train_trace=train, test_trace=test
    )
    assert tok.n_test == prior.n_test == test.num_tokens // 100
    assert tok.accuracy["proportion_mae"] < 0.5 * prior.accuracy["proportion_mae"]
    assert set(tok.accuracy) == {"tv", "l1", "max_load_rel_err", "proportion_mae"}
    assert tok.overhead["where"] == "gpu_critical" and prior.overhead["where"] == "cpu_offpath"
    with pytest.raises(ValueError, match="needs train_trace"):
        evaluate_distribution_predictor(
            TokenIdDistributionPredictor(), gpu=gpu(), batch_size=100,
            train_loads=np.ones((5, 3, 8)), test_loads=np.ones((5, 3, 8)),
        )  # fmt: skip
    with pytest.raises(ValueError, match="experts"):
        evaluate_distribution_predictor(
            GlobalPriorPredictor(), gpu=gpu(), batch_size=100,
            train_loads=np.ones((5, 3, 8)), test_loads=np.ones((5, 3, 4)),
        )  # fmt: skip


def test_format_table_marks_synthetic():
    trace, _ = id_mapped_trace(num_tokens=2000, layers=2)
    train, test = split_by_sequence(trace, 0.3, seed=0)
    rec = evaluate_token_predictor(
        WhatIfTokenPredictor(accuracy=0.5), train, test, gpu=gpu(), batch_size=100, name="wi"
    )
    assert rec.synthetic
    table = format_table([rec])
    assert "| wi * | token |" in table
    assert table.count("\n") == 2
