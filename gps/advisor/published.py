"""Published Token-to-Expert predictors placed on this run's frontier (``published_predictors``).

Each published point (``predictors/published.yaml``; accuracy converted to our top-k hit
rate, overhead priced on the run's model and GPU) gets the speed-up the what-if sweep implies
at its accuracy and overhead: the what-if step time without overhead, interpolated linearly
over the swept accuracies, plus ``overhead_s_per_layer * L_moe`` (on-path predictor time adds
linearly, as in :mod:`gps.advisor.guidelines`). Published, not measured here.
"""

from __future__ import annotations

import numpy as np

from gps.hardware import GPUProfile
from gps.model import MoEModelSpec
from predictors.published import published_points


def place(point: dict, guide: dict | None, baseline_s: float, moe_layers: int) -> dict:
    """``point`` plus ``speedup_estimate`` and ``beats_distribution`` (``None`` when it has no
    priced overhead, there is no what-if sweep, or its accuracy lies outside the sweep)."""
    out = {**point, "speedup_estimate": None, "beats_distribution": None}
    if guide is None or point["overhead_s_per_layer"] is None:
        return out
    acc = np.asarray(guide["accuracy"])
    a = point["topk_hit_rate"]
    if not acc[0] <= a <= acc[-1]:
        return out
    # Step time without overhead from the first overhead row: baseline / speed-up - ov * L.
    base = baseline_s / np.asarray(guide["token_speedup"][0]) - guide["overhead_s"][0] * moe_layers
    step = float(np.interp(a, acc, base)) + point["overhead_s_per_layer"] * moe_layers
    out["speedup_estimate"] = baseline_s / step
    out["beats_distribution"] = bool(out["speedup_estimate"] > guide["distribution_speedup"])
    return out


def published_results(
    spec: MoEModelSpec,
    gpu: GPUProfile,
    tokens_per_step: int,
    guide: dict | None,
    baseline_s: float,
    moe_layers: int,
) -> list[dict]:
    """The ``published_predictors`` list of ``results.json`` (keys: ``docs/results.md``)."""
    points = published_points(spec, gpu, tokens_per_step)
    return [place(p, guide, baseline_s, moe_layers) for p in points]
