"""The ``gps-trace`` console script: ``inspect``, ``generate`` and ``convert`` traces.

    gps-trace inspect FILE [--batch-size B] [--ep G] [--plots DIR]
    gps-trace generate PRESET OUT [--seed S] [--tokens T] [--no-compress]
    gps-trace convert IN [IN ...] OUT [field options] [--no-compress]

``convert`` reads JSON Lines routing logs (see :func:`read_routing_jsonl`) or re-writes one
``.npz`` trace (e.g. to switch between compressed and memory-mappable storage). Bad input
exits with status 2 and a one-line message naming the file and field.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gps.traces.io import load_trace, save_trace
from gps.traces.jsonl import read_routing_jsonl
from gps.traces.trace import LoadSeries, TokenTrace


def describe(trace: TokenTrace | LoadSeries) -> str:
    """A few lines naming the trace's kind, shape and provenance (``meta``)."""
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


def _convert(args: argparse.Namespace) -> None:
    inputs = [Path(p) for p in args.inputs]
    if any(p.suffix == ".npz" for p in inputs):
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
        )
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

    p = sub.add_parser("convert", help="JSON Lines routing logs (or one .npz) -> trace .npz")
    p.add_argument("inputs", nargs="+", metavar="IN", help="JSON Lines files, or one .npz")
    p.add_argument("out", metavar="OUT", help="output .npz")
    p.add_argument("--layer-field", default="layer")
    p.add_argument("--experts-field", default="experts")
    p.add_argument("--scores-field", default="gating_probs")
    p.add_argument("--no-scores", action="store_true", help="logs carry no gate scores")
    p.add_argument("--token-field", default="token_idx", help="position in the sequence")
    p.add_argument("--sequence-fields", default="dataset,problem_id", help="comma-separated")
    p.add_argument("--token-id-field", default=None, help="vocabulary id field (default none)")
    p.add_argument("--domain-field", default="dataset")
    p.add_argument("--no-domain", action="store_true", help="logs carry no domain label")
    p.add_argument("--num-experts", type=int, default=None, help="E (default: largest id + 1)")
    p.add_argument("--model", default="")
    p.add_argument("--source", default="")
    p.add_argument("--license", default="")
    p.add_argument("--missing-layers", choices=("drop", "error"), default="drop")
    p.add_argument("--no-compress", action="store_true", help="store memory-mappable .npz")
    p.set_defaults(func=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gps-trace``; returns the exit status (2 on bad input)."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            args.func(args)
        except (ValueError, OSError, KeyError) as exc:
            print(f"gps-trace: error: {exc}", file=sys.stderr)
            return 2
        finally:
            for w in caught:
                print(f"gps-trace: warning: {w.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
