"""Dynamic duplication on real routing: DeepSeek-V2-Lite ESFT traces (issue 11's quality bar).

Reads ``../shared/traces/deepseek_v2_lite_esft/esft_routing_compact.npz`` (33,279 real tokens,
26 MoE layers, top-6 of 64 experts; ``../shared/traces/README.md``), converts it in a temporary
folder with the ``gps.traces`` API (never into the repository), and runs the advisor as

    gps model=deepseek_v2_lite evaluation.trace_path=<npz> workload.batch_size=4
        workload.seq_len=1024 evaluation.train_batches=4 evaluation.test_batches=4

on the default 8x H100 node (9 slots per GPU: 8 home + 1 spare), once per
``strategy.replicas`` / ``strategy.migration_source`` / ``strategy.horizon`` setting given.
Prints, per setting: no balancing, the best Distribution-Only predictor, the oracle, the
oracle with free migration, perfect balance, the share of the no-balancing -> perfect
balance gap the oracle recovers, every Distribution-Only speed-up, and (``--guidelines``) the
what-if Token-to-Expert speed-up at each top-k accuracy; then one expert's copy time from a
peer and from host memory against the attention per layer the default setting priced. Skips
(exit 0) when ``../shared`` is absent.

Run: ``.venv/bin/python benchmarks/bench_esft_duplication.py [--guidelines]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from machine import describe

from gps.advisor.advise import build
from gps.app import CONF_DIR, run
from gps.cost.step import transfer_seconds
from gps.plans import expert_weight_bytes
from gps.profiles import load_link
from gps.traces.io import save_trace
from gps.traces.trace import TokenTrace

SHARED = Path(__file__).resolve().parents[2] / "shared"
NPZ = SHARED / "traces" / "deepseek_v2_lite_esft" / "esft_routing_compact.npz"
BASE = ["model=deepseek_v2_lite", "workload.batch_size=4", "workload.seq_len=1024",
        "evaluation.train_batches=4", "evaluation.test_batches=4", "report.plots=false",
        "strategy.ilp=false"]  # fmt: skip
SETTINGS = {
    "spare, peer, horizon 4 (default)": [],
    "spare, peer, horizon 1": ["strategy.horizon=1"],
    "spare, host (PCIe)": ["strategy.migration_source=host"],
    "repack, peer": ["strategy.replicas=repack"],
}


def convert(out: Path) -> Path:
    """The compact ESFT arrays as a ``TokenTrace`` ``.npz`` (sequences = (domain, seq))."""
    z = np.load(NPZ)
    t = z["expert_ids"].shape[0]
    key = z["domain"].astype(np.int64) * 100_000 + z["seq"].astype(np.int64)
    seq = np.unique(key, return_inverse=True)[1].astype(np.int32)
    trace = TokenTrace(
        experts=z["expert_ids"].astype(np.int16), token_id=np.full(t, -1, np.int32),
        sequence_id=seq, position=z["pos"].astype(np.int32), num_experts=64,
        scores=z["gate_weights"].astype(np.float16), domain=z["domain"].astype(np.int16),
        meta={"model": "deepseek_v2_lite", "domains": [str(d) for d in z["domains"]],
              "source": "deepseek-ai/ESFT results/expert_scores (../shared)"},
    )  # fmt: skip
    return save_trace(out, trace)


def copy_vs_attention(cfg, base: dict) -> str:
    """One expert's copy time from a peer (NVLink) and from host memory (PCIe), against the
    attention per MoE layer the run priced for no balancing (``breakdown_s``)."""
    spec, cluster, _, _ = build(cfg)
    nbytes = expert_weight_bytes(spec)
    peer = float(transfer_seconds(nbytes, cluster.intra_link))
    host = float(transfer_seconds(nbytes, load_link(cfg.hardware.host_link)))
    att = base["breakdown_s"]["attention"] / spec.num_layers  # every layer attends alike
    return (f"one {spec.name} expert ({nbytes / 1e6:.1f} MB): {peer * 1e6:.0f} us from a peer "
            f"over {cluster.intra_link.name}, {host * 1e3:.3f} ms from host memory over "
            f"{cfg.hardware.host_link}; attention {att * 1e6:.0f} us per layer (no balancing, "
            "default setting)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidelines", action="store_true", help="also the what-if sweep")
    args = parser.parse_args()
    if not NPZ.exists():
        print(f"skipped: {NPZ} not found (needs ../shared next to the repository)")
        return
    print("# bench_esft_duplication")
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        npz = convert(Path(tmp) / "esft.npz")
        print(
            "| setting | no balancing | best Distribution-Only | oracle | oracle, free migration "
            "| perfect balance | gap recovered by oracle | DO speed-ups (distinct) "
            "| what-if Token-to-Expert speed-up by top-k accuracy (no overhead) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        physics = None  # the default setting's copy-vs-attention line, printed last
        for name, extra in SETTINGS.items():
            overrides = [*BASE, f"evaluation.trace_path={npz}", *extra,
                         f"report.guidelines={str(args.guidelines).lower()}"]  # fmt: skip
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides)
            out = Path(tmp) / name.split(",")[0].replace(" ", "_")
            t0 = time.perf_counter()
            run(cfg, out)
            wall = time.perf_counter() - t0
            res = json.loads((out / "results.json").read_text())
            by = {s["name"]: s for s in res["strategies"]}
            base, orc = by["no_balancing"], by["oracle"]
            free = by["oracle_free_migration"]
            dist = [s for s in res["strategies"] if s["family"] == "distribution"]
            best = max(dist, key=lambda s: s["speedup_vs_baseline"])
            balanced = base["balanced_time_s"]
            gap = (base["e2e_time_s"] - orc["e2e_time_s"]) / (base["e2e_time_s"] - balanced)
            distinct = sorted({round(s["speedup_vs_baseline"], 3) for s in dist})

            def ms(s: dict) -> str:
                return f"{s['e2e_time_s'] * 1e3:.2f} ms ({s['speedup_vs_baseline']:.3f}x)"

            curve = "-"
            if res["guidelines"]:
                g = res["guidelines"]
                pairs = zip(g["accuracy"], g["token_speedup"][0], strict=True)
                curve = ", ".join(f"{a:g}: {x:.3f}x" for a, x in pairs)
            print(f"| {name} | {ms(base)} | {best['name']} {ms(best)} | {ms(orc)} | {ms(free)} "
                  f"| {balanced * 1e3:.2f} ms | {gap:.0%} | {distinct} | {curve} |")  # fmt: skip
            print(f"  ({wall:.0f} s)", file=sys.stderr)
            if not extra:  # the default setting: what a per-batch copy is up against
                physics = copy_vs_attention(cfg, base)
        if physics is not None:
            print(physics)


if __name__ == "__main__":
    main()
