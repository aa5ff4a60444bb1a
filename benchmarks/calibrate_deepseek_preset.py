"""Calibration of synthetic presets against real routing: ESFT (DeepSeek-V2-Lite) and Mixtral.

1. ``deepseek_v2_lite_like`` vs the real DeepSeek-V2-Lite-architecture routing of ESFT
   (``../shared/traces/deepseek_v2_lite_esft``: 33,279 tokens, 26 MoE layers, top-6 of 64,
   four datasets), both at 33,279 tokens:

   * expert max/mean load per layer over all tokens, and over batches of B = 256, 1024 and
     4096 consecutive tokens (mean over the batches; ESFT's sequences in a seeded random
     order, since the synthetic trace's sequences draw their domain at random; ESFT's file
     order, one dataset after another, is shown too);
   * entropy of the all-token expert-load proportions (bits; log2 64 = 6 is balanced);
   * mutual information between consecutive layers' experts (bits);
   * the shift between datasets: per-dataset all-token max/mean, and the total-variation
     distance between two datasets' load distributions (mean over layers and pairs).

   Medians across layers; synthetic figures averaged over seeds. The preset passes when
   its median all-token max/mean and entropy are within 10 % of ESFT's.
2. ``mixtral_mmlu_like`` vs the large-sample Mixtral-8x7B counts of the OLMoE repository
   (``../shared/traces/olmoe_mixtral_domain_counts``: ~208,896 tokens per domain, layers
   0, 7, 15): per-(domain, layer) max/mean against the preset generated at 208,896 tokens.

    .venv/bin/python benchmarks/calibrate_deepseek_preset.py              # print the tables
    .venv/bin/python benchmarks/calibrate_deepseek_preset.py --write-docs # and update docs
    .venv/bin/python benchmarks/calibrate_deepseek_preset.py --search     # + the grid

``--write-docs`` replaces the block between the ``calibration:begin``/``end`` markers in
``docs/traces_synthetic.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import re
import time
from pathlib import Path

import numpy as np

from gps.traces import batch_loads, take_tokens
from gps.traces.shared import domain_counts, esft_trace
from gps.traces.stats import cross_layer_mutual_information, imbalance_ratio, load_entropy
from gps.traces.synthetic import SyntheticTraceConfig, generate_token_trace, load_preset
from gps.traces.trace import TokenTrace

BATCHES = (256, 1024, 4096)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "traces_synthetic.md"
MARKERS = ("<!-- calibration:begin (benchmarks/calibrate_deepseek_preset.py --write-docs) -->",
           "<!-- calibration:end -->")  # fmt: skip
# --search grid around the preset: dirichlet_alpha, domain_shift, token_affinity (the Markov
# knobs stay at the preset's: no setting tried, 0.3-0.9 strength, branching 1-4, lifts the
# cross-layer MI above ~0.08 bits, far below ESFT's 0.55).
ALPHA = (2.0, 3.0, 5.0)
SHIFT = (1.2, 1.4)
AFFINITY = (0.25, 0.5, 0.75)


def _sequence_shuffled(trace: TokenTrace, seed: int) -> TokenTrace:
    """Whole sequences in a seeded random order (each sequence's tokens stay in order)."""
    order = np.random.default_rng(seed).permutation(int(trace.sequence_id.max()) + 1)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    idx = np.lexsort((np.arange(trace.num_tokens), rank[trace.sequence_id]))
    return take_tokens(trace, idx)


def _tv_between_domains(trace: TokenTrace) -> float:
    """Mean over layers and domain pairs of the total-variation distance of load shares."""
    shares = []
    for d in range(len(trace.meta["domains"])):
        load = batch_loads(take_tokens(trace, trace.domain == d), int((trace.domain == d).sum()))
        shares.append(load[0] / load[0].sum(axis=1, keepdims=True))
    pairs = itertools.combinations(range(len(shares)), 2)
    return float(np.mean([0.5 * np.abs(shares[a] - shares[b]).sum(1).mean() for a, b in pairs]))


def statistics(trace: TokenTrace, order_seed: int | None) -> dict[str, float]:
    """Medians across layers of the calibration statistics (see the module docstring)."""
    out = {}
    whole = batch_loads(trace, trace.num_tokens)[0]
    out["max/mean, all tokens"] = float(np.median(imbalance_ratio(whole)))
    ordered = trace if order_seed is None else _sequence_shuffled(trace, order_seed)
    for b in BATCHES:
        ratio = imbalance_ratio(batch_loads(ordered, b)).mean(axis=0)
        out[f"max/mean, batches of {b}"] = float(np.median(ratio))
    out["load entropy (bits)"] = float(np.median(load_entropy(whole)))
    out["cross-layer MI (bits)"] = float(np.median(cross_layer_mutual_information(trace)))
    per_domain = [
        np.median(imbalance_ratio(batch_loads(part, part.num_tokens)[0]))
        for d in range(len(trace.meta["domains"]))
        if (part := take_tokens(trace, trace.domain == d)).num_tokens
    ]
    out["max/mean within one dataset (mean of datasets)"] = float(np.mean(per_domain))
    out["TV distance between datasets"] = _tv_between_domains(trace)
    return out


def esft_statistics() -> tuple[dict[str, float], dict[str, float], TokenTrace]:
    """ESFT in random sequence order (seed 0) and in file order (batch rows only)."""
    trace = esft_trace()
    shuffled = statistics(trace, order_seed=0)
    file_order = {
        f"max/mean, batches of {b}": float(
            np.median(imbalance_ratio(batch_loads(trace, b)).mean(axis=0))
        )
        for b in BATCHES
    }
    return shuffled, file_order, trace


def synthetic_statistics(config: SyntheticTraceConfig, seeds: range) -> dict[str, float]:
    rows = [statistics(generate_token_trace(dataclasses.replace(config, seed=s)), None)
            for s in seeds]  # fmt: skip
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def deepseek_table(real: dict, file_order: dict, syn: dict, seeds: int, tokens: int) -> str:
    lines = [
        f"`deepseek_v2_lite_like` vs ESFT (DeepSeek-V2-Lite architecture), {tokens:,} tokens, "
        f"26 layers, top-6 of 64; medians across layers; synthetic averaged over {seeds} seeds.",
        "",
        "| statistic | ESFT | ESFT, file order | synthetic | synthetic / ESFT | within 10 % |",
        "| --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    for key, value in real.items():
        ratio = syn[key] / value
        fo = f"{file_order[key]:.3f}" if key in file_order else ""
        lines.append(
            f"| {key} | {value:.3f} | {fo} | {syn[key]:.3f} | {ratio:.2f} | "
            f"{'yes' if abs(ratio - 1) <= 0.10 else '**no**'} |"
        )
    return "\n".join(lines)


def mixtral_table(seeds: int) -> str:
    """Per-(domain, layer) max/mean of the Mixtral counts vs ``mixtral_mmlu_like``."""
    counts = domain_counts("mistral")
    real = imbalance_ratio(counts.counts.astype(np.float64))  # [domains, 3 layers]
    tokens = round(float(counts.counts[0, 0].sum()) / 2)  # top-2
    pooled = imbalance_ratio(counts.counts.sum(axis=0).astype(np.float64))  # [3]
    preset = dataclasses.replace(load_preset("mixtral_mmlu_like"), num_tokens=tokens)
    syn = []
    for seed in range(seeds):
        trace = generate_token_trace(dataclasses.replace(preset, seed=seed))
        load = batch_loads(trace, trace.num_tokens)[0][list(counts.meta["layers"])]
        syn.append(imbalance_ratio(load))
    syn = np.mean(syn, axis=0)
    small = "1.334 median (1.081-1.761) on the 577-token vLLM trace"
    return "\n".join([
        f"`mixtral_mmlu_like` vs Mixtral-8x7B counts (OLMoE repository), {tokens:,} tokens per "
        f"domain, layers {counts.meta['layers']}; synthetic averaged over {seeds} seeds.",
        "",
        "| max/mean load per layer | median | range |",
        "| --- | ---: | ---: |",
        f"| real, each of {len(counts.meta['step_names'])} domains x 3 layers | "
        f"{np.median(real):.3f} | {real.min():.3f}-{real.max():.3f} |",
        f"| real, 5 domains pooled (~{5 * tokens:,} tokens) | {np.median(pooled):.3f} | "
        f"{pooled.min():.3f}-{pooled.max():.3f} |",
        f"| `mixtral_mmlu_like` at {tokens:,} tokens (same layers) | {np.median(syn):.3f} | "
        f"{syn.min():.3f}-{syn.max():.3f} |",
        f"| (for scale: {small}) | | |",
    ])  # fmt: skip


def search(real: dict, preset: SyntheticTraceConfig, seeds: range) -> None:
    keys = ("max/mean, all tokens", "load entropy (bits)", "max/mean, batches of 1024",
            "max/mean within one dataset (mean of datasets)")  # fmt: skip
    ranked = []
    for alpha, shift, affinity in itertools.product(ALPHA, SHIFT, AFFINITY):
        config = dataclasses.replace(
            preset, dirichlet_alpha=alpha, domain_shift=shift, token_affinity=affinity
        )
        syn = synthetic_statistics(config, seeds)
        err = sum(abs(syn[k] / real[k] - 1) for k in keys)
        ranked.append((err, alpha, shift, affinity, [round(syn[k], 3) for k in keys]))
    print(f"grid ranked by summed relative error of {keys}:")
    for row in sorted(ranked)[:8]:
        print(f"error {row[0]:.3f}: dirichlet_alpha {row[1]}, domain_shift {row[2]}, "
              f"token_affinity {row[3]}: {row[4]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="synthetic seeds averaged")
    parser.add_argument("--search", action="store_true", help="also run the calibration grid")
    parser.add_argument("--write-docs", action="store_true", help="update docs/traces_synthetic.md")
    args = parser.parse_args()
    start = time.perf_counter()
    real, file_order, trace = esft_statistics()
    preset = dataclasses.replace(load_preset("deepseek_v2_lite_like"), num_tokens=trace.num_tokens)
    seeds = range(args.seeds)
    if args.search:
        search(real, preset, seeds)
    syn = synthetic_statistics(preset, seeds)
    tables = deepseek_table(real, file_order, syn, args.seeds, trace.num_tokens)
    tables += "\n\n" + mixtral_table(args.seeds)
    print(tables)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    if args.write_docs:
        text = DOCS.read_text(encoding="utf-8")
        pattern = re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1])
        if not re.search(pattern, text, flags=re.S):
            raise SystemExit(f"{DOCS}: calibration markers not found")
        block = f"{MARKERS[0]}\n{tables}\n{MARKERS[1]}"
        DOCS.write_text(re.sub(pattern, lambda _: block, text, flags=re.S), encoding="utf-8")
        print(f"updated {DOCS}")


if __name__ == "__main__":
    main()
