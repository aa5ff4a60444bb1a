"""Forecast error of the ``training_gpt_350m_like`` load series as a function of its noise.

No published measurement gives the stable-phase noise of a GPT-style MoE training run's
expert loads (see ``docs/traces_synthetic.md``), so ``stable_noise`` and ``mean_reversion``
of the preset are assumptions. This script shows what they decide: the proportion MAE of a
1,000-step sliding-window average (``WindowMeanPredictor``, window = 1,000 steps in records)
at 1,000 and 2,000 training steps ahead, with the forecast run's protocol
(``predictors.horizon_errors``: fit on the first half of the records, test on the rest, which
lies in the stable phase), averaged over seeds, for a grid of both knobs; every other field is
the preset's. It also prints the preset's transient-vs-stable statistics quoted in the docs
(mean step-to-step change of a proportion).

Run: ``.venv/bin/python benchmarks/forecast_noise_sensitivity.py [--seeds 8]``
(docs/traces_synthetic.md quotes its output; ~1-2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from machine import describe

from gps.traces.synthetic import generate_load_series, load_preset
from predictors import WindowMeanPredictor, horizon_errors, record_interval, steps_to_records

NOISE = (0.004, 0.006, 0.008, 0.010, 0.012, 0.016)
REVERSION = (0.00005, 0.0001, 0.00015, 0.0003)
HORIZONS = (1000, 2000)  # training steps
WINDOW_STEPS = 1000


def window_errors(config, seeds: int) -> np.ndarray:
    """``[len(HORIZONS)]`` mean over ``seeds`` of the 1,000-step window's MAE (points)."""
    out = []
    for seed in range(seeds):
        series = generate_load_series(dataclasses.replace(config, seed=seed))
        window = steps_to_records(WINDOW_STEPS, record_interval(series), "window")
        errs = horizon_errors(series, WindowMeanPredictor(window=window), HORIZONS)
        out.append([100 * errs[h] for h in HORIZONS])
    return np.mean(out, axis=0)


def step_changes(config, seeds: int) -> tuple[float, float]:
    """Mean absolute change of a proportion between consecutive records (points): over the
    first ``transient_steps`` steps, and after ``5 * transient_steps`` (stable phase)."""
    early, late = [], []
    for seed in range(seeds):
        series = generate_load_series(dataclasses.replace(config, seed=seed))
        p = series.counts / series.counts.sum(axis=2, keepdims=True)
        change = 100 * np.abs(np.diff(p, axis=0)).mean(axis=(1, 2))  # [S - 1]
        step = series.step[1:]
        early.append(change[step <= config.transient_steps].mean())
        late.append(change[step > 5 * config.transient_steps].mean())
    return float(np.mean(early)), float(np.mean(late))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    print(describe())
    preset = load_preset("training_gpt_350m_like")
    print(
        f"preset training_gpt_350m_like: stable_noise {preset.stable_noise}, mean_reversion "
        f"{preset.mean_reversion}, {preset.num_steps} records every {preset.step_interval} "
        f"steps; {args.seeds} seeds\n"
    )
    early, late = step_changes(preset, args.seeds)
    print(
        f"mean step-to-step change of a proportion: {early:.2f} points in the first "
        f"{preset.transient_steps:,.0f} steps, {late:.2f} after {5 * preset.transient_steps:,.0f}\n"
    )
    at = window_errors(preset, args.seeds)
    print(
        "preset: 1,000-step window, MAE " + " / ".join(f"{v:.2f}" for v in at)
        + " points at " + " / ".join(f"{h:,}" for h in HORIZONS) + " steps\n"
    )  # fmt: skip
    header = "| stable_noise | " + " | ".join(f"mean_reversion {r:g}" for r in REVERSION) + " |"
    print("MAE (percentage points) at 1,000 / 2,000 steps ahead\n")
    print(header)
    print("| ---: |" + " ---: |" * len(REVERSION))
    for noise in NOISE:
        cells = []
        for rate in REVERSION:
            config = dataclasses.replace(preset, stable_noise=noise, mean_reversion=rate)
            e = window_errors(config, args.seeds)
            cells.append(f"{e[0]:.2f} / {e[1]:.2f}")
        print(f"| {noise:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
