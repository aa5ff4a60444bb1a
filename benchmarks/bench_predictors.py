"""Fit/predict throughput, held-out accuracy and priced overhead of every predictor.

* Token-to-Expert predictors and the token-id distribution predictor: synthetic preset
  ``mixtral_mmlu_like`` (Mixtral-8x7B, 32 MoE layers, top-2 of 8), split by whole sequences
  (``split_by_sequence``, 25% test); accuracy on the test sequences only.
* Distribution-Only predictors: per-batch loads (``batch_loads``) of the same split, train
  batches then test batches; each test batch forecast one batch ahead.
* Horizon errors ("Prediction Is All MoE Needs" metric): load series preset
  ``training_gpt_350m_like`` (one record every 10 training steps), fit on the first half,
  proportion MAE at ``t + h`` for ``h = 10, 100, 1000, 2000`` training steps.

Overhead is priced per batch of ``--batch-size`` tokens on the H100 SXM5 profile with
``gps.cost.roofline.op_time`` (what ``predictors.price`` does). Wall times are measured on
this machine (printed). What-if predictors (``*``) are synthetic: their accuracy is set,
not learned.

Run: ``.venv/bin/python benchmarks/bench_predictors.py [--tokens 65536] [--batch-size 256]``
"""

from __future__ import annotations

import argparse
import json
import time

import lightgbm
import sklearn
from machine import describe

from gps.profiles import load_gpu
from gps.traces import batch_loads, generate_from_preset, split_by_sequence
from predictors import (
    DISTRIBUTION_PREDICTORS,
    TOKEN_PREDICTORS,
    WindowMeanPredictor,
    evaluate_distribution_predictor,
    evaluate_token_predictor,
    format_table,
    horizon_errors,
    record_interval,
    steps_to_records,
)

HORIZONS = (10, 100, 1000, 2000)  # training steps
WINDOW_STEPS = 1000  # the long sliding window, in training steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=None, help="token trace size (preset's)")
    parser.add_argument("--steps", type=int, default=None, help="load series records (preset's)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the records here")
    args = parser.parse_args()

    gpu = load_gpu("h100_sxm5_80gb")
    machine = describe(f"scikit-learn {sklearn.__version__}", f"lightgbm {lightgbm.__version__}")
    print(machine)
    print(f"overhead priced on: {gpu.name} ({gpu.efficiency_source})")

    t0 = time.perf_counter()
    trace = generate_from_preset("mixtral_mmlu_like", seed=args.seed, num_tokens=args.tokens)
    train, test = split_by_sequence(trace, 0.25, seed=args.seed)
    print(
        f"\nmixtral_mmlu_like: {trace.num_tokens} tokens, L={trace.num_layers}, "
        f"E={trace.num_experts}, k={trace.top_k}; train {train.num_tokens} / test "
        f"{test.num_tokens} tokens (whole sequences); batch {args.batch_size} tokens: "
        f"{train.num_tokens // args.batch_size} train / {test.num_tokens // args.batch_size} "
        f"test batches (generated in {time.perf_counter() - t0:.1f} s)\n"
    )
    records = []
    for name, cls in TOKEN_PREDICTORS.items():
        records.append(
            evaluate_token_predictor(
                cls(), train, test, gpu=gpu, batch_size=args.batch_size, name=name
            )
        )
    train_loads = batch_loads(train, args.batch_size)
    test_loads = batch_loads(test, args.batch_size)
    for name, cls in DISTRIBUTION_PREDICTORS.items():
        records.append(
            evaluate_distribution_predictor(
                cls(),
                gpu=gpu,
                batch_size=args.batch_size,
                train_trace=train,
                test_trace=test,
                train_loads=train_loads,
                test_loads=test_loads,
                name=name,
            )
        )
    print(format_table(records))

    t0 = time.perf_counter()
    series = generate_from_preset("training_gpt_350m_like", seed=args.seed, num_tokens=args.steps)
    s, layers, e = series.counts.shape
    every = record_interval(series)
    print(
        f"\ntraining_gpt_350m_like: {s} records, one every {every} training steps ({s * every:,} "
        f"steps), L={layers}, E={e} (generated in {time.perf_counter() - t0:.1f} s); fit on the "
        f"first {s // 2} records, proportion MAE at t+h (h in training steps) over the "
        f"remaining {s - s // 2}\n"
    )
    print("| predictor | " + " | ".join(f"h={h}" for h in HORIZONS) + " | seconds |")
    print("| --- | " + " | ".join("---:" for _ in HORIZONS) + " | ---: |")
    horizon_rows = {}
    candidates = [(n, c()) for n, c in DISTRIBUTION_PREDICTORS.items() if c.input_kind == "loads"]
    # a 1,000-step sliding window (window counts records)
    window = steps_to_records(WINDOW_STEPS, every, "window")
    candidates.append((f"window_mean({WINDOW_STEPS:,} steps)", WindowMeanPredictor(window=window)))
    for name, model in candidates:
        t0 = time.perf_counter()
        errs = horizon_errors(series, model, HORIZONS)
        dt = time.perf_counter() - t0
        horizon_rows[name] = errs
        synthetic = " *" if model.synthetic else ""
        cells = " | ".join(f"{errs[h]:.5f}" for h in HORIZONS)
        print(f"| {name}{synthetic} | {cells} | {dt:.1f} |")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine,
                    "records": [r.to_dict() for r in records],
                    "horizon_errors": horizon_rows,
                },
                f,
                indent=1,
                default=str,
            )


if __name__ == "__main__":
    main()
