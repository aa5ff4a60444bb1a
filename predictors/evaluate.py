"""Held-out evaluation: one :class:`PredictorRecord` per predictor with accuracy, overhead
(FLOPs, bytes, roofline seconds on a GPU profile) and measured wall time on this machine.

Accuracy is always measured on data the predictor was not fit on: token predictors fit on
``train`` sequences and predict ``test`` sequences (``gps.traces.split_by_sequence``);
load-history predictors fit on the train batches and forecast each test batch from the
batches before it (train and earlier test batches: online forecasting with frozen
parameters).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from gps.hardware import GPUProfile
from gps.traces.batching import batch_loads
from gps.traces.trace import TokenTrace
from predictors.base import (
    DistributionPredictor,
    PredictorCost,
    TokenPredictor,
    check_loads,
    price,
    proportions,
)
from predictors.metrics import (
    distribution_accuracy,
    exact_set_accuracy,
    induced_distribution_error,
    topk_hit_rate,
)


@dataclass
class PredictorRecord:
    """Result of evaluating one predictor.

    Attributes:
        name: predictor name (registry name or class name).
        family: ``"token"`` or ``"distribution"``.
        synthetic: what-if predictor (accuracy set, not measured).
        params: ``get_params()``.
        accuracy: metric name -> value (held-out).
        cost: the declared :class:`PredictorCost`.
        overhead: ``flops_per_batch``, ``bytes_per_batch``, ``seconds_per_batch`` (roofline on
            ``gpu``), ``gpu``, ``tokens_per_batch``, ``where``, ``on_critical_path``.
        fit_s, predict_s: measured wall seconds on this machine.
        predict_units, unit: what ``predict_s`` covered (tokens or batches).
        n_train, n_test: train / test size in ``unit``.
    """

    name: str
    family: str
    synthetic: bool
    params: dict
    accuracy: dict[str, float]
    cost: PredictorCost
    overhead: dict
    fit_s: float
    predict_s: float
    predict_units: int
    unit: str
    n_train: int
    n_test: int
    extra: dict = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Predicted ``unit`` per second of measured predict time."""
        return self.predict_units / self.predict_s if self.predict_s > 0 else float("inf")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["throughput"] = self.throughput
        return out


def overhead_summary(cost: PredictorCost, gpu: GPUProfile, tokens_per_batch: int) -> dict:
    """Per-batch FLOPs, bytes and roofline seconds of ``cost`` on ``gpu``."""
    flops, bytes_ = cost.batch_work(tokens_per_batch)
    return {
        "flops_per_batch": flops,
        "bytes_per_batch": bytes_,
        "seconds_per_batch": price(cost, gpu, tokens_per_batch),
        "gpu": gpu.name,
        "tokens_per_batch": int(tokens_per_batch),
        "where": cost.where,
        "on_critical_path": cost.on_critical_path,
    }


def _name(predictor: object, name: str | None) -> str:
    return name if name is not None else type(predictor).__name__


def evaluate_token_predictor(
    predictor: TokenPredictor,
    train: TokenTrace,
    test: TokenTrace,
    *,
    gpu: GPUProfile,
    batch_size: int,
    name: str | None = None,
) -> PredictorRecord:
    """Fit on ``train``, predict ``test``; top-k hit rate, exact-set accuracy and the induced
    per-batch distribution error (batches of ``batch_size`` test tokens)."""
    t0 = time.perf_counter()
    predictor.fit(train)
    t1 = time.perf_counter()
    pred = predictor.predict(test)
    t2 = time.perf_counter()
    true = np.asarray(test.experts)
    accuracy = {
        "topk_hit_rate": topk_hit_rate(pred, true),
        "exact_set_acc": exact_set_accuracy(pred, true),
    }
    induced = induced_distribution_error(pred, true, test.num_experts, batch_size)
    accuracy.update({f"induced_{k}": v for k, v in induced.items()})
    cost = predictor.cost()
    return PredictorRecord(
        name=_name(predictor, name),
        family="token",
        synthetic=bool(getattr(predictor, "synthetic", False)),
        params=predictor.get_params(),
        accuracy=accuracy,
        cost=cost,
        overhead=overhead_summary(cost, gpu, batch_size),
        fit_s=t1 - t0,
        predict_s=t2 - t1,
        predict_units=test.num_tokens,
        unit="tokens",
        n_train=train.num_tokens,
        n_test=test.num_tokens,
    )


