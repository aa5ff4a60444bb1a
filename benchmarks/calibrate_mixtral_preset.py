"""Real-vs-synthetic check of the ``mixtral_mmlu_like`` preset (and the grid that set it).

Compares, per MoE layer and over all tokens of the trace, the three statistics the preset
is calibrated on — expert max/mean load (:func:`gps.traces.stats.imbalance_ratio`),
entropy of the expert-load proportions (:func:`gps.traces.stats.load_entropy`, bits) and
mutual information between consecutive layers' experts
(:func:`gps.traces.stats.cross_layer_mutual_information`, bits) — on the real Mixtral-8x7B
vLLM trace (``../shared/traces/mixtral_8x7b_vllm``, converted on the fly by
:func:`gps.traces.shared.mixtral_vllm_trace`: 577 tokens, 32 layers, top-2 of 8)
and on the preset generated at the same token count, averaged over seeds. Also prints the
mean top-1 gate weight (not calibrated: a check of the score model).

    .venv/bin/python benchmarks/calibrate_mixtral_preset.py            # the comparison table
    .venv/bin/python benchmarks/calibrate_mixtral_preset.py --search   # + the coarse grid

The grid varies the four calibrated knobs (``dirichlet_alpha``, ``layer_skew_spread``,
``markov_strength``, ``markov_layer_spread``) around the preset, all other fields as in
the preset, and ranks by the distance of median and range to the real trace.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import numpy as np

from gps.traces import batch_loads
from gps.traces.shared import mixtral_vllm_trace
from gps.traces.stats import cross_layer_mutual_information, imbalance_ratio, load_entropy
from gps.traces.synthetic import SyntheticTraceConfig, load_preset
from gps.traces.synthetic import generate_token_trace as generate
from gps.traces.trace import TokenTrace

STATS = ("max/mean load", "load entropy (bits)", "cross-layer MI (bits)")
SCALE = np.array([0.05, 0.01, 0.01])  # distance units of the grid objective, per statistic
# --search grid: dirichlet_alpha, layer_skew_spread, markov_strength, markov_layer_spread.
ALPHA = (3.0, 4.0, 5.0, 6.0, 8.0)
SKEW_SPREAD = (0.0, 0.25, 0.5)
MARKOV = (0.3, 0.35, 0.4, 0.45, 0.5)
MARKOV_SPREAD = (0.3, 0.5, 0.7, 0.9)


def per_layer(trace: TokenTrace) -> list[np.ndarray]:
    """The three statistics per layer (MI per layer pair) over all tokens of ``trace``."""
    loads = batch_loads(trace, trace.num_tokens)[0]  # [L, E]: the whole trace as one batch
    return [imbalance_ratio(loads), load_entropy(loads), cross_layer_mutual_information(trace)]


def summary(values: list[np.ndarray]) -> np.ndarray:
    """``[3]`` median, min, max across layers of one statistic."""
    return np.array([np.median(values), np.min(values), np.max(values)])


def synthetic(config: SyntheticTraceConfig, seeds: range) -> tuple[np.ndarray, float]:
    """``[3 stats, 3 (median, min, max)]`` averaged over seeds, and the mean top-1 weight."""
    rows, top1 = [], []
    for seed in seeds:
        trace = generate(dataclasses.replace(config, seed=seed))
        rows.append([summary(v) for v in per_layer(trace)])
        top1.append(float(trace.scores[..., 0].astype(np.float64).mean()))
    return np.mean(rows, axis=0), float(np.mean(top1))


def distance(syn: np.ndarray, real: np.ndarray) -> float:
    """Medians count fully, the range ends a quarter each (they are noisy), in SCALE units."""
    diff = np.abs(syn - real) / SCALE[:, None]
    return float((diff[:, 0] + 0.25 * (diff[:, 1] + diff[:, 2])).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="synthetic seeds averaged")
    parser.add_argument("--search", action="store_true", help="also run the calibration grid")
    args = parser.parse_args()
    real_trace = mixtral_vllm_trace()
    real = np.array([summary(v) for v in per_layer(real_trace)])
    real_top1 = float(real_trace.scores[..., 0].astype(np.float64).mean())
    preset = dataclasses.replace(load_preset("mixtral_mmlu_like"), num_tokens=real_trace.num_tokens)
    seeds = range(args.seeds)
    if args.search:
        grid = itertools.product(ALPHA, SKEW_SPREAD, MARKOV, MARKOV_SPREAD)
        ranked = []
        for alpha, skew, m, mspread in grid:
            config = dataclasses.replace(
                preset,
                dirichlet_alpha=alpha,
                layer_skew_spread=skew,
                markov_strength=m,
                markov_layer_spread=mspread,
            )
            syn, _ = synthetic(config, seeds)
            ranked.append((distance(syn, real), alpha, skew, m, mspread))
        ranked.sort()
        print(
            "best grid points (distance, dirichlet_alpha, layer_skew_spread, markov_strength,"
            " markov_layer_spread):"
        )
        for row in ranked[:8]:
            print("  " + ", ".join(f"{v:g}" for v in row))
        print()
    syn, syn_top1 = synthetic(preset, seeds)
    print(
        f"mixtral_mmlu_like vs real Mixtral-8x7B trace, {real_trace.num_tokens} tokens, "
        f"32 layers, top-2 of 8; synthetic averaged over {args.seeds} seeds "
        f"(distance {distance(syn, real):.2f})\n"
    )
    print(
        "| statistic (per layer, all tokens) | real median | real range | synthetic median "
        "| synthetic range |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r, s in zip(STATS, real, syn, strict=True):
        print(
            f"| {name} | {r[0]:.3f} | {r[1]:.3f}-{r[2]:.3f} | {s[0]:.3f} | {s[1]:.3f}-{s[2]:.3f} |"
        )
    print(f"| mean top-1 gate weight (not calibrated) | {real_top1:.3f} | | {syn_top1:.3f} | |")


if __name__ == "__main__":
    main()
