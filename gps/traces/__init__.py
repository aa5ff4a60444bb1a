"""Routing traces: format, validation, IO, importers, batching, statistics and synthesis.

Names are imported lazily on first use (PEP 562), so ``import gps.traces`` stays cheap and
does not pull in matplotlib or scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # format (trace.py, validate.py, io.py, jsonl.py, batching.py)
    "TokenTrace": "trace",
    "LoadSeries": "trace",
    "TraceError": "validate",
    "validate_token_trace": "validate",
    "validate_load_series": "validate",
    "save_trace": "io",
    "load_trace": "io",
    "read_routing_jsonl": "jsonl",
    # importers (importers.py) and routing rules (routing.py)
    "FORMATS": "importers",
    "read_arrays": "importers",
    "read_esft": "importers",
    "read_hf_router_logits": "importers",
    "read_sglang_expert_distribution": "importers",
    "read_counts": "importers",
    "RoutingRule": "routing",
    "rule_from_config": "routing",
    "route": "routing",
    "logits_to_trace": "routing",
    "batch_loads": "batching",
    "decode_order": "batching",
    "split_by_sequence": "batching",
    "take_tokens": "batching",
    # statistics (stats.py, plots.py)
    "TraceStats": "stats",
    "trace_stats": "stats",
    "load_series_stats": "stats",
    "format_stats_table": "stats",
    "imbalance_ratio": "stats",
    "load_entropy": "stats",
    "coefficient_of_variation": "stats",
    "load_autocorrelation": "stats",
    "transition_matrix": "stats",
    "cross_layer_mutual_information": "stats",
    "token_id_predictability": "stats",
    "plot_trace_stats": "plots",
    # synthesis (synthetic.py)
    "SyntheticTraceConfig": "synthetic",
    "LoadSeriesConfig": "synthetic",
    "generate_token_trace": "synthetic",
    "generate_load_series": "synthetic",
    "load_preset": "synthetic",
    "generate_from_preset": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
