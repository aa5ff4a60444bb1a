"""Hidden-state router vs popularity on activations a linear gate routes on, and the published
Token-to-Expert operating points priced on DeepSeek-V2-Lite and Qwen3-30B-A3B.

* Router: synthetic activations ``[T, L, d]`` ~ N(0, 1) (float16), experts = top-k of
  ``h @ W_l + skew`` with a random ``W_l [d, E]`` per layer (the router's input determines the
  routing, as a real gate's does), split by whole sequences (30 % test). Held-out top-k hit
  rate of ``popularity`` and of ``hidden_router`` (linear, and two layers of width ``d``), fit
  and predict wall seconds on this machine.
* Published points (``predictors/published.yaml``): accuracy in our metric and overhead per
  MoE layer, priced on the H100 SXM5 profile for ``--tokens-per-step`` tokens.

Run: ``.venv/bin/python benchmarks/bench_hidden_router.py [--tokens 20000] [--d 64]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from machine import describe

from gps.model import load_model_spec
from gps.profiles import load_gpu
from gps.traces import TokenTrace, split_by_sequence
from predictors import HiddenStateRouterPredictor, PopularityTokenPredictor, topk_hit_rate
from predictors.published import published_points


def gated_trace(tokens: int, layers: int, d: int, experts: int, k: int, seed: int) -> TokenTrace:
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((tokens, layers, d)).astype(np.float16)
    w = rng.standard_normal((layers, d, experts)) * 2 / np.sqrt(d)
    logits = np.einsum("tld,lde->tle", hidden.astype(float), w) + np.linspace(1.5, 0, experts)
    return TokenTrace(
        experts=np.argsort(-logits, axis=-1)[..., :k].astype(np.int16),
        token_id=np.full(tokens, -1, np.int32),
        sequence_id=(np.arange(tokens) // 100).astype(np.int32),
        position=(np.arange(tokens) % 100).astype(np.int32),
        num_experts=experts,
        hidden=hidden,
        hidden_layers=np.arange(layers, dtype=np.int16),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens-per-step", type=int, default=2048)
    args = ap.parse_args()
    print(describe())
    trace = gated_trace(args.tokens, args.layers, args.d, args.experts, args.top_k, args.seed)
    train, test = split_by_sequence(trace, 0.3, seed=args.seed)
    shape = f"T={args.tokens} L={args.layers} d={args.d} E={args.experts} k={args.top_k}"
    print(f"\ngated activations: {shape}; {train.num_tokens} train / {test.num_tokens} test\n")
    print("| predictor | top-k hit | exact set | fit s | predict s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    models = {
        "popularity": PopularityTokenPredictor(),
        "hidden_router (linear)": HiddenStateRouterPredictor(seed=args.seed),
        f"hidden_router ({args.d}-wide, 2 layers)": HiddenStateRouterPredictor(
            hidden_units=args.d, seed=args.seed
        ),
    }
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(train)
        t1 = time.perf_counter()
        pred = model.predict(test)
        t2 = time.perf_counter()
        exact = np.all(np.sort(pred, -1) == np.sort(test.experts, -1), axis=-1).mean()
        print(f"| {name} | {topk_hit_rate(pred, test.experts):.3f} | {exact:.3f} | "
              f"{t1 - t0:.2f} | {t2 - t1:.3f} |")  # fmt: skip
    gpu = load_gpu("h100_sxm5_80gb")
    for model_name in ("deepseek_v2_lite", "qwen3_30b_a3b"):
        spec = load_model_spec(model_name)
        print(
            f"\npublished points on {spec.name}, {gpu.name}, {args.tokens_per_step} tokens/step\n"
        )
        print("| predictor | same model | top-k hit (ours) | widths | us per MoE layer |\n"
              "| --- | --- | ---: | --- | ---: |")  # fmt: skip
        for p in published_points(spec, gpu, args.tokens_per_step):
            us = (
                "-"
                if p["overhead_s_per_layer"] is None
                else f"{p['overhead_s_per_layer'] * 1e6:.1f}"
            )
            row = [p["name"], str(p["same_model"]), f"{p['topk_hit_rate']:.3f}", str(p["widths"])]
            print("| " + " | ".join([*row, us]) + " |")


if __name__ == "__main__":
    main()
