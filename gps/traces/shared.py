"""The real routing in ``../shared/traces`` (beside the repository), read where it lies.

Data brought in from outside stays in ``../shared``: tests, benchmarks and calibration
scripts convert it on the fly with the importers (well under a second each) instead of
committing converted copies. ``GPS_SHARED_TRACES`` overrides the folder. Each loader raises
:class:`FileNotFoundError` naming the missing path, so callers can skip with that reason.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from gps.traces.trace import LoadSeries, TokenTrace

MIXTRAL_SOURCE = (
    "vLLM routing log, github.com/Mario928/speculative-moe routing_data_collected/ @216e26eb "
    "(via shared/traces/mixtral_8x7b_vllm)"
)
MIXTRAL_LICENSE = "no licence file; published 'for academic purposes' by the repository author"
ESFT_SOURCE = (
    "github.com/deepseek-ai/ESFT results/expert_scores @18d23501 "
    "(via shared/traces/deepseek_v2_lite_esft/esft_routing_compact.npz)"
)


def shared_traces_dir() -> Path:
    """``$GPS_SHARED_TRACES``, else ``<repository>/../shared/traces``."""
    env = os.environ.get("GPS_SHARED_TRACES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"real routing absent: {path} (../shared/traces beside the repo)")
    return path


def mixtral_vllm_trace() -> TokenTrace:
    """Mixtral-8x7B in vLLM: both shared JSONL files, 577 complete tokens (8 dropped)."""
    from gps.traces.jsonl import read_routing_jsonl

    folder = shared_traces_dir() / "mixtral_8x7b_vllm"
    files = [_need(folder / f"{name}_2_routing.jsonl") for name in ("gsm8k", "humaneval")]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*dropped 8 of 585 tokens")
        return read_routing_jsonl(
            files, num_experts=8, model="Mixtral-8x7B-Instruct-v0.1",
            source=MIXTRAL_SOURCE, license=MIXTRAL_LICENSE,
        )  # fmt: skip


def esft_trace() -> TokenTrace:
    """DeepSeek-V2-Lite-architecture routing from ESFT: 33,279 tokens, 26 layers, top-6 of 64."""
    from gps.traces.importers import read_arrays

    path = _need(shared_traces_dir() / "deepseek_v2_lite_esft" / "esft_routing_compact.npz")
    return read_arrays(
        path, num_experts=64, model="deepseek-ai/ESFT-vanilla-lite", source=ESFT_SOURCE,
        license="MIT (ESFT repository LICENSE-CODE)",
    )  # fmt: skip


def domain_counts(model: str = "mistral", top1: bool = False) -> LoadSeries:
    """OLMoE repository per-domain counts (~208,896 tokens each) of ``mistral`` or ``olmoe``.

    Steps are domains (``meta["step_names"]``), rows are layers 0, 7 and 15.
    """
    from gps.traces.importers import read_counts

    path = _need(
        shared_traces_dir() / "olmoe_mixtral_domain_counts" / "olmoe_mixtral_expert_counts.json"
    )
    kind = "expert_counts_top1" if top1 else "expert_counts"
    return read_counts(
        path, prefix=f"{model}/{kind}/", layers=[0, 7, 15],
        model="Mixtral-8x7B-v0.1" if model == "mistral" else "OLMoE-1B-7B",
        source="github.com/allenai/OLMoE scripts/routing_output (via shared/traces)",
        license="Apache-2.0",
    )  # fmt: skip
