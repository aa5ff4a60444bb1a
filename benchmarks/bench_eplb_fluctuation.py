"""Per-batch fluctuation around aggregate statistics: fit on one domain, validate on another.

``gps.traces.fluctuation`` models a batch's expert counts around an engine's aggregate
proportions ``mu`` with a per-layer over-dispersion ``rho`` (tokens of one request share
experts). This script fits ``rho`` on real per-token routing and checks the model on
*different* data, against independent token sampling (``rho = 0``, what an importer that
turns aggregate counts into tokens would do):

* **ESFT (DeepSeek-V2-Lite architecture, prefill-style)**: fit on the domains ``intent`` and
  ``law``, validate on ``summary`` and ``translation`` (and the reverse split as a check);
* **Mixtral-8x7B in vLLM (generation)**: requests are 32-token chunks of the generated
  sequences; fit on GSM8K, validate on HumanEval (and the reverse).

For each validation domain, batches of ``b`` random requests (2,000 draws, seeded) are formed;
the aggregate ``mu`` is the domain's own mean (in-distribution statistics). Reported:

* ``phi``: the batches' mean squared deviation from ``N mu`` over the multinomial's
  (observed), against the model's ``c0 + (n_eff - 1) k rho`` and independent tokens' ``c0``;
* ``excess``: mean over batches and layers of (max GPU load / mean GPU load - 1) under the
  balanced placement planned from ``mu`` (``eplb_placement``, no redundant expert): observed
  batches, batches sampled from the model, batches sampled with independent tokens. This is
  the residual imbalance that decides whether a static placement from statistics pays.

Run: ``.venv/bin/python benchmarks/bench_eplb_fluctuation.py`` (seconds; skips, exit 0,
when ``../shared`` is absent). The numbers are quoted in ``docs/eplb.md`` and
``docs/calibration.md``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from machine import describe

from gps.plans.eplb_placement import eplb_placement
from gps.traces.fluctuation import (
    FluctuationModel,
    fit_fluctuation,
    request_chunks,
    sequence_counts,
)
from gps.traces.shared import esft_trace, mixtral_vllm_trace
from gps.traces.trace import TokenTrace


def evaluate(
    trace: TokenTrace,
    model: FluctuationModel,
    group: int,
    b: int,
    gpus: int,
    draws: int,
    rng: np.random.Generator,
) -> dict:
    """Observed / model / independent ``phi`` and excess imbalance on ``group``'s requests."""
    counts, tokens, groups = sequence_counts(trace)
    sel = np.flatnonzero(groups == group)
    c, n = counts[sel].astype(float), tokens[sel].astype(float)
    k = trace.top_k
    mu = c.sum(axis=0) / (n.sum() * k)  # [L, E] the domain's aggregate proportions
    plan = eplb_placement(mu, gpus, 0)
    independent = FluctuationModel.independent(trace.num_layers, k)
    obs_phi, mod_phi, ind_phi = [], [], []
    excess = {"observed": [], "model": [], "independent": []}
    v = (mu * (1 - mu)).sum(axis=-1)  # [L]
    for _ in range(draws):
        pick = rng.choice(sel.size, size=min(b, sel.size), replace=False)
        batch = c[pick].sum(axis=0)
        big_n = n[pick].sum() * k
        n_eff = float((n[pick] ** 2).sum() / n[pick].sum())
        obs_phi.append((((batch - big_n * mu) ** 2).sum(axis=-1) / (big_n * v)).mean())
        mod_phi.append(model.phi(mu, k, n_eff).mean())
        ind_phi.append(independent.phi(mu, k, n_eff).mean())
        for name, x in (
            ("observed", batch),
            ("model", model.sample(mu, big_n, k, n_eff, rng)[0]),
            ("independent", independent.sample(mu, big_n, k, n_eff, rng)[0]),
        ):
            g = plan.gpu_load(x)  # [L, G]
            excess[name].append(float((g.max(axis=-1) / g.mean(axis=-1) - 1).mean()))
    return {
        "phi": (np.mean(obs_phi), np.mean(mod_phi), np.mean(ind_phi)),
        "excess": {k2: float(np.mean(v2)) for k2, v2 in excess.items()},
        "requests": int(sel.size),
        "tokens_median": float(np.median(n)),
    }


def report(
    name: str,
    trace: TokenTrace,
    fit_groups: list[int],
    val_groups: list[int],
    b: int,
    gpus: int,
    draws: int,
    seed: int,
) -> None:
    domains = trace.meta.get("domains") or [str(g) for g in range(max(val_groups) + 1)]
    model = fit_fluctuation(trace, groups=fit_groups, name=f"{name} {fit_groups}")
    fit_names = ", ".join(domains[g] for g in fit_groups)
    print(
        f"\n### {name}: fit on {fit_names} (rho median {np.median(model.rho):.5f}, "
        f"range {model.rho.min():.5f}-{model.rho.max():.5f}), batches of {b} requests, "
        f"{gpus} GPUs"
    )
    print(
        "| validation domain | requests (median tokens) | phi observed | phi model | "
        "phi independent | excess observed | excess model | excess independent |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(seed)
    for g in val_groups:
        r = evaluate(trace, model, g, b, gpus, draws, rng)
        po, pm, pi = r["phi"]
        e = r["excess"]
        print(
            f"| {domains[g]} | {r['requests']} ({r['tokens_median']:.0f}) | {po:.2f} | "
            f"{pm:.2f} | {pi:.2f} | {e['observed']:.3f} | {e['model']:.3f} | "
            f"{e['independent']:.3f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        esft, mixtral = esft_trace(), mixtral_vllm_trace()
    except FileNotFoundError as exc:
        print(f"skipped: {exc}")
        return 0
    t0 = time.perf_counter()
    print(describe())
    for fit, val in (([0, 1], [2, 3]), ([2, 3], [0, 1])):
        for b in (1, 4):
            report("ESFT (DeepSeek-V2-Lite)", esft, fit, val, b, 8, args.draws, args.seed)
    chunks = request_chunks(mixtral, 32)
    for fit, val in (([0], [1]), ([1], [0])):
        for b in (1, 4):
            report(
                "Mixtral-8x7B vLLM, 32-token requests",
                chunks,
                fit,
                val,
                b,
                4,
                args.draws,
                args.seed,
            )
    print(f"\n{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
