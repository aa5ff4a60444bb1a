"""Ready-to-paste engine flags for a ``gps-eplb`` verdict (``docs/eplb.md``, "Flags").

Every flag name and default was checked against the engines' own documentation and source
(:data:`FLAG_SOURCES`); a strategy an engine cannot express with released flags says so
instead of inventing one.
"""

from __future__ import annotations

import json
import shlex

FLAG_SOURCES = {
    "sglang": (
        "SGLang docs/advanced_features/server_arguments.md, 'Expert parallelism' "
        "(sgl-project/sglang @004813e1, v0.5 series), python/sglang/srt/server_args.py and "
        "srt/eplb/expert_location.py (--init-expert-location reads a .json/.pt holding "
        "physical_to_logical_map or logical_count)"
    ),
    "vllm": (
        "vLLM docs/serving/expert_parallel_deployment.md (vllm-project/vllm @01702569) and "
        "EPLBConfig in vllm/config/parallel.py (@00193b82: window_size, step_interval, "
        "num_redundant_experts, log_balancedness, use_async (default true), policy)"
    ),
}


def sglang_flags(
    strategy: str,
    num_redundant: int,
    window: int,
    interval: int,
    *,
    layers_per_chunk: int | None = None,
    location_file: str | None = None,
) -> dict:
    """SGLang server arguments for ``strategy`` (``no_balancing``, ``static``, ``periodic``,
    ``predictive``, ``dispatch``): ``{"args": [...], "command": str, "notes": [...]}``."""
    args: list[str] = []
    notes: list[str] = []
    location = location_file or "init_expert_location.json"
    if strategy == "no_balancing":
        notes.append("no EPLB flags: keep --init-expert-location trivial (the default)")
    elif strategy in ("static", "dispatch"):
        args += [
            "--ep-num-redundant-experts",
            str(num_redundant),
            "--init-expert-location",
            location,
            "--ep-dispatch-algorithm",
            "static",
        ]
        notes.append(
            f"{location}: the placement planned from the recorded statistics "
            "(physical_to_logical_map [layers, E + R])"
        )
        if strategy == "dispatch":
            notes.append(
                "per-batch (LPLB-style) dispatch over replicas has no released SGLang "
                "flag verified here; these flags give the static placement it needs"
            )
    else:
        args += [
            "--enable-eplb",
            "--ep-num-redundant-experts",
            str(num_redundant),
            "--eplb-rebalance-num-iterations",
            str(interval),
            "--expert-distribution-recorder-buffer-size",
            str(window),
            "--init-expert-location",
            location,
        ]
        if layers_per_chunk:
            args += ["--eplb-rebalance-layers-per-chunk", str(layers_per_chunk)]
        notes.append(
            "the recorder buffer (window) defaults to the rebalance interval; set "
            "here to the window priced"
        )
        if strategy == "predictive":
            notes.append(
                "SGLang re-plans from the window mean; a moe-gps predictor's forecast "
                "has no flag: these are the periodic EPLB flags at the same cadence"
            )
    return {
        "args": args,
        "command": shlex.join(args),
        "notes": notes,
        "source": FLAG_SOURCES["sglang"],
    }


def vllm_flags(
    strategy: str, num_redundant: int, window: int, interval: int, *, synchronous: bool = False
) -> dict:
    """vLLM serve arguments for ``strategy``: ``{"args", "command", "notes", "source"}``."""
    args: list[str] = []
    notes: list[str] = []
    if strategy == "no_balancing":
        notes.append("no EPLB flags (--enable-expert-parallel alone)")
        args = ["--enable-expert-parallel"]
    else:
        config = {
            "window_size": int(window),
            "step_interval": int(interval),
            "num_redundant_experts": int(num_redundant),
            "use_async": not synchronous,
        }
        args = [
            "--enable-expert-parallel",
            "--enable-eplb",
            "--eplb-config",
            json.dumps(config, separators=(",", ":")),
        ]
        if strategy in ("static", "dispatch"):
            notes.append(
                "vLLM has no released static-placement input (offline EPLB: PR #26176 "
                "closed, #41141 open): periodic EPLB with these settings is the closest"
            )
        if strategy == "predictive":
            notes.append(
                "vLLM re-plans from the window mean; these are the periodic flags at the "
                "same cadence"
            )
        if strategy == "dispatch":
            notes.append("per-batch (LPLB-style) dispatch over replicas has no vLLM flag")
    return {
        "args": args,
        "command": shlex.join(args),
        "notes": notes,
        "source": FLAG_SOURCES["vllm"],
    }


def engine_flags(
    engine: str,
    strategy: str,
    num_redundant: int,
    window: int,
    interval: int,
    *,
    synchronous: bool,
    layers_per_chunk: int | None = None,
    location_file: str | None = None,
) -> dict:
    """Both engines' flags (``engine`` first in the dict), keyed by engine."""
    out = {
        "sglang": sglang_flags(
            strategy,
            num_redundant,
            window,
            interval,
            layers_per_chunk=layers_per_chunk,
            location_file=location_file,
        ),
        "vllm": vllm_flags(strategy, num_redundant, window, interval, synchronous=synchronous),
    }
    for other, flags in out.items():
        if other != engine:
            flags["notes"].append(
                f"priced with {engine}'s rebalance costs and defaults; rerun gps-eplb with "
                f"--engine {other} to price {other}'s"
            )
    return {engine: out[engine], **{k: v for k, v in out.items() if k != engine}}