def evaluate_distribution_predictor(
    predictor: DistributionPredictor,
    *,
    gpu: GPUProfile,
    batch_size: int,
    train_trace: TokenTrace | None = None,
    test_trace: TokenTrace | None = None,
    train_loads: np.ndarray | None = None,
    test_loads: np.ndarray | None = None,
    horizon: int = 1,
    name: str | None = None,
) -> PredictorRecord:
    """Held-out accuracy of a distribution predictor on test batches.

    Loads come from ``*_loads`` (``[N, L, E]``) or, when absent, ``batch_loads(*_trace,
    batch_size)``. ``input_kind="loads"``: fit on the train loads, forecast every test batch
    ``horizon`` batches ahead. ``input_kind="tokens"``: fit on ``train_trace``, predict each
    test batch from its token ids (needs both traces). ``batch_size`` also sets the tokens
    per batch the overhead is priced at.
    """
    if train_loads is None:
        if train_trace is None:
            raise ValueError("give train_loads or train_trace")
        train_loads = batch_loads(train_trace, batch_size)
    if test_loads is None:
        if test_trace is None:
            raise ValueError("give test_loads or test_trace")
        test_loads = batch_loads(test_trace, batch_size)
    train_loads = check_loads(train_loads, "train_loads")
    test_loads = check_loads(
        test_loads, "test_loads", num_layers=train_loads.shape[1], num_experts=train_loads.shape[2]
    )
    truth = proportions(test_loads)
    if predictor.input_kind == "tokens":
        if train_trace is None or test_trace is None:
            raise ValueError(f"{_name(predictor, name)} needs train_trace and test_trace")
        t0 = time.perf_counter()
        predictor.fit(train_trace)
        t1 = time.perf_counter()
        pred = predictor.predict_batches(test_trace, batch_size)
        t2 = time.perf_counter()
    else:
        series = np.concatenate([train_loads, test_loads])
        t0 = time.perf_counter()
        predictor.fit(train_loads)
        t1 = time.perf_counter()
        pred = predictor.predict_rolling(series, start=train_loads.shape[0], horizon=horizon)
        t2 = time.perf_counter()
    if pred.shape != truth.shape:
        raise ValueError(f"forecast shape {pred.shape} != test loads {truth.shape}")
    cost = predictor.cost()
    return PredictorRecord(
        name=_name(predictor, name),
        family="distribution",
        synthetic=bool(getattr(predictor, "synthetic", False)),
        params=predictor.get_params(),
        accuracy=distribution_accuracy(pred, truth),
        cost=cost,
        overhead=overhead_summary(cost, gpu, batch_size),
        fit_s=t1 - t0,
        predict_s=t2 - t1,
        predict_units=truth.shape[0],
        unit="batches",
        n_train=int(train_loads.shape[0]),
        n_test=int(truth.shape[0]),
        extra={"horizon": horizon},
    )


def format_table(records: list[PredictorRecord]) -> str:
    """Markdown table: one row per record (synthetic ones marked ``*``)."""
    head = (
        "| predictor | family | fit s | predict s | throughput | hit rate | exact set | TV | "
        "max-load rel err | prop. MAE | FLOPs/batch | bytes/batch | priced s/batch | where |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | --- |"
    )
    rows = [head]
    for r in records:
        a = r.accuracy
        tv = a.get("tv", a.get("induced_tv", np.nan))
        mx = a.get("max_load_rel_err", a.get("induced_max_load_rel_err", np.nan))
        mae = a.get("proportion_mae", a.get("induced_proportion_mae", np.nan))
        o = r.overhead
        rows.append(
            f"| {r.name}{' *' if r.synthetic else ''} | {r.family} | {r.fit_s:.3f} | "
            f"{r.predict_s:.3f} | {r.throughput:,.0f} {r.unit}/s | "
            f"{_fmt(a.get('topk_hit_rate'))} | {_fmt(a.get('exact_set_acc'))} | {_fmt(tv)} | "
            f"{_fmt(mx)} | {_fmt(mae, 5)} | {o['flops_per_batch']:.3g} | "
            f"{o['bytes_per_batch']:.3g} | {o['seconds_per_batch']:.3g} | {o['where']} |"
        )
    return "\n".join(rows)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:.{digits}f}"
