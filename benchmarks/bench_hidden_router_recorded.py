"""Hidden-state router on activations recorded by ``gps-trace record --save-hidden`` from tiny
randomly initialised MoE models (issue 18's bar: it beats popularity there).

For each architecture: a model built from transformers' config class (``hidden_size=32``,
3 decoder blocks, 8 experts top-2 -- 16 top-4 with DeepSeek's grouped routing; seed
``--seed``, no download), ``--prompts`` random prompts of ``--length`` token ids, recorded
with all MoE layers' activations of both kinds (``pre_attention_normed``, ``router_input``),
split by whole prompts (30 % held out). Held-out top-k hit rate of ``popularity`` and of
``hidden_router`` (linear, ``lookahead`` 0 and 1). Random weights: the routing of a trained
model is more structured, so these figures say the pipeline works, not how well a router
predicts a real model.

Run (needs the ``[record]`` extra): ``make .venv-record/.installed &&
.venv-record/bin/python benchmarks/bench_hidden_router_recorded.py [--seed 0]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import transformers
from machine import describe

from gps.traces import split_by_sequence
from gps.traces.record import Prompt, record_routing
from predictors import HiddenStateRouterPredictor, PopularityTokenPredictor, topk_hit_rate

COMMON = dict(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip
CONFIGS = {
    "mixtral": ("MixtralConfig", dict(num_local_experts=8, num_experts_per_tok=2)),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, head_dim=8),
    ),
    "olmoe": ("OlmoeConfig", dict(num_experts=8, num_experts_per_tok=2)),
    "deepseek_v2": (
        "DeepseekV2Config",
        dict(n_routed_experts=16, num_experts_per_tok=4, moe_intermediate_size=16,
             n_shared_experts=1, first_k_dense_replace=1, topk_method="group_limited_greedy",
             n_group=4, topk_group=2, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8,
             qk_rope_head_dim=8, v_head_dim=8, head_dim=8, num_key_value_heads=4),
    ),
}  # fmt: skip


def tiny_model(model_type: str, seed: int):
    cls, extra = CONFIGS[model_type]
    config = getattr(transformers, cls)(**{**COMMON, **extra})
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--length", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe(f"torch {torch.__version__}", f"transformers {transformers.__version__}"))
    rng = np.random.default_rng(args.seed)
    prompts = [
        Prompt(input_ids=tuple(rng.integers(1, 97, size=args.length).tolist()))
        for _ in range(args.prompts)
    ]
    print("| model | activations | k of E | popularity | hidden_router | lookahead=1 | fit s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for model_type in CONFIGS:
        model = tiny_model(model_type, args.seed)
        for kind in ("pre_attention_normed", "router_input"):
            trace = record_routing(
                model, prompts, batch_size=16, save_hidden="all", hidden_kind=kind,
                log=lambda _m: None,
            )  # fmt: skip
            train, test = split_by_sequence(trace, 0.3, seed=args.seed)
            popular = PopularityTokenPredictor().fit(train).predict(test)
            start = time.perf_counter()
            router = HiddenStateRouterPredictor(seed=args.seed).fit(train)
            fit_s = time.perf_counter() - start
            ahead = HiddenStateRouterPredictor(lookahead=1, seed=args.seed).fit(train)
            hits = [topk_hit_rate(p, test.experts) for p in
                    (popular, router.predict(test), ahead.predict(test))]  # fmt: skip
            print(
                f"| {model_type} | {kind} | {trace.top_k} of {trace.num_experts} | "
                f"{hits[0]:.3f} | {hits[1]:.3f} | {hits[2]:.3f} | {fit_s:.2f} |"
            )


if __name__ == "__main__":
    main()
