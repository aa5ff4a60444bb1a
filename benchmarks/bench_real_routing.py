"""Predictors on real routing: ESFT (DeepSeek-V2-Lite) next to the synthetic preset.

Three reports, each on the real ESFT routing (``../shared/traces/deepseek_v2_lite_esft``:
33,279 tokens, 26 MoE layers, top-6 of 64, four datasets; whole sequences in a seeded random
order so batches mix datasets as a serving queue would) and on ``deepseek_v2_lite_like``
(the preset calibrated on it, docs/traces_synthetic.md) at the same token count:

1. **Distribution-Only forecast error over horizons**: the trace cut into batches of
   ``--batch-size`` tokens is a load series; each load-history predictor fits on the first
   half and forecasts step ``t + h`` from the steps up to ``t`` (``horizon_errors``: mean
   absolute error of the expert-load proportion, in percentage points).
2. **Token-to-Expert hit rates** (top-k hit rate on 25 % held-out whole sequences).
   ESFT has **no token ids**: ``token_id_table`` (and the Distribution-Only ``token_id_mle``)
   cannot run on it (their only input is the token id: they fall back to popularity, shown
   as "n/a"); ``lightgbm_token`` and ``mlp_token`` run on position and the previous layer's
   experts only; ``previous_layer`` and ``popularity`` need no token id.
3. **The strategy table at two batch sizes**: ``gps`` itself (prefill, ``model=
   deepseek_v2_lite``, 4 + 4 batches of 2 x 512 and 8 x 512 tokens) on the ESFT trace file
   and on the preset, one subprocess each (``report=minimal``).

    .venv/bin/python benchmarks/bench_real_routing.py [--batch-size 256] [--seed 0]
    .venv/bin/python benchmarks/bench_real_routing.py --skip-strategies   # 1 and 2 only

About 10 minutes on the 2-core dev VM (most in LightGBM/MLP fits and the four ``gps`` runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe

from gps.profiles import load_gpu
from gps.traces import batch_loads, save_trace, split_by_sequence, take_tokens
from gps.traces.shared import esft_trace
from gps.traces.synthetic import generate_token_trace, load_preset
from gps.traces.trace import LoadSeries, TokenTrace
from predictors import (
    DISTRIBUTION_PREDICTORS,
    TOKEN_PREDICTORS,
    evaluate_distribution_predictor,
    horizon_errors,
    make_predictor,
    topk_hit_rate,
)

HORIZONS = (1, 2, 4, 8, 16, 32)
NEEDS_TOKEN_ID = {"token_id_table", "token_id_mle"}  # only input: the token id
WITHOUT_TOKEN_ID = {"lightgbm_token", "mlp_token"}  # token id is one of their features
TOKEN_PARAMS = {  # smaller than the defaults: 26 layers x 64 classes on 2 cores
    "lightgbm_token": {"n_estimators": 10, "max_train_samples": 3000},
    "mlp_token": {"max_iter": 30, "max_train_samples": 4000},
}
STRATEGY_BATCHES = ((2, 512), (8, 512))  # (prompts, tokens per prompt) per prefill step
ROOT = Path(__file__).resolve().parents[1]


def sequence_shuffled(trace: TokenTrace, seed: int) -> TokenTrace:
    """Whole sequences in a seeded random order (tokens of a sequence stay in order)."""
    order = np.random.default_rng(seed).permutation(int(trace.sequence_id.max()) + 1)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return take_tokens(trace, np.lexsort((np.arange(trace.num_tokens), rank[trace.sequence_id])))


def horizon_table(traces: dict[str, TokenTrace], batch_size: int) -> str:
    names = [n for n, c in DISTRIBUTION_PREDICTORS.items()
             if c.input_kind == "loads" and not getattr(c(), "synthetic", False)]  # fmt: skip
    lines = [
        f"Distribution-Only: proportion MAE (percentage points) forecasting batch t+h, batches "
        f"of {batch_size} tokens, fit on the first half of the batches",
        "",
        "| predictor | trace | " + " | ".join(f"h={h}" for h in HORIZONS) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in HORIZONS) + " |",
    ]
    for label, trace in traces.items():
        loads = batch_loads(trace, batch_size)
        series = LoadSeries(counts=loads, step=np.arange(loads.shape[0], dtype=np.int64))
        for name in names:
            errs = horizon_errors(series, make_predictor(name), HORIZONS)
            cells = " | ".join(f"{100 * errs[h]:.3f}" for h in HORIZONS)
            lines.append(f"| {name} | {label} ({loads.shape[0]} batches) | {cells} |")
    return "\n".join(lines)


def token_table(traces: dict[str, TokenTrace], seed: int) -> str:
    lines = [
        "Token-to-Expert: top-k hit rate on 25 % held-out whole sequences",
        "",
        "| predictor | " + " | ".join(traces) + " | note on ESFT (no token ids) |",
        "| --- | " + " | ".join("---:" for _ in traces) + " | --- |",
    ]
    splits = {label: split_by_sequence(t, 0.25, seed=seed) for label, t in traces.items()}
    for name, cls in TOKEN_PREDICTORS.items():
        if getattr(cls(), "synthetic", False):
            continue
        cells = []
        for train, test in splits.values():
            if name in NEEDS_TOKEN_ID and (train.token_id < 0).all():
                cells.append("n/a")
                continue
            model = make_predictor(name, **TOKEN_PARAMS.get(name, {}))
            t0 = time.perf_counter()
            model.fit(train)
            hit = topk_hit_rate(model.predict(test), np.asarray(test.experts))
            cells.append(f"{hit:.3f} ({time.perf_counter() - t0:.0f} s)")
        note = (
            "cannot run: its only input is the token id"
            if name in NEEDS_TOKEN_ID
            else "runs on position + previous layer only"
            if name in WITHOUT_TOKEN_ID
            else "needs no token id"
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {note} |")
    return "\n".join(lines)


def held_out_table(traces: dict[str, TokenTrace], batch_size: int, seed: int) -> str:
    """Per held-out batch TV of the batch's expert-load shares (one batch ahead)."""
    gpu = load_gpu("h100_sxm5_80gb")
    lines = [
        f"Distribution-Only on the same held-out sequences: total-variation distance of each "
        f"test batch's load shares ({batch_size} tokens), mean over batches and layers",
        "",
        "| predictor | " + " | ".join(traces) + " |",
        "| --- | " + " | ".join("---:" for _ in traces) + " |",
    ]
    splits = {label: split_by_sequence(t, 0.25, seed=seed) for label, t in traces.items()}
    for name in ("last_batch", "window_mean", "global_prior", "token_id_mle"):
        cells = []
        for train, test in splits.values():
            if name in NEEDS_TOKEN_ID and (train.token_id < 0).all():
                cells.append("n/a (no token ids)")
                continue
            record = evaluate_distribution_predictor(
                make_predictor(name), gpu=gpu, batch_size=batch_size, train_trace=train,
                test_trace=test,
            )  # fmt: skip
            cells.append(f"{record.accuracy['tv']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gps(overrides: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-c", "from gps.app import main; main()", *overrides,
           "report=minimal", f"hydra.run.dir={out}"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    return json.loads((out / "results.json").read_text())


def strategy_table(esft_path: Path, workdir: Path) -> str:
    lines = [
        "Strategy table: `gps model=deepseek_v2_lite` prefill, 4 history + 4 held-out batches "
        "(speed-up over no balancing; Distribution-Only / Token-to-Expert best of family)",
        "",
        "| tokens per batch | trace | no balancing ms | best Distribution-Only | "
        "best Token-to-Expert | oracle | recommendation |",
        "| ---: | --- | ---: | --- | --- | ---: | --- |",
    ]
    for prompts, seq in STRATEGY_BATCHES:
        for label, trace_args in (
            ("ESFT", [f"evaluation.trace_path={esft_path}"]),
            ("deepseek_v2_lite_like", ["trace=deepseek_v2_lite_like"]),
        ):
            out = workdir / f"{label}_{prompts}x{seq}"
            res = _gps(
                ["model=deepseek_v2_lite", *trace_args, f"workload.batch_size={prompts}",
                 f"workload.seq_len={seq}", "evaluation.train_batches=4",
                 "evaluation.test_batches=4"],
                out,
            )  # fmt: skip
            rows = res["strategies"]

            def best(family: str, rows: list = rows) -> str:
                fam = [r for r in rows if r["family"] == family]
                top = max(r["speedup_vs_baseline"] for r in fam)
                tied = [r["name"].split(":")[-1] for r in fam if r["speedup_vs_baseline"] == top]
                more = f" (+{len(tied) - 1} tied)" if len(tied) > 1 else ""
                return f"{top:.3f}x {tied[0]}{more}"

            base = next(r for r in rows if r["family"] == "baseline")
            oracle = next(r for r in rows if r["family"] == "oracle")
            rec_name = res["recommendation"]["strategy"]
            lines.append(
                f"| {prompts * seq} | {label} | {1e3 * base['e2e_time_s']:.2f} | "
                f"{best('distribution')} | {best('token')} | "
                f"{oracle['speedup_vs_baseline']:.3f}x | {rec_name} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=256, help="tokens per batch (1.)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-strategies", action="store_true", help="skip the gps runs")
    args = parser.parse_args()
    print(describe())
    start = time.perf_counter()
    real = sequence_shuffled(esft_trace(), args.seed)
    preset = dataclasses.replace(
        load_preset("deepseek_v2_lite_like"), num_tokens=real.num_tokens, seed=args.seed
    )
    traces = {"ESFT": real, "deepseek_v2_lite_like": generate_token_trace(preset)}
    print(f"\nESFT {real.num_tokens} tokens in random sequence order (seed {args.seed}); "
          f"synthetic {traces['deepseek_v2_lite_like'].num_tokens} tokens\n")  # fmt: skip
    print(horizon_table(traces, args.batch_size), "\n", flush=True)
    print(token_table(traces, args.seed), "\n", flush=True)
    print(held_out_table(traces, args.batch_size, args.seed), "\n", flush=True)
    if not args.skip_strategies:
        with tempfile.TemporaryDirectory() as tmp:
            path = save_trace(Path(tmp) / "esft_shuffled.npz", real)
            print(strategy_table(path, Path(tmp)))
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
