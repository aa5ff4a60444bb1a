"""Save/load throughput of a large token trace (default 10M tokens x 32 layers x top-2, E=8).

The trace is made with plain numpy (uniform distinct top-2 ids, random float16 scores;
generation is not timed). Times: ``save_trace`` stored (memory-mappable) and compressed,
``load_trace`` of each (validation included), and ``batch_loads`` on the memory-mapped
trace. Files are read back right after writing, so loads are warm page-cache figures.

Run: ``.venv/bin/python benchmarks/bench_traces_io.py [--tokens 10000000] [--no-scores]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from machine import describe

from gps.traces.batching import batch_loads
from gps.traces.io import load_trace, save_trace
from gps.traces.trace import TokenTrace

T = TypeVar("T")


def make_trace(tokens: int, layers: int, experts: int, scores: bool, seed: int) -> TokenTrace:
    """Uniform random top-2 routing (distinct ids) built in chunks of 1M tokens."""
    rng = np.random.default_rng(seed)
    ids = np.empty((tokens, layers, 2), dtype=np.int16)
    gate = np.empty((tokens, layers, 2), dtype=np.float16) if scores else None
    for t0 in range(0, tokens, 1 << 20):
        t1 = min(tokens, t0 + (1 << 20))
        first = rng.integers(0, experts, (t1 - t0, layers), dtype=np.int16)
        ids[t0:t1, :, 0] = first
        ids[t0:t1, :, 1] = (first + rng.integers(1, experts, first.shape, dtype=np.int16)) % experts
        if gate is not None:
            top = rng.uniform(0.5, 1.0, first.shape)
            gate[t0:t1, :, 0] = top
            gate[t0:t1, :, 1] = 1.0 - top
    seq_len = 512
    return TokenTrace(
        experts=ids,
        token_id=rng.integers(0, 32000, tokens, dtype=np.int32),
        sequence_id=(np.arange(tokens) // seq_len).astype(np.int32),
        position=(np.arange(tokens) % seq_len).astype(np.int32),
        num_experts=experts,
        scores=gate,
        meta={"model": "benchmark", "source": "numpy uniform"},
    )


def report(label: str, tokens: int, seconds: float) -> None:
    """Print one timing line: seconds and tokens/s."""
    print(f"{label:<38} {seconds:8.2f} s  {tokens / seconds / 1e6:8.2f} M tokens/s")


def timed(label: str, tokens: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` once, print its timing and return its result."""
    start = time.perf_counter()
    result = fn()
    report(label, tokens, time.perf_counter() - start)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=10_000_000)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-scores", action="store_true")
    parser.add_argument("--dir", default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()
    print(describe())
    trace = make_trace(args.tokens, args.layers, args.experts, not args.no_scores, seed=0)
    nbytes = trace.experts.nbytes + (0 if trace.scores is None else trace.scores.nbytes)
    print(
        f"trace: {args.tokens:,} tokens x {args.layers} layers x top-2, E={args.experts}, "
        f"scores={'no' if trace.scores is None else 'float16'}, {nbytes / 1e9:.2f} GB in RAM"
    )
    t = args.tokens
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        stored, packed = Path(tmp) / "stored.npz", Path(tmp) / "compressed.npz"
        start = time.perf_counter()
        save_trace(stored, trace, compress=False)
        report("save stored (memory-mappable)", t, time.perf_counter() - start)
        del trace  # free the in-memory copy: the loads below run from the files
        mapped = timed("load stored: mmap + validate", t, lambda: load_trace(stored))
        loads = timed(
            f"batch_loads(B={args.batch_size}) on mmap",
            t,
            lambda: batch_loads(mapped, args.batch_size),
        )
        assert loads.shape[0] == t // args.batch_size
        timed("save compressed (deflate)", t, lambda: save_trace(packed, mapped, compress=True))
        timed("load compressed: stream + validate", t, lambda: load_trace(packed))
        print(
            f"file sizes: stored {stored.stat().st_size / 1e9:.2f} GB, "
            f"compressed {packed.stat().st_size / 1e9:.2f} GB"
        )


if __name__ == "__main__":
    main()
