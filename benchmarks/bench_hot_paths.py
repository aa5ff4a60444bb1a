"""Hot paths of the default run, before and after (issue 16), timed in one invocation.

For each tree (``--baseline DIR``, e.g. ``git worktree add /tmp/base 38ed87c``, then this one)
a child process builds the default run's data (Mixtral-8x7B, prefill 8 x 2048, 16 history + 8
held-out batches, seed 0) and times, best of ``--repeat``:

* ``capacity``: the four capacity strategies' rules on the 8 held-out batches (drop and reroute
  at gamma 1.0 and 1.25) plus their token simulation on the static placement;
* ``whatif``: the what-if frontier's predictions at the 9 default accuracies, as per-batch
  histograms (before: 9 fits + predicts + histograms; after: one pass, ``predict_splits``);
* ``token_table_fit``: ``TokenIdTablePredictor.fit`` on the fit tokens;
* ``previous_layer_fit``: ``PreviousLayerPredictor.fit`` (its layer-0 token-id table included);
* ``mlp_predict``: ``MLPTokenPredictor.predict`` on the held-out tokens (a small fit, untimed);
* ``ilp``: the one-stage MoETuner placement of the default run (``ilp_placement``, 10 s limit,
  ``mip_gap`` 1e-4, no cache);
* ``token_metrics``: top-k hit rate, exact-set accuracy and the induced histogram of one guess;
* ``expert_counts``: per-layer popularity of the fit tokens (every token predictor's fit).

Both trees' numbers come from the same invocation, on a machine possibly shared with other
work: quote the ratios. Run: ``.venv/bin/python benchmarks/bench_hot_paths.py --baseline DIR``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, sys, time
import numpy as np
from gps.advisor.data import prepare
from gps.model import load_model_spec
from gps.plans import capacity_drop, capacity_reroute, static_placement
from gps.simulate import simulate_tokens
from gps.traces.synthetic import load_preset
from gps.workload import Workload
from predictors.metrics import (expert_histogram, exact_set_accuracy, topk_hit_rate,
                                distribution_accuracy)
from gps.plans import ilp_placement, transition_counts
from predictors.token import (MLPTokenPredictor, PreviousLayerPredictor, TokenIdTablePredictor,
                              expert_counts)
from predictors.whatif import WhatIfTokenPredictor

REPEAT = int(sys.argv[1])
spec = load_model_spec("mixtral_8x7b")
w = Workload(phase="prefill", batch_size=8, seq_len=2048)
d = prepare(load_preset("mixtral_mmlu_like"), spec, w, train_batches=16, test_batches=8, seed=0)
t = d.tokens_per_batch
plan = static_placement(32, 8, 8, 2)
grid = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0]


def capacity():
    for g in (1.0, 1.25):
        for rule in (capacity_drop, capacity_reroute):
            for n in range(8):
                r = rule(d.test_batch(n), g)
                simulate_tokens(plan, r.experts, spec=spec, rerouted=r.rerouted)


def whatif():
    if hasattr(WhatIfTokenPredictor, "predict_splits"):
        WhatIfTokenPredictor(seed=0).fit(d.fit).predict_splits(d.test, grid, t)
    else:
        for a in grid:
            g = WhatIfTokenPredictor(accuracy=a, seed=0).fit(d.fit).predict(d.test)
            expert_histogram(g, 8, t)


guess = WhatIfTokenPredictor(accuracy=0.9, seed=0).fit(d.fit).predict(d.test)
true = np.asarray(d.test.experts)


def metrics():
    topk_hit_rate(guess, true)
    exact_set_accuracy(guess, true)
    distribution_accuracy(expert_histogram(guess, 8, t), expert_histogram(true, 8, t))


mlp = MLPTokenPredictor(max_train_samples=20_000, max_iter=2).fit(d.fit)
load = d.train_loads.sum(axis=0)
trans = transition_counts(np.asarray(d.fit.experts), 8)
jobs = {
    "capacity": capacity, "whatif": whatif,
    "token_table_fit": lambda: TokenIdTablePredictor().fit(d.fit),
    "previous_layer_fit": lambda: PreviousLayerPredictor().fit(d.fit),
    "mlp_predict": lambda: mlp.predict(d.test),
    "ilp": lambda: ilp_placement(load, trans, 8, time_limit_s=10.0, mip_gap=1e-4),
    "token_metrics": metrics, "expert_counts": lambda: expert_counts(d.fit.experts, 8),
}
out = {}
for name, job in jobs.items():
    best = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        job()
        best = min(best, time.perf_counter() - t0)
    out[name] = round(best, 3)
print(json.dumps(out))
"""


def measure(tree: Path, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(repeat)], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode:
        sys.exit(f"{tree}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="checkout of the code before (else: after only)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(describe(f"load average {os.getloadavg()[0]:.1f}"))
    after = measure(ROOT, args.repeat)
    if not args.baseline:
        for name, seconds in after.items():
            print(f"{name:<20} {seconds:>9.3f} s")
        return
    before = measure(Path(args.baseline).resolve(), args.repeat)
    print(f"{'path':<20} {'before s':>9} {'after s':>9} {'speed-up':>9}")
    for name in before:
        print(f"{name:<20} {before[name]:>9.3f} {after[name]:>9.3f} "
              f"{before[name] / max(after[name], 1e-9):>8.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
