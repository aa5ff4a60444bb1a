"""``gps-eplb``: will expert load balancing pay on this deployment, with which settings?

    gps-eplb STATS [STATS ...] --engine sglang|vllm --model M [--hardware H]
             [--format auto|sglang|vllm|trtllm|gps] [--tokens-per-step N] [--out DIR]
             [-- HYDRA_OVERRIDES ...]

``STATS``: the engine's own load statistics (SGLang expert-distribution recorder dumps,
``.pt`` or ``.json``, one file per rank; vLLM EPLB state saved as ``.pt``/``.npz``/``.json``;
a TensorRT-LLM expert-statistic folder; or a moe-gps token trace ``.npz`` cut into steps of
``--tokens-per-step``). The model, hardware, workload and ``eplb.*`` settings are the ``gps``
app's Hydra config (``conf/``, ``gps/config.py``), composed with the overrides after ``--``.

For each pool in ``eplb.pools`` (prefill, decode) it prints the verdict (no balancing vs
static placement vs periodic EPLB vs predictive re-planning vs dispatch-time balancing, each
with its speed-up and 95% interval), the share of step time imbalance costs, the redundancy
curve with its memory price, the window x interval curve, and both engines' flags; it writes
``results.json`` (key ``eplb``), ``report.md`` and SGLang's ``init_expert_location_<pool>.json``
into ``--out`` (default ``reports/eplb/<date>/<time>``). Exit status 2 on bad input, with one
line naming the file and field; no output file is left half-written. ``docs/eplb.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gps.advisor.advise import engine_of, ledger_of, run_layout
from gps.advisor.eplb import analyse
from gps.advisor.eplb.analysis import check_settings
from gps.advisor.eplb.flags import FLAG_SOURCES, engine_flags
from gps.advisor.eplb.loads import fluctuation_for
from gps.app import CONF_DIR
from gps.config import EplbConfig
from gps.cost._common import num_moe_layers
from gps.model import spec_from_dict
from gps.plans.eplb_placement import eplb_placement, sglang_init_expert_location
from gps.profiles import load_cluster
from gps.traces.engine_stats import EngineLoadStats, read_engine_stats
from gps.workload import Workload

SCHEMA_VERSION = 1


def compose_config(
    model: str, hardware: str | None, overrides: Sequence[str], engine: str | None = None
) -> DictConfig:
    """The ``gps`` config with ``model``, ``hardware``, the engine profile ``engine``
    (``conf/engine/``) and the overrides (Hydra compose)."""
    items = [
        f"model={model}",
        *([f"hardware={hardware}"] if hardware else []),
        *([f"engine={engine}"] if engine else []),
        *overrides,
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=items)


def pool_workloads(cfg: DictConfig) -> dict[str, Workload]:
    """``eplb.pools`` -> the workload priced for each (module docstring of ``gps.config``'s
    ``EplbConfig``)."""
    e = cfg.eplb
    out = {}
    for pool in e.pools:
        if pool not in ("prefill", "decode"):
            raise ValueError(f"eplb.pools: {pool!r} is neither 'prefill' nor 'decode'")
        if pool == cfg.workload.phase:
            data = OmegaConf.to_container(cfg.workload, resolve=True)
        else:
            data = OmegaConf.to_container(
                OmegaConf.load(Path(CONF_DIR) / "workload" / f"{pool}.yaml"), resolve=True
            )
        if pool == "prefill":
            data["batch_size"] = e.prefill_batch_size or data["batch_size"]
            data["seq_len"] = e.prefill_seq_len or data["seq_len"]
        else:
            data["batch_size"] = e.decode_batch_size or data["batch_size"]
            data["context_len"] = e.decode_context_len or data["context_len"]
        out[pool] = Workload(**data)
    if not out:
        raise ValueError("eplb.pools: empty")
    return out


def settings_for(cfg: DictConfig) -> EplbConfig:
    """``cfg.eplb`` as the ``gps.config.EplbConfig`` dataclass (its one definition), checked
    (``check_settings``: a bad key is named before any statistics are read).

    Raises:
        ValueError: a bad ``eplb.*`` value, naming its key.
    """
    settings = OmegaConf.to_object(cfg.eplb)
    check_settings(settings)
    return settings


def run(
    paths: Sequence[str],
    engine: str,
    cfg: DictConfig,
    *,
    fmt: str = "auto",
    tokens_per_step: int | None = None,
) -> tuple[dict, dict[str, dict], str]:
    """The analysis: ``(results, placement files {name: json}, report text)``.

    ``engine`` names the flags printed first; the steps and rebalances are priced with the
    engine profile ``cfg.engine`` (``gps-eplb --engine`` composes ``engine=<engine>``).

    Raises:
        ValueError: an engine profile without a load balancer, a layout other than pure
            expert parallelism, or bad statistics (``TraceError``, naming file and field).
    """
    t0 = time.perf_counter()
    settings = settings_for(cfg)
    spec = spec_from_dict(OmegaConf.to_container(cfg.model, resolve=True), origin="model config")
    cluster = load_cluster(cfg.hardware)
    workloads = pool_workloads(cfg)
    profile = engine_of(cfg)
    if profile.eplb is None:
        raise ValueError(
            f"engine={profile.name}: the profile has no EPLB defaults (engine.eplb_* unset)"
        )
    first = next(iter(workloads.values()))
    layout = run_layout(cfg, spec, cluster, first)[0]
    ledger = ledger_of(cfg.strategy, cluster, profile, layout)
    stats: EngineLoadStats = read_engine_stats(
        paths,
        fmt=fmt,
        num_layers=num_moe_layers(spec),
        num_experts=spec.num_experts,
        tokens_per_step=tokens_per_step or first.tokens_per_step,
    )
    fluct = fluctuation_for(spec, str(cfg.eplb.fluctuation))
    pools, files = {}, {}
    for phase, wl in workloads.items():
        res = analyse(stats, spec, cluster, wl, fluct, settings, ledger, seed=int(cfg.seed))
        r = res["num_redundant_experts"]
        name = f"init_expert_location_{phase}.json"
        hist = stats.counts[: res["loads"]["history_steps"]].mean(axis=0)
        files[name] = sglang_init_expert_location(eplb_placement(hist, cluster.num_gpus, r))
        res["flags"] = engine_flags(
            engine,
            res["verdict"],
            r,
            res["window_steps"],
            res["rebalance_interval_steps"],
            synchronous=res["synchronous"],
            layers_per_chunk=settings.layers_per_chunk,
            location_file=name,
        )
        res["init_expert_location_file"] = name
        pools[phase] = res
    primary = (
        pools[cfg.workload.phase] if cfg.workload.phase in pools else next(iter(pools.values()))
    )
    keys = (
        "verdict",
        "speedup",
        "speedup_ci95",
        "tie",
        "num_redundant_experts",
        "window_steps",
        "rebalance_interval_steps",
        "stall_s_per_rebalance",
        "kv_cache_tokens_lost",
        "flags",
    )
    results = {
        "schema_version": SCHEMA_VERSION,
        "eplb": {
            **{k: primary[k] for k in keys},
            "primary_pool": primary["phase"],
            "engine": engine,
            "engine_profile": profile.summary(),
            "engine_defaults": profile.eplb.summary(),
            "model": spec.name,
            "hardware": cluster.name,
            "gpus": cluster.num_gpus,
            "statistics": {
                "engine": stats.engine,
                "mode": stats.mode,
                "format": stats.format_version,
                "files": stats.source,
                "steps": stats.num_steps,
                "layers": stats.num_layers,
                "experts": stats.num_experts,
                "meta": stats.meta,
            },
            "fluctuation": {"rho": [float(v) for v in fluct.rho], **fluct.meta},
            "pools": pools,
            "wall_s": time.perf_counter() - t0,
        },
    }
    return results, files, report_text(results)


def _fmt_ci(ci: list[float]) -> str:
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


def report_text(results: dict) -> str:
    """The report: verdict, curves and flags per pool (Markdown)."""
    e = results["eplb"]
    lines = [
        f"# gps-eplb: {e['model']} on {e['hardware']} ({e['gpus']} GPUs), engine {e['engine']}",
        "",
        f"Statistics: {e['statistics']['engine']} {e['statistics']['mode']}, "
        f"{e['statistics']['steps']} steps x {e['statistics']['layers']} layers x "
        f"{e['statistics']['experts']} experts ({', '.join(e['statistics']['files'])}). "
        f"Fluctuation model: rho {e['fluctuation']['rho'][0]:.2e} "
        f"({e['fluctuation'].get('fit', '')}).",
        "",
    ]
    for phase, p in e["pools"].items():
        lines += [
            f"## {phase} pool ({p['tokens_per_step']} tokens per step; loads: "
            f"{p['loads']['source']}, {p['loads']['history_steps']} history + "
            f"{p['loads']['evaluation_steps']} evaluation steps)",
            "",
            f"**Verdict: {p['verdict']}**, speed-up {p['speedup']:.3f}x (95% "
            f"{_fmt_ci(p['speedup_ci95'])}) over no balancing, "
            f"num_redundant_experts={p['num_redundant_experts']}, window "
            f"{p['window_steps']} steps, interval {p['rebalance_interval_steps']} steps, "
            f"stall {p['stall_s_per_rebalance']:.3f} s per rebalance. "
            + (f"{p['tie']['text']} " if p["tie"] else "")
            + f"Periodic EPLB priced with {p['transfer_mode']}. Imbalance costs "
            f"{p['imbalance_share_of_step']:.1%} of a no-balancing step "
            f"({p['no_balancing_step_s'] * 1e3:.3f} ms vs {p['balanced_step_s'] * 1e3:.3f}"
            f" ms balanced). Priced with engine {p['priced_with']['engine']} "
            f"({p['priced_with']['engine_version'] or 'ideal'}): "
            f"{p['engine_s_per_step'] * 1e3:.3f} ms of scheduler and sampling per step, "
            f"all-to-all {p['priced_with']['alltoall']}, overlap {p['priced_with']['overlap']}.",
            "",
            "| strategy | R | speed-up | 95% interval | step ms | stall s / rebalance |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, srow in p["strategies"].items():
            lines.append(
                f"| {name} | {srow['num_redundant_experts']} | {srow['speedup']:.3f} | "
                f"{_fmt_ci(srow['speedup_ci95'])} | {srow['step_s'] * 1e3:.3f} | "
                f"{srow['stall_s_per_rebalance']:.3f} |"
            )
        lines += [
            "",
            "Redundant experts (speed-up over no balancing; memory per GPU):",
            "",
            "| R | static | periodic | dispatch | HBM GB/GPU | KV tokens lost/GPU | "
            "max concurrency |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in p["redundancy_curve"]:
            lines.append(
                f"| {row['num_redundant_experts']} | {row.get('static', 0):.3f} | "
                f"{row.get('periodic', 0):.3f} | {row.get('dispatch', 0):.3f} | "
                f"{row['hbm_bytes_per_gpu'] / 1e9:.2f} | "
                f"{row['kv_cache_tokens_lost_per_gpu']:,.0f} | "
                f"{row['max_concurrency']:,} |"
            )
        ic = p["interval_curve"]
        lines += [
            "",
            f"Rebalance interval (amortised ms per step, R={ic['num_redundant_experts']};"
            " * = beyond the recorded ages, extrapolated; - = shorter than an asynchronous"
            " rebalance takes):",
            "",
            "| window \\ interval | " + " | ".join(str(i) for i in ic["intervals"]) + " |",
            "| --- |" + " --- |" * len(ic["intervals"]),
        ]
        for row in ic["rows"]:
            cells = [
                ("-" if v is None else f"{v * 1e3:.3f}{'*' if x else ''}")
                for v, x in zip(row["step_s"], row["extrapolated"], strict=True)
            ]
            lines.append(f"| {row['window_steps']} | " + " | ".join(cells) + " |")
        drift = p["drift"]
        lines += [
            "",
            "Drift of the recorded loads (window-mean proportion error h steps ahead):",
            "",
            "| window \\ h | " + " | ".join(str(h) for h in drift["horizons_steps"]) + " |",
            "| --- |" + " --- |" * len(drift["horizons_steps"]),
        ]
        for w, errs in drift["window_mean_mae"].items():
            cells = ["-" if v is None else f"{v:.2e}" for v in errs]
            lines.append(f"| {w} | " + " | ".join(cells) + " |")
        for eng, fl in p["flags"].items():
            lines += [
                "",
                f"{eng} flags: `{fl['command']}`" if fl["command"] else f"{eng} flags: none",
            ] + [f"- {n}" for n in fl["notes"]]
        lines.append("")
    lines.append(f"({e['wall_s']:.1f} s)")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gps-eplb``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="gps-eplb", description=__doc__.split("\n")[0])
    parser.add_argument(
        "stats",
        nargs="+",
        metavar="STATS",
        help="load statistics: files (one per rank) or a folder",
    )
    parser.add_argument("--engine", required=True, choices=sorted(FLAG_SOURCES))
    parser.add_argument("--model", required=True, help="conf/model name, e.g. deepseek_v3")
    parser.add_argument("--hardware", default=None, help="conf/hardware name")
    parser.add_argument(
        "--format", default="auto", choices=["auto", "sglang", "vllm", "trtllm", "gps"]
    )
    parser.add_argument(
        "--tokens-per-step", type=int, default=None, help="moe-gps traces: tokens per recorded step"
    )
    parser.add_argument("--out", default=None, help="output folder")
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, overrides = argv[:i], argv[i + 1 :]
    args = parser.parse_args(argv)
    try:
        cfg = compose_config(args.model, args.hardware, overrides, args.engine)
        results, files, text = run(
            args.stats, args.engine, cfg, fmt=args.format, tokens_per_step=args.tokens_per_step
        )
    except (ValueError, KeyError, OSError, HydraException, OmegaConfBaseException) as exc:
        print(f"gps-eplb: error: {exc}", file=sys.stderr)
        return 2
    out = (
        Path(args.out)
        if args.out
        else (
            Path("reports")
            / "eplb"
            / datetime.now().strftime("%Y-%m-%d")
            / datetime.now().strftime("%H-%M-%S")
        )
    )
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        _write(out / name, json.dumps(data))
    _write(out / "results.json", json.dumps(results, indent=1))
    _write(out / "report.md", text + "\n")
    print(text)
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
