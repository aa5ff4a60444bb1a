"""Time the kernels the cost model prices, on a real CUDA GPU (never run in CI).

Measures, in bf16 with CUDA events (warm-ups, then the median of repeats):

* ``matmul``: an 8192^3 matrix product, the dense-peak anchor;
* ``gemm``: single GEMMs ``M x N x K`` over a grid (``GEMM_M`` x ``GEMM_N`` x ``GEMM_K``,
  K down to 128: MLA's ``kv_up`` has ``K = 512``), which the shape-aware fit
  (``gps/calibration.py``) uses beside the expert FFNs when present;
* ``copy``: a 2 GiB device-to-device copy (bytes read + written), the HBM anchor;
* ``launch_eager`` / ``launch_graph``: a one-element add, 1000 times, issued from Python
  (eager: host dispatch included) and replayed from a CUDA graph (the GPU-side per-kernel
  floor that graph-captured serving loops see);
* ``expert_ffn``: a grouped SwiGLU expert FFN as serving stacks run it without a fused MoE
  kernel: ``torch.bmm`` over ``n_e`` equal-size experts for the fused gate/up GEMM
  ``[n_e, M, d] x [n_e, d, 2f]``, ``silu(gate) * up``, and the down GEMM
  ``[n_e, M, f] x [n_e, f, d]`` (three kernels), for ``M`` tokens per expert from 1 to 16k,
  at the expert shapes of Mixtral-8x7B (d=4096, f=14336, 2 experts per GPU) and DeepSeek-V3
  (d=7168, f=2048, 32 experts per GPU).

Writes raw JSON (device, torch version, date, every measurement with FLOPs, bytes, seconds).
Fit it with ``benchmarks/gpu/fit.py`` on any machine.

Run: ``python3 benchmarks/gpu/measure.py --out h100.json``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys

SHAPES = {  # name: (hidden d, expert intermediate f, experts per GPU); from each config.json
    "mixtral_8x7b": (4096, 14336, 2),
    "deepseek_v3": (7168, 2048, 32),
}
TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
GEMM_M = [256, 2048, 16384]
GEMM_N = [512, 4096, 32768]
GEMM_K = [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
ELEMENT = 2  # bytes of bf16


def timed(torch, fn, warmup: int = 3, repeats: int = 10) -> float:
    """Median seconds of ``fn()`` over ``repeats`` CUDA-event-timed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def measure(torch) -> list[dict]:
    cuda, bf16 = torch.device("cuda"), torch.bfloat16
    rows: list[dict] = []
    n = 8192
    a, b = torch.randn(n, n, device=cuda, dtype=bf16), torch.randn(n, n, device=cuda, dtype=bf16)
    rows.append({"kind": "matmul", "m": n, "n": n, "k": n, "flops": 2.0 * n**3,
                 "bytes": 3.0 * n * n * ELEMENT,
                 "seconds": timed(torch, lambda: a @ b)})  # fmt: skip
    for m in GEMM_M:
        for nn in GEMM_N:
            for k in GEMM_K:
                x = torch.randn(m, k, device=cuda, dtype=bf16)
                y = torch.randn(k, nn, device=cuda, dtype=bf16)
                rows.append({"kind": "gemm", "batch": 1, "m": m, "n": nn, "k": k,
                             "flops": 2.0 * m * nn * k,
                             "bytes": ELEMENT * (m * k + k * nn + m * nn),
                             "seconds": timed(torch, lambda x=x, y=y: x @ y)})  # fmt: skip
    src = torch.empty(2**30, device=cuda, dtype=bf16)
    dst = torch.empty_like(src)
    rows.append({"kind": "copy", "flops": 0.0, "bytes": 2.0 * src.numel() * ELEMENT,
                 "seconds": timed(torch, lambda: dst.copy_(src))})  # fmt: skip
    one, launches = torch.zeros(1, device=cuda), 1000

    def many() -> None:
        for _ in range(launches):
            one.add_(1.0)

    rows.append({"kind": "launch_eager", "launches": launches, "flops": 0.0, "bytes": 0.0,
                 "seconds": timed(torch, many, repeats=5)})  # fmt: skip
    graph = torch.cuda.CUDAGraph()
    many()  # warm up on the side stream the capture uses
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        many()
    rows.append({"kind": "launch_graph", "launches": launches, "flops": 0.0, "bytes": 0.0,
                 "seconds": timed(torch, graph.replay, repeats=5)})  # fmt: skip
    for model, (d, f, ne) in SHAPES.items():
        w_gu = torch.randn(ne, d, 2 * f, device=cuda, dtype=bf16) * 0.02
        w_d = torch.randn(ne, f, d, device=cuda, dtype=bf16) * 0.02
        for m in TOKENS:
            if ne * m * (d + 3 * f) * ELEMENT > 8 * 2**30:
                continue
            x = torch.randn(ne, m, d, device=cuda, dtype=bf16)

            def ffn(x=x, f=f, w_gu=w_gu, w_d=w_d) -> None:
                gu = torch.bmm(x, w_gu)
                h = torch.nn.functional.silu(gu[..., :f]) * gu[..., f:]
                torch.bmm(h, w_d)

            rows.append({
                "kind": "expert_ffn", "model": model, "hidden": d, "intermediate": f,
                "experts": ne, "tokens_per_expert": m,
                "flops": 6.0 * d * f * m * ne,
                "bytes": ELEMENT * ne * (3.0 * d * f + 2.0 * (d + f) * m),
                "seconds": timed(torch, ffn),
            })  # fmt: skip
            print(f"{model} M={m:>6}: {rows[-1]['seconds'] * 1e6:10.1f} us", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="path of the raw JSON to write")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("measure.py needs PyTorch with CUDA; it runs on a GPU machine, not in CI")
    if not torch.cuda.is_available():
        sys.exit("measure.py: no CUDA GPU visible; nothing measured")
    rows = measure(torch)
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": dt.date.today().isoformat(),
        "dtype": "bf16",
        "measurements": rows,
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {args.out} ({len(rows)} measurements on {result['device']})")


if __name__ == "__main__":
    main()
