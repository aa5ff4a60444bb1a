"""Expert-load predictors: Distribution-Only (``[L, E]`` proportions per batch) and
Token-to-Expert (``[T, L, k]`` experts per token), scikit-learn conventions, with accuracy
metrics, held-out evaluation and overhead priced by the cost model's roofline.

``PREDICTORS`` maps the names configs use to classes; ``make_predictor(name, **params)``
builds one. See ``docs/predictors.md``.
"""

from __future__ import annotations

from sklearn.base import BaseEstimator

from predictors.base import (
    DistributionPredictor,
    PredictorCost,
    TokenPredictor,
    layer_overhead_s,
    price,
)
from predictors.distribution import (
    EWMAPredictor,
    GlobalPriorPredictor,
    LastBatchPredictor,
    LightGBMLoadPredictor,
    LinearARPredictor,
    TokenIdDistributionPredictor,
    WindowMeanPredictor,
)
from predictors.evaluate import (
    PredictorRecord,
    evaluate_distribution_predictor,
    evaluate_token_predictor,
    format_table,
    overhead_summary,
)
from predictors.hidden import HiddenStateRouterPredictor, router_cost
from predictors.metrics import (
    distribution_accuracy,
    exact_set_accuracy,
    expert_histogram,
    horizon_errors,
    induced_distribution_error,
    l1_distance,
    max_load_relative_error,
    proportion_mae,
    record_interval,
    steps_to_records,
    topk_hit_rate,
    total_variation,
)
from predictors.token import (
    LightGBMTokenPredictor,
    MLPTokenPredictor,
    PopularityTokenPredictor,
    PreviousLayerPredictor,
    TokenIdTablePredictor,
)
from predictors.whatif import WhatIfDistributionPredictor, WhatIfTokenPredictor

DISTRIBUTION_PREDICTORS: dict[str, type[DistributionPredictor]] = {
    "last_batch": LastBatchPredictor,
    "window_mean": WindowMeanPredictor,
    "ewma": EWMAPredictor,
    "global_prior": GlobalPriorPredictor,
    "linear_ar": LinearARPredictor,
    "lightgbm_load": LightGBMLoadPredictor,
    "token_id_mle": TokenIdDistributionPredictor,
    "whatif_distribution": WhatIfDistributionPredictor,
}
TOKEN_PREDICTORS: dict[str, type[TokenPredictor]] = {
    "popularity": PopularityTokenPredictor,
    "token_id_table": TokenIdTablePredictor,
    "previous_layer": PreviousLayerPredictor,
    "lightgbm_token": LightGBMTokenPredictor,
    "mlp_token": MLPTokenPredictor,
    "hidden_router": HiddenStateRouterPredictor,
    "whatif_token": WhatIfTokenPredictor,
}
PREDICTORS: dict[str, type[BaseEstimator]] = {**DISTRIBUTION_PREDICTORS, **TOKEN_PREDICTORS}


def make_predictor(name: str, **params: object) -> BaseEstimator:
    """Build the predictor registered as ``name`` with ``params`` (its ``__init__`` keywords).

    Raises:
        ValueError: unknown name (the message lists the known ones) or unknown parameter.
    """
    try:
        cls = PREDICTORS[name]
    except KeyError:
        raise ValueError(f"unknown predictor {name!r}; known: {sorted(PREDICTORS)}") from None
    valid = set(cls().get_params())
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ValueError(
            f"predictor {name!r}: unknown parameter(s) {unknown}; valid: {sorted(valid)}"
        )
    return cls(**params)


__all__ = [
    "DISTRIBUTION_PREDICTORS",
    "PREDICTORS",
    "TOKEN_PREDICTORS",
    "DistributionPredictor",
    "EWMAPredictor",
    "GlobalPriorPredictor",
    "HiddenStateRouterPredictor",
    "LastBatchPredictor",
    "LightGBMLoadPredictor",
    "LightGBMTokenPredictor",
    "LinearARPredictor",
    "MLPTokenPredictor",
    "PopularityTokenPredictor",
    "PredictorCost",
    "PredictorRecord",
    "PreviousLayerPredictor",
    "TokenIdDistributionPredictor",
    "TokenIdTablePredictor",
    "TokenPredictor",
    "WhatIfDistributionPredictor",
    "WhatIfTokenPredictor",
    "WindowMeanPredictor",
    "distribution_accuracy",
    "evaluate_distribution_predictor",
    "evaluate_token_predictor",
    "exact_set_accuracy",
    "expert_histogram",
    "format_table",
    "horizon_errors",
    "induced_distribution_error",
    "l1_distance",
    "layer_overhead_s",
    "make_predictor",
    "max_load_relative_error",
    "overhead_summary",
    "price",
    "proportion_mae",
    "record_interval",
    "router_cost",
    "steps_to_records",
    "topk_hit_rate",
    "total_variation",
]
