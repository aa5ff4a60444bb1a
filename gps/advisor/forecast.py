"""Expert-load forecasting over training/serving time: a load-series ``trace`` preset makes
the run a forecasting study (no cost model): each load-history Distribution-Only predictor's
proportion MAE at ``evaluation.horizons`` training steps ahead
(``predictors.metrics.horizon_errors``). The series stores one record every
``step_interval`` training steps; horizons are given and reported in steps, predictor
parameters (``window``, ``lags``) count records and are reported in steps too.
"""

from __future__ import annotations

import dataclasses
import math
import sys

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import predictors
from gps.advisor.paper import SCHEMA_VERSION, paper_figure
from gps.advisor.stable_state import detect_stable_state, sampling_floor, stable_forecast_errors
from gps.hardware import Cluster
from gps.model import MoEModelSpec
from gps.traces.synthetic import LoadSeriesConfig, generate_load_series
from predictors.metrics import horizon_errors, record_interval, steps_to_records


def forecast_results(
    cfg: DictConfig,
    series_cfg: LoadSeriesConfig,
    spec: MoEModelSpec,
    cluster: Cluster,
    config: dict,
    command: str,
) -> dict:
    """``results.json`` dict of a forecasting run: ``forecast.rows[i].mae[j]`` is predictor
    ``i``'s MAE at ``forecast.horizons_steps[j]`` training steps ahead (``None`` where the
    history is too short); ``forecast.horizons[j]`` is the same horizon in records.

    Raises:
        ValueError: a horizon that is not a positive multiple of the record interval.
    """
    series = generate_load_series(dataclasses.replace(series_cfg, seed=cfg.seed))
    interval = record_interval(series)
    horizons = [int(h) for h in cfg.evaluation.horizons]
    for h in horizons:
        steps_to_records(h, interval, "evaluation.horizons")
    params = OmegaConf.to_container(cfg.predictor.params, resolve=True)
    ev = cfg.evaluation
    stable = (detect_stable_state(series, ev.stable_window_steps, ev.stable_factor)
              if ev.stable_window_steps else None)  # fmt: skip
    rows = []
    for name in tqdm(list(cfg.predictor.distribution), desc="forecasters", file=sys.stderr,
                     disable=None, leave=False):  # fmt: skip
        model = predictors.make_predictor(name, **params.get(name, {}))
        if model.input_kind != "loads":
            continue
        errs = horizon_errors(series, model, horizons, train_fraction=cfg.evaluation.train_fraction)
        span = model.get_params().get("window", model.get_params().get("lags"))
        rows.append({
            "predictor": name,
            "window_steps": None if span is None else int(span) * interval,
            "mae": [None if math.isnan(errs[h]) else errs[h] for h in horizons],
        })  # fmt: skip
        if stable is not None:
            st = stable_forecast_errors(series, model, horizons, stable["begins_record"])
            rows[-1]["stable"] = {
                key: [None if math.isnan(st[h][key]) else st[h][key] for h in horizons]
                for key in ("absolute", "relative", "relative_to_mean")
            }
            stable["uniform_absolute"] = [st[h]["uniform_absolute"] for h in horizons]
    if not rows:
        raise ValueError("predictor.distribution: no load-history predictor to forecast with")
    best = min(rows, key=lambda r: r["mae"][-1] if r["mae"][-1] is not None else math.inf)
    s, layers, e = series.counts.shape
    results = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "config": config,
        "setup": {
            "model": series_cfg.model or spec.name, "hardware": cluster.name,
            "gpus": cluster.num_gpus, "nodes": cluster.num_nodes, "phase": "training",
            "tokens_per_step": series_cfg.tokens_per_step, "trace": "load series",
            "steps": s * interval, "records": s, "layers": layers, "experts": e,
        },
        "baseline": None,
        "strategies": [],
        "forecast": {
            "horizons": [h // interval for h in horizons], "horizons_steps": horizons,
            "record_interval_steps": interval, "rows": rows,
        },
        "recommendation": {
            "strategy": best["predictor"], "family": "distribution", "speedup_vs_baseline": None,
            "tie": None,
            "text": (f"Forecast expert load with **{best['predictor']}**: mean absolute error of "
                     f"load proportions {best['mae'][-1]:.2%} at {horizons[-1]:,} training steps "
                     f"ahead."
                     if best["mae"][-1] is not None else
                     f"No predictor could forecast {horizons[-1]:,} steps ahead on this series."),
        },
        "guidelines": None,
        "published_predictors": [],
        "paper": None,
    }  # fmt: skip
    if stable is not None:
        stable["sampling_floor_relative"] = sampling_floor(series, stable["begins_record"])
        results["forecast"]["stable_state"] = stable
    if cfg.paper.metric:
        results["paper"] = paper_figure(cfg.paper, results)
    return results
