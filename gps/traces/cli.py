"""The ``gps-trace`` console script: ``inspect``, ``generate``, ``convert`` and ``record``.

    gps-trace inspect FILE [--batch-size B] [--ep G] [--plots DIR]
    gps-trace generate PRESET OUT [--seed S] [--tokens T] [--no-compress]
    gps-trace convert IN [IN ...] OUT [--format NAME] [format options] [--layer-map L:M,...]
        [--skip-first N] [--keep-warmup] [--no-compress]
    gps-trace record --model ID_OR_PATH --prompts FILE OUT [--batch-size B] ...
        [--save-hidden LAYERS [--hidden-kind pre_attention_normed|router_input]]

``convert --format`` is one of :data:`gps.traces.importers.FORMATS` (``jsonl`` by default:
JSON Lines routing logs, see :func:`read_routing_jsonl`; with one ``.npz`` trace as input it
re-writes it, e.g. to switch between compressed and memory-mappable storage). ``record``
needs the ``[record]`` extra (torch, transformers). Bad input exits with status 2 and a
one-line message naming the file and field.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gps.traces.clean import WARMUP_FIELDS, describe_warmup
from gps.traces.io import load_trace, save_trace
from gps.traces.jsonl import read_routing_jsonl
from gps.traces.trace import LoadSeries, TokenTrace


def describe(trace: TokenTrace | LoadSeries) -> str:
    """A few lines naming the trace's kind, shape and provenance (``meta``), and what the import
    skipped or dropped (header lines, warm-up passes, incomplete tokens, layer coverage)."""
    meta = trace.meta
    if isinstance(trace, TokenTrace):
        lines = [
            f"token trace: T={trace.num_tokens} tokens, L={trace.num_layers} layers, "
            f"top-{trace.top_k} of E={trace.num_experts} experts, "
            f"{np.unique(trace.sequence_id).size} sequences, "
            f"scores={'yes' if trace.scores is not None else 'no'}",
        ]
        if trace.domain is not None:
            lines.append(f"domains: {', '.join(meta.get('domains', []))}")
    else:
        s, layers, e = trace.counts.shape
        lines = [f"load series: S={s} steps, L={layers} layers, E={e} experts"]
    if meta.get("moe_layers") is not None:
        lines.append(f"MoE layers covered: {len(meta['moe_layers'])} (the model's MoE layers "
                     f"{meta['moe_layers']}); a run is priced on these layers")  # fmt: skip
    runs = meta.get("runs", [])
    if len({tuple(run["layers"]) for run in runs}) > 1:  # runs that each logged some layers
        lines += [f"merged run {run['file']}: layers {run['layers']}" for run in runs]
    if meta.get("skipped_lines"):
        lines.append(f"skipped {meta['skipped_lines']} header/metadata/comment lines "
                     f"({', '.join(meta['skipped_line_examples'])})")  # fmt: skip
    if meta.get("dropped_tokens"):
        lines.append(f"dropped {meta['dropped_tokens']} tokens that miss some layer")
    if meta.get("dropped_empty_steps"):
        lines.append(f"dropped {meta['dropped_empty_steps']} all-zero steps (unfilled buffer)")
    warmup = describe_warmup(meta)
    if warmup:
        lines.append(warmup)
    for key in ("model", "source", "license"):
        if meta.get(key):
            lines.append(f"{key}: {meta[key]}")
    return "\n".join(lines)


def _inspect(args: argparse.Namespace) -> None:
    trace = load_trace(args.file)
    from gps.traces.stats import format_stats_table, load_series_stats, trace_stats

    print(f"{args.file}\n{describe(trace)}\n")
    if isinstance(trace, TokenTrace):
        stats = trace_stats(trace, batch_size=args.batch_size, ep_degree=args.ep)
    else:
        stats = load_series_stats(trace, ep_degree=args.ep)
    print(format_stats_table(stats))
    if args.plots is not None:
        from gps.traces.plots import plot_trace_stats

        for path in plot_trace_stats(stats, Path(args.plots)):
            print(f"plot: {path}")


def _generate(args: argparse.Namespace) -> None:
    from gps.traces.synthetic import generate_from_preset

    trace = generate_from_preset(args.preset, seed=args.seed, num_tokens=args.tokens)
    path = save_trace(args.out, trace, compress=not args.no_compress)
    print(f"wrote {path}\n{describe(trace)}")


def _single(inputs: list[Path], fmt: str) -> Path:
    if len(inputs) != 1:
        raise ValueError(f"convert --format {fmt}: give exactly one input")
    return inputs[0]


def _provenance(args: argparse.Namespace) -> dict:
    return {"model": args.model, "source": args.source, "license": args.license}


def _warmup(args: argparse.Namespace) -> dict:
    return {"skip_first": args.skip_first, "keep_warmup": args.keep_warmup}


def _convert_other(args: argparse.Namespace, inputs: list[Path]) -> TokenTrace | LoadSeries:
    """Every ``--format`` but ``jsonl``."""
    from gps.traces import importers

    fmt = args.format
    path = _single(inputs, fmt)
    layer_map = importers.parse_layer_map(args.layer_map)
    if fmt == "arrays":
        bad = [f for f in args.field if "=" not in f]
        if bad:
            raise ValueError(f"--field {bad[0]!r}: expected FIELD=MEMBER, e.g. experts=ids")
        fields = dict(f.split("=", 1) for f in args.field)
        return importers.read_arrays(
            path, num_experts=args.num_experts, fields=fields,
            sort_by_score=not args.keep_slot_order, renormalise=not args.raw_scores,
            layer_map=layer_map, **_warmup(args), **_provenance(args),
        )  # fmt: skip
    if fmt == "pickle":
        return importers.read_pickled_arrays(
            path, num_experts=args.num_experts, hf_config=args.hf_config, layer_map=layer_map,
            sort_by_score=not args.keep_slot_order, renormalise=not args.raw_scores,
            **_warmup(args), **_provenance(args),
        )  # fmt: skip
    if fmt == "esft":
        tasks = [t for t in args.tasks.split(",") if t] if args.tasks else None
        provenance = {k: v for k, v in _provenance(args).items() if v}
        return importers.read_esft(
            path, num_experts=args.num_experts or 64, tasks=tasks, top_k=args.top_k,
            sort_by_score=not args.keep_slot_order, renormalise=not args.raw_scores,
            **provenance,
        )  # fmt: skip
    if fmt == "hf-router-logits":
        if args.hf_config is None:
            raise ValueError("convert --format hf-router-logits needs --hf-config config.json")
        trace = importers.read_hf_router_logits(path, args.hf_config, **_provenance(args))
        if args.num_experts is not None and args.num_experts != trace.num_experts:
            raise ValueError(
                f"{args.hf_config}: field 'num_experts': config routes over "
                f"{trace.num_experts} experts, --num-experts says {args.num_experts}"
            )
        return trace
    if fmt == "sglang-expert-distribution":
        return importers.read_sglang_expert_distribution(path, **_provenance(args))
    layers = [int(v) for v in args.layers.split(",")] if args.layers else None
    return importers.read_counts(path, prefix=args.prefix, layers=layers, **_provenance(args))


def _convert(args: argparse.Namespace) -> None:
    inputs = [Path(p) for p in args.inputs]
    if args.format != "jsonl":
        trace = _convert_other(args, inputs)
    elif any(p.suffix == ".npz" for p in inputs):
        if len(inputs) != 1:
            raise ValueError("convert: give exactly one .npz input (or only JSON Lines inputs)")
        trace = load_trace(inputs[0])
    else:
        trace = read_routing_jsonl(
            inputs,
            layer_field=args.layer_field,
            experts_field=args.experts_field,
            scores_field=None if args.no_scores else args.scores_field,
            token_field=args.token_field,
            sequence_fields=tuple(f for f in args.sequence_fields.split(",") if f),
            token_id_field=args.token_id_field,
            domain_field=None if args.no_domain else args.domain_field,
            num_experts=args.num_experts,
            model=args.model,
            source=args.source,
            license=args.license,
            missing_layers=args.missing_layers,
            layer_map=_layer_map(args.layer_map),
            warmup_fields=tuple(args.warmup_field or WARMUP_FIELDS),
            **_warmup(args),
        )
    path = save_trace(args.out, trace, compress=not args.no_compress)
    print(f"wrote {path}\n{describe(trace)}")


def _layer_map(text: str | None) -> dict[int, int] | None:
    from gps.traces.importers import parse_layer_map

    return parse_layer_map(text)


def _record(args: argparse.Namespace) -> None:
    from gps.traces.record import parse_layers, read_prompts, record_routing

    if args.save_hidden is not None:
        parse_layers(args.save_hidden)  # a bad LAYERS fails before prompts and model load
    prompts = read_prompts(args.prompts)
    trace = record_routing(
        args.model, prompts, batch_size=args.batch_size, max_length=args.max_length,
        device=args.device, dtype=args.dtype, prompts_name=Path(args.prompts).name,
        save_hidden=args.save_hidden, hidden_kind=args.hidden_kind,
    )  # fmt: skip
    path = save_trace(args.out, trace, compress=not args.no_compress)
    print(f"wrote {path}\n{describe(trace)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gps-trace", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print statistics of a trace (and write plots)")
    p.add_argument("file", help="trace .npz written by save_trace / gps-trace")
    p.add_argument("--batch-size", type=int, default=64, help="tokens per batch (default 64)")
    p.add_argument("--ep", type=int, default=8, help="expert-parallel degree G (default 8)")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("generate", help="write a synthetic trace from a conf/trace preset")
    p.add_argument("preset", help="preset name, e.g. mixtral_mmlu_like")
    p.add_argument("out", help="output .npz")
    p.add_argument("--seed", type=int, help="seed (default: the preset's)")
    p.add_argument("--tokens", type=int, help="tokens (or steps) to generate (default: preset's)")
    p.add_argument("--no-compress", action="store_true", help="store memory-mappable .npz")
    p.set_defaults(func=_generate)

    from gps.traces.importers import FORMATS

    p = sub.add_parser("convert", help="routing logs / arrays / counts -> trace .npz")
    p.add_argument("inputs", nargs="+", metavar="IN", help="input file(s) or folder")
    p.add_argument("out", metavar="OUT", help="output .npz")
    p.add_argument(
        "--format", choices=sorted(FORMATS), default="jsonl",
        help="input format (default jsonl; see docs/traces.md)",
    )  # fmt: skip
    g = p.add_argument_group("arrays / esft")
    g.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="FIELD=MEMBER",
        help="arrays: member holding FIELD (experts, scores, sequence_id, ...)",
    )
    g.add_argument(
        "--keep-slot-order",
        action="store_true",
        help="keep the file's slot order (default: best first by gate weight)",
    )
    g.add_argument(
        "--raw-scores",
        action="store_true",
        help="keep gate weights as given (default: renormalise the k to sum 1)",
    )
    g.add_argument("--tasks", default=None, help="esft: comma-separated task folders")
    g.add_argument(
        "--top-k", type=int, default=None,
        help="esft: the model's top-k (checked on every line; default: inferred, with a warning)",
    )  # fmt: skip
    g = p.add_argument_group("hf-router-logits / pickle")
    g.add_argument("--hf-config", default=None, help="the model's config.json (or its folder)")
    g = p.add_argument_group("layers and warm-up (jsonl, arrays, pickle)")
    g.add_argument(
        "--layer-map", default=None, metavar="LOGGED:MOE,...",
        help="map logged layer numbers onto the model's MoE-layer indices (a log of a subset "
        "of layers, or runs that each logged some); the trace records the coverage",
    )  # fmt: skip
    g.add_argument("--skip-first", type=int, default=0, metavar="N",
                   help="drop the first N sequences (warm-up requests)")  # fmt: skip
    g.add_argument(
        "--keep-warmup", action="store_true",
        help="keep flagged and constant-input (dummy) sequences (default: drop and report)",
    )  # fmt: skip
    g.add_argument(
        "--warmup-field", action="append", default=None, metavar="NAME",
        help=f"jsonl: record field whose truthy value flags warm-up (default: "
        f"{', '.join(WARMUP_FIELDS)})",
    )  # fmt: skip
    g = p.add_argument_group("counts")
    g.add_argument("--prefix", default="", help="only entries whose name starts with this")
    g.add_argument("--layers", default=None, help="model layer of each row, e.g. 0,7,15")
    g = p.add_argument_group("jsonl")
    g.add_argument("--layer-field", default="layer")
    g.add_argument("--experts-field", default="experts")
    g.add_argument("--scores-field", default="gating_probs")
    g.add_argument("--no-scores", action="store_true", help="logs carry no gate scores")
    g.add_argument("--token-field", default="token_idx", help="position in the sequence")
    g.add_argument("--sequence-fields", default="dataset,problem_id", help="comma-separated")
    g.add_argument("--token-id-field", default=None, help="vocabulary id field (default none)")
    g.add_argument("--domain-field", default="dataset")
    g.add_argument("--no-domain", action="store_true", help="logs carry no domain label")
    p.add_argument("--num-experts", type=int, default=None, help="E (default: largest id + 1)")
    p.add_argument("--model", default="")
    p.add_argument("--source", default="")
    p.add_argument("--license", default="")
    g.add_argument("--missing-layers", choices=("drop", "error"), default="drop")
    p.add_argument("--no-compress", action="store_true", help="store memory-mappable .npz")
    p.set_defaults(func=_convert)

    p = sub.add_parser("record", help="record routing of a Hugging Face MoE model (torch)")
    p.add_argument("out", metavar="OUT", help="output .npz")
    p.add_argument("--model", required=True, help="Hugging Face model id or local folder")
    p.add_argument("--prompts", required=True, help=".txt (one per line) or .jsonl prompts")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass")
    p.add_argument("--max-length", type=int, default=2048, help="truncate prompts (tokens)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument(
        "--save-hidden", default=None, metavar="LAYERS",
        help="also store float16 activations of these MoE layers (all, 0,3,5 or 0-7; "
        "0-based as the trace's layer axis) for the hidden-state router; prints the size "
        "T*H*d*2 bytes before it starts",
    )  # fmt: skip
    p.add_argument(
        "--hidden-kind", choices=("pre_attention_normed", "router_input"),
        default="pre_attention_normed",
        help="pre_attention_normed (default): the block's input_layernorm output; "
        "router_input: what the router reads",
    )  # fmt: skip
    p.add_argument("--no-compress", action="store_true", help="store memory-mappable .npz")
    p.set_defaults(func=_record)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gps-trace``; returns the exit status (2 on bad input)."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            args.func(args)
        except (ValueError, OSError, KeyError, ImportError) as exc:
            print(f"gps-trace: error: {exc}", file=sys.stderr)
            return 2
        finally:
            for w in caught:
                print(f"gps-trace: warning: {w.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
