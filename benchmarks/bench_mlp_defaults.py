"""The MLP token predictor's defaults, before and after issue 24, on the default run's data.

`make run`'s default experiment (Mixtral-8x7B, prefill 8 x 2048 tokens, `mixtral_mmlu_like`,
16 history + 8 held-out batches) fits `mlp_token` on 262,144 history tokens (50,000 sampled
(token, layer) rows) and predicts 4.2 M held-out (token, layer) rows; in the run it is computed
in a background thread beside the other strategies, so its Python loop over mini-batches (which
holds the GIL) slows both threads. For each setting this prints:

* fit and predict CPU seconds (``time.thread_time``, alone on one thread);
* the held-out top-k hit rate and exact-set accuracy (the numbers the report shows);
* ``beside``: the wall seconds of fit + predict in a background thread while the main thread
  fits and predicts ``previous_layer``, ``token_id_table`` and ``popularity`` (the run's
  situation), and the main thread's wall seconds meanwhile.

Settings: ``before`` (float64, 256-row mini-batches, 20 epochs: the defaults until issue 24),
``after`` (the defaults now: float32, ``batch_size=None``, i.e. 1024-row mini-batches on this
data, 30 epochs), and two steps between.
Timings on a shared machine are indicative; compare settings within one run.

Run: ``.venv/bin/python benchmarks/bench_mlp_defaults.py``
"""

from __future__ import annotations

import os
import threading
import time

from hydra import compose, initialize_config_dir
from machine import describe

from gps import cache
from gps.advisor.advise import build, eval_data
from gps.app import CONF_DIR
from predictors import make_predictor
from predictors.base import expected_warnings_silenced
from predictors.metrics import exact_set_accuracy, topk_hit_rate
from predictors.token import MLPTokenPredictor

SETTINGS = {
    "before": {"dtype": "float64", "batch_size": 256, "max_iter": 20},
    "float32": {"dtype": "float32", "batch_size": 256, "max_iter": 20},
    "float32, 1024 rows, 20 epochs": {"dtype": "float32", "batch_size": 1024, "max_iter": 20},
    "after": {},  # the defaults: float32, batch_size None (1024 rows here), 30 epochs
}


def main() -> None:
    print(describe(f"load average {os.getloadavg()[0]:.1f} at start"))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["cache=off"])
    spec, _, workload, trace_cfg = build(cfg)
    cache.configure(False)
    data = eval_data(cfg, trace_cfg, spec, workload)
    print(f"fit tokens {data.fit.num_tokens:,}, held-out tokens {data.test.num_tokens:,} "
          f"x {data.test.num_layers} layers\n")  # fmt: skip
    print(
        "| setting | fit CPU s | predict CPU s | hit rate | exact set | beside: MLP wall s | "
        "beside: main thread wall s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for name, params in SETTINGS.items():
        with expected_warnings_silenced():
            model = MLPTokenPredictor(**params)
            c0 = time.thread_time()
            model.fit(data.fit)
            c1 = time.thread_time()
            guess = model.predict(data.test)
            c2 = time.thread_time()
            hit = topk_hit_rate(guess, data.test.experts)
            exact = exact_set_accuracy(guess, data.test.experts)
            beside, main_wall = _beside(data, params)
        shown = {**MLPTokenPredictor().get_params(), **params}
        print(f"| {name} ({shown['dtype']}, {shown['batch_size'] or 'auto: 1024'}, "
              f"{shown['max_iter']}) | "
              f"{c1 - c0:.1f} | {c2 - c1:.1f} | {hit:.4f} | {exact:.4f} | {beside:.1f} | "
              f"{main_wall:.1f} |", flush=True)  # fmt: skip


def _beside(data, params: dict) -> tuple[float, float]:
    """Wall seconds of the MLP in a background thread and of the main thread's predictors."""
    out = {}

    def background() -> None:
        t0 = time.perf_counter()
        MLPTokenPredictor(**params).fit(data.fit).predict(data.test)
        out["mlp"] = time.perf_counter() - t0

    thread = threading.Thread(target=background)
    t0 = time.perf_counter()
    thread.start()
    for name in ("previous_layer", "token_id_table", "popularity"):
        make_predictor(name).fit(data.fit).predict(data.test)
    main_wall = time.perf_counter() - t0
    thread.join()
    return out["mlp"], main_wall


if __name__ == "__main__":
    main()
