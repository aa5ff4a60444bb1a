"""The ``gps-trace`` console script: convert, inspect, generate, and its error handling."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gps.traces.cli import main
from gps.traces.io import load_trace
from gps.traces.jsonl import read_routing_jsonl
from gps.traces.trace import LoadSeries, TokenTrace


def _jsonl(path: Path, *, drop_last_layer: bool = False) -> Path:
    records = [
        {
            "dataset": "d",
            "problem_id": p,
            "layer": layer,
            "experts": [(p + t + layer) % 4, (p + t + layer + 2) % 4],
            "gating_probs": [0.6, 0.4],
            "token_idx": t,
        }
        for p in (0, 1)
        for t in range(3)
        for layer in range(2)
    ]
    if drop_last_layer:
        records.pop()
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_convert_jsonl_matches_the_library(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _jsonl(tmp_path / "r.jsonl")
    out = tmp_path / "r.npz"
    assert main(["convert", str(src), str(out), "--num-experts", "4", "--model", "m"]) == 0
    assert "T=6 tokens" in capsys.readouterr().out
    trace = load_trace(out)
    expected = read_routing_jsonl(src, num_experts=4)
    assert np.array_equal(trace.experts, expected.experts)
    assert np.array_equal(trace.scores, expected.scores)
    assert trace.meta["model"] == "m"


def test_convert_field_options_and_storage(tmp_path: Path) -> None:
    src = tmp_path / "s.jsonl"
    rows = [
        {"rid": "a", "l": layer, "ids": [layer, 2], "pos": t} for t in (0, 1) for layer in (0, 1)
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "s.npz"
    argv = ["convert", str(src), str(out), "--layer-field", "l", "--experts-field", "ids"]
    argv += ["--token-field", "pos", "--sequence-fields", "rid", "--no-scores", "--no-domain"]
    assert main([*argv, "--num-experts", "3", "--no-compress"]) == 0
    trace = load_trace(out)
    assert trace.scores is None and trace.domain is None and trace.num_experts == 3
    assert trace.experts[:, 1].tolist() == [[1, 2], [1, 2]]
    with zipfile.ZipFile(out) as zf:
        assert zf.getinfo("experts.npy").compress_type == zipfile.ZIP_STORED
    again = tmp_path / "again.npz"  # npz -> npz switches storage, keeps content
    assert main(["convert", str(out), str(again)]) == 0
    with zipfile.ZipFile(again) as zf:
        assert zf.getinfo("experts.npy").compress_type == zipfile.ZIP_DEFLATED
    assert np.array_equal(load_trace(again).experts, trace.experts)


def test_convert_reports_dropped_tokens_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = _jsonl(tmp_path / "r.jsonl", drop_last_layer=True)
    out = tmp_path / "r.npz"
    assert main(["convert", str(src), str(out), "--num-experts", "4"]) == 0
    assert "warning: " in capsys.readouterr().err and load_trace(out).num_tokens == 5
    assert main(["convert", str(src), str(out), "--missing-layers", "error"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gps-trace: error: ") and f"{src}:" in err and "'layer'" in err
    assert main(["convert", str(src), str(out), "--num-experts", "2"]) == 2
    assert "outside [0, 2)" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "none.jsonl"), str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["convert", str(out), str(src), str(out)]) == 2
    assert "exactly one .npz" in capsys.readouterr().err


def test_inspect_prints_summary_and_table(
    mixtral_trace_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["inspect", str(mixtral_trace_path), "--batch-size", "32", "--ep", "4"]) == 0
    out = capsys.readouterr().out
    assert "T=577 tokens, L=32 layers, top-2 of E=8 experts, 4 sequences" in out
    assert "Mixtral-8x7B" in out
    assert len(out.splitlines()) > 10  # the statistics table follows the header


def test_inspect_writes_plots(
    tmp_path: Path, mixtral_trace_path: Path, capsys: pytest.CaptureFixture
) -> None:
    plots = tmp_path / "plots"
    assert main(["inspect", str(mixtral_trace_path), "--plots", str(plots)]) == 0
    written = [
        line.split("plot: ", 1)[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("plot: ")
    ]
    assert written and all(Path(p).is_file() and Path(p).suffix == ".png" for p in written)


def test_inspect_rejects_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    assert main(["inspect", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_generate_preset_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for out in (a, b):
        argv = ["generate", "mixtral_mmlu_like", str(out), "--seed", "3", "--tokens", "256"]
        assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    first, second = load_trace(a), load_trace(b)
    assert isinstance(first, TokenTrace) and first.num_tokens == 256
    assert np.array_equal(first.experts, second.experts)  # same seed, same trace
    assert main(["generate", "mixtral_mmlu_like", str(b), "--seed", "4", "--tokens", "256"]) == 0
    assert not np.array_equal(first.experts, load_trace(b).experts)


def test_generate_load_series_preset_and_inspect_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "series.npz"
    assert main(["generate", "training_gpt_350m_like", str(out), "--seed", "0"]) == 0
    assert isinstance(load_trace(out), LoadSeries)
    assert main(["inspect", str(out), "--ep", "4"]) == 0
    assert "load series" in capsys.readouterr().out


def test_generate_unknown_preset_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["generate", "no_such_preset", str(tmp_path / "x.npz")]) == 2
    assert "no_such_preset" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_console_script_exit_status(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("gps-trace")
    if not script.exists():
        pytest.skip("gps-trace console script not installed in this environment")
    ok = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "inspect" in ok.stdout and "convert" in ok.stdout
    bad = subprocess.run(
        [script, "inspect", str(tmp_path / "none.npz")], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "no such file" in bad.stderr
    usage = subprocess.run([script, "frobnicate"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def test_inspect_and_gps_share_one_rule_for_60_experts_on_8_gpus(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Qwen1.5-MoE's 60 experts on 8 GPUs: ``gps-trace inspect --ep 8`` reports the per-GPU
    imbalance of exactly the placement ``gps`` prices (``static_slot_expert``), instead of
    refusing a G that does not divide E."""
    from gps.plans import static_slot_expert
    from gps.traces.batching import batch_loads
    from gps.traces.io import save_trace
    from gps.traces.stats import trace_stats
    from gps.traces.synthetic import SyntheticTraceConfig, generate_token_trace

    cfg = SyntheticTraceConfig(num_tokens=512, num_layers=2, num_experts=60, top_k=4, seed=5)
    trace = generate_token_trace(cfg)
    path = save_trace(tmp_path / "qwen.npz", trace)
    assert main(["inspect", str(path), "--ep", "8", "--batch-size", "128"]) == 0
    assert "E=60 experts" in capsys.readouterr().out
    slots = static_slot_expert(60, 8)  # what gps places: [G, R] expert ids, -1 empty
    loads = batch_loads(trace, 128).astype(float)  # [N, L, E]
    gpu = np.stack([loads[..., row[row >= 0]].sum(-1) for row in slots], axis=-1)  # [N, L, G]
    want = (gpu.max(-1) / gpu.mean(-1)).mean(axis=0)
    np.testing.assert_allclose(trace_stats(trace, batch_size=128, ep_degree=8).imbalance, want)
