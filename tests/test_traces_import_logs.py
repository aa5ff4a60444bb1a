"""Routing logs as people actually have them (issue 24): each test builds a small log with one
defect found in the wild, imports it with ``gps-trace convert`` and checks the summary; every
malformed input is one clear error (exit 2, no traceback) naming the file and the field."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from gps.app import CONF_DIR, run
from gps.traces import load_trace
from gps.traces.clean import drop_warmup
from gps.traces.cli import main as cli
from gps.traces.importers import (
    load_pickle,
    parse_layer_map,
    read_esft,
    read_pickled_arrays,
    whole_counts,
)
from gps.traces.synthetic import SyntheticTraceConfig, generate_token_trace
from gps.traces.trace import TokenTrace
from gps.traces.validate import TraceError

E, K = 60, 4  # Qwen1.5-MoE-A2.7B: 60 routed experts, top-4 (conf/model/qwen1_5_moe_a2_7b.yaml)
SMALL_RUN = ["predictor=fast", "report=minimal", "strategy.ilp=false",
             "strategy.capacity_factors=[1.0]", "report.guidelines=false"]  # fmt: skip


def _routing(layers: int, sequences: int, length: int, seed: int = 0) -> TokenTrace:
    cfg = SyntheticTraceConfig(num_tokens=sequences * length, num_layers=layers, num_experts=E,
                               top_k=K, min_sequence_length=length,
                               max_sequence_length=length, seed=seed)  # fmt: skip
    return generate_token_trace(cfg)


def _records(trace: TokenTrace, layers: list[int], logged_as: list[int] | None = None,
             rid: str = "req", **extra) -> list[dict]:  # fmt: skip
    """SGLang-style records ``{"rid", "pos", "layer_id", "topk_ids", "topk_weights", "token"}``
    of ``layers`` of ``trace``, logged under the numbers ``logged_as`` (default: the same)."""
    out = []
    for t in range(trace.num_tokens):
        for layer, logged in zip(layers, logged_as or layers, strict=True):
            out.append({
                "rid": f"{rid}{int(trace.sequence_id[t])}", "pos": int(trace.position[t]),
                "layer_id": logged, "topk_ids": trace.experts[t, layer].tolist(),
                "topk_weights": [0.4, 0.3, 0.2, 0.1], "token": int(trace.token_id[t]), **extra,
            })  # fmt: skip
    return out


def _write(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


SGLANG_FIELDS = ["--layer-field", "layer_id", "--experts-field", "topk_ids", "--scores-field",
                 "topk_weights", "--token-field", "pos", "--sequence-fields", "rid",
                 "--token-id-field", "token", "--no-domain", "--num-experts", str(E)]  # fmt: skip


def _convert(capsys, *args: str) -> tuple[int, str, str]:
    code = cli(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _fails(capsys, path: Path | str, field: str, *args: str) -> str:
    """``gps-trace`` exits 2 with one line naming ``path`` (once) and ``field``."""
    code, _, err = _convert(capsys, *args)
    lines = [line for line in err.splitlines() if line.startswith("gps-trace: error:")]
    assert code == 2 and len(lines) == 1, err
    assert f"{path}" in lines[0] and f"field '{field}'" in lines[0], lines[0]
    assert lines[0].count(str(path)) == 1, lines[0]  # the file is named once
    return lines[0]


# ---------------------------------------------------------------- header and metadata lines


def test_header_and_comment_lines_are_skipped_and_reported(tmp_path, capsys):
    trace = _routing(layers=2, sequences=2, length=5)
    header = {"model": "Qwen/Qwen1.5-MoE-A2.7B", "engine": "vllm 0.8.5", "num_layers": 24}
    log = _write(tmp_path / "run.jsonl", ["# routing logger v2", header,
                                         *_records(trace, [0, 1])])  # fmt: skip
    code, out, _ = _convert(capsys, log, tmp_path / "out.npz", *SGLANG_FIELDS)
    assert code == 0
    assert "skipped 2 header/metadata/comment lines (run.jsonl:1, run.jsonl:2)" in out
    got = load_trace(tmp_path / "out.npz")
    assert got.num_tokens == 10 and got.num_layers == 2
    assert got.meta["header"] == [{"line": "run.jsonl:2", **header}]
    np.testing.assert_array_equal(got.experts, trace.experts)  # same order: rid0, rid1


def test_only_headers_is_an_empty_log(tmp_path, capsys):
    log = _write(tmp_path / "h.jsonl", [{"model": "x"}, "# nothing else"])
    message = _fails(capsys, log, "layer_id", log, tmp_path / "o.npz", *SGLANG_FIELDS)
    assert "no routing records (2 header/metadata lines)" in message


# ---------------------------------------------------------------- layers logged in separate runs


def test_runs_that_each_logged_some_layers_merge_with_a_layer_map(tmp_path, capsys):
    """A logger recorded MoE layers 0 and 12 in one run, 23 in another, over the same prompts
    (and 5 warm-up-free tokens each): one trace of 3 layers, coverage recorded."""
    trace = _routing(layers=3, sequences=3, length=6, seed=1)
    a = _write(tmp_path / "run_a.jsonl", _records(trace, [0, 1], logged_as=[0, 12]))
    b = _write(tmp_path / "run_b.jsonl", _records(trace, [2], logged_as=[23]))
    message = _fails(capsys, a, "layer_id", a, b, tmp_path / "o.npz", *SGLANG_FIELDS)
    assert "--layer-map 0:0,12:12,23:23" in message  # the fix, spelled out
    code, out, _ = _convert(capsys, a, b, tmp_path / "o.npz", *SGLANG_FIELDS,
                            "--layer-map", "0:0,12:12,23:23")  # fmt: skip
    assert code == 0
    assert "MoE layers covered: 3 (the model's MoE layers [0, 12, 23])" in out
    assert "merged run run_a.jsonl: layers [0, 12]" in out and "run_b.jsonl: layers [23]" in out
    got = load_trace(tmp_path / "o.npz")
    assert got.meta["moe_layers"] == [0, 12, 23] and got.num_tokens == 18
    np.testing.assert_array_equal(np.sort(got.experts, -1), np.sort(trace.experts, -1))


def test_runs_that_disagree_on_a_token_are_refused_naming_both_files(tmp_path, capsys):
    trace = _routing(layers=2, sequences=2, length=4, seed=2)
    a = _write(tmp_path / "a.jsonl", _records(trace, [0]))
    other = _records(trace, [1])
    other[5]["token"] = other[5]["token"] + 1  # this run replayed another prompt
    b = _write(tmp_path / "b.jsonl", other)
    code, _, err = _convert(capsys, a, b, tmp_path / "o.npz", *SGLANG_FIELDS)
    assert code == 2 and "b.jsonl:6: field 'token'" in err and "a.jsonl:" in err
    assert "same prompts" in err


def test_layer_map_errors(tmp_path, capsys):
    trace = _routing(layers=2, sequences=1, length=4)
    log = _write(tmp_path / "r.jsonl", _records(trace, [0, 1], logged_as=[3, 7]))
    out = tmp_path / "o.npz"
    _fails(capsys, f"{log}:2", "layer_id", log, out, *SGLANG_FIELDS, "--layer-map", "3:0")
    code, _, err = _convert(capsys, log, out, *SGLANG_FIELDS, "--layer-map", "3-0")
    assert code == 2 and "--layer-map '3-0': expected LOGGED:MOE pairs" in err
    with pytest.raises(ValueError, match="two logged layers map to one MoE layer"):
        parse_layer_map("3:0,7:0")


# ---------------------------------------------------------------- a subset of layers is priced


def _gps(tmp_path: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL_RUN, f"cache_dir={tmp_path / 'cache'}",
                                           *overrides])  # fmt: skip
    run(cfg, tmp_path / "run")
    return json.loads((tmp_path / "run" / "results.json").read_text())


def test_a_trace_of_some_layers_is_priced_on_those_and_the_report_says_so(tmp_path, capsys):
    """5 of Qwen1.5-MoE's 24 MoE layers, 60 experts on 8 GPUs: ``gps`` runs, prices those 5
    layers and states the coverage; without the map it names the fix."""
    covered = [0, 6, 12, 18, 23]
    trace = _routing(layers=5, sequences=8, length=64, seed=3)
    log = _write(tmp_path / "log.jsonl", _records(trace, list(range(5)), logged_as=covered))
    out = tmp_path / "qwen_5_layers.npz"
    layer_map = ",".join(f"{c}:{c}" for c in covered)
    assert _convert(capsys, log, out, *SGLANG_FIELDS, "--layer-map", layer_map)[0] == 0
    model = [
        "model=qwen1_5_moe_a2_7b",
        f"evaluation.trace_path={out}",
        "workload.batch_size=1",
        "workload.seq_len=64",
        "evaluation.train_batches=4",
        "evaluation.test_batches=2",
    ]
    res = _gps(tmp_path, *model)
    assert res["setup"]["layer_coverage"] == {"moe_layers": covered, "of": 24}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "covers 5 of the model's 24 MoE layers (MoE layers 0, 6, 12, 18, 23)" in report
    base = next(s for s in res["strategies"] if s["name"] == "no_balancing")
    assert len(base["gpu_load"]) == 8  # 60 experts on 8 GPUs (the last GPU holds 4)
    # the covered layers alone: no once-per-step part blends into their speed-ups
    assert base["breakdown_s"]["non_moe"] == 0.0 and base["breakdown_s"]["engine"] == 0.0
    layers = sum(v for k, v in base["breakdown_s"].items() if k not in ("non_moe", "engine"))
    assert base["e2e_time_s"] == pytest.approx(layers, rel=1e-9)
    # priced on 5 layers: the same step on all 24 layers of the model takes longer
    full = _routing(layers=24, sequences=8, length=64, seed=3)
    from gps.traces.io import save_trace

    save_trace(tmp_path / "full.npz", full)
    whole = _gps(tmp_path / "w", *model[:1], f"evaluation.trace_path={tmp_path / 'full.npz'}",
                 *model[2:])  # fmt: skip
    assert whole["setup"]["layer_coverage"] is None
    whole_base = next(s for s in whole["strategies"] if s["name"] == "no_balancing")
    assert base["e2e_time_s"] < 0.5 * whole_base["e2e_time_s"]

    unmapped = tmp_path / "unmapped.npz"
    save_trace(unmapped, trace)
    with pytest.raises(ValueError, match=r"L=5 MoE layers.*convert it with gps-trace convert "
                                         r"--layer-map"):  # fmt: skip
        _gps(tmp_path / "u", model[0], f"evaluation.trace_path={unmapped}", *model[2:])


# ---------------------------------------------------------------- warm-up and dummy passes


def test_warmup_and_dummy_passes_are_dropped_and_counted(tmp_path, capsys):
    """A dummy pass of one repeated token (vLLM's profile run: token id 0 everywhere, so every
    token routes alike), a record the logger flagged, then real requests."""
    real = _routing(layers=2, sequences=3, length=8, seed=4)
    dummy = _routing(layers=2, sequences=1, length=16, seed=5)
    dummy = TokenTrace(experts=np.repeat(dummy.experts[:1], 16, axis=0),
                       token_id=np.zeros(16, np.int32), sequence_id=dummy.sequence_id,
                       position=dummy.position, num_experts=E)  # fmt: skip
    flagged = _records(real, [0, 1], rid="warm")[:2]  # one token of a flagged request
    for r in flagged:
        r["is_warmup"] = True
    log = _write(tmp_path / "w.jsonl", [*_records(dummy, [0, 1], rid="dummy"), *flagged,
                                        *_records(real, [0, 1])])  # fmt: skip
    out = tmp_path / "o.npz"
    code, text, _ = _convert(capsys, log, out, *SGLANG_FIELDS)
    assert code == 0
    assert ("warm-up/dummy passes dropped: 2 sequences, 17 tokens (flagged 1, constant input 1)"
            in text)  # fmt: skip
    got = load_trace(out)
    assert got.num_tokens == 24 and got.meta["warmup"]["by_reason"] == {
        "flagged": 1, "constant_input": 1}  # fmt: skip
    code, text, _ = _convert(capsys, log, out, *SGLANG_FIELDS, "--skip-first", "3")
    assert "3 sequences, 25 tokens (skip first 3)" in text and load_trace(out).num_tokens == 16
    code, text, _ = _convert(capsys, log, out, *SGLANG_FIELDS, "--keep-warmup")
    assert "warm-up" not in text and load_trace(out).num_tokens == 41


def test_constant_input_without_token_ids_is_told_by_its_routing():
    real = _routing(layers=3, sequences=2, length=6, seed=6)
    same = np.repeat(real.experts[:1], 6, axis=0)  # identical routing at every layer
    trace = TokenTrace(
        experts=np.concatenate([same, real.experts]), token_id=np.full(18, -1, np.int32),
        sequence_id=np.repeat(np.array([9, 0, 1], np.int32), 6),
        position=np.tile(np.arange(6, dtype=np.int32), 3), num_experts=E,
    )  # fmt: skip
    kept = drop_warmup(trace)
    assert kept.num_tokens == 12 and kept.meta["warmup"]["examples"] == [
        {"sequence": 9, "reason": "constant_input", "tokens": 6}]  # fmt: skip
    with pytest.raises(ValueError, match="every one of the 3 sequences looks like warm-up"):
        drop_warmup(trace, skip_first=3)


# ---------------------------------------------------------------- concurrent decode requests


def test_a_decode_log_of_concurrent_requests_is_split_by_sequence(tmp_path, capsys):
    """Six requests decoded together, each 40 tokens: ``gps workload=decode`` serves the last
    three and fits the token predictors on the first three; serving all six names the fix."""
    trace = _routing(layers=24, sequences=6, length=40, seed=7)
    log = _write(tmp_path / "decode.jsonl", _records(trace, list(range(24))))
    out = tmp_path / "decode.npz"
    assert _convert(capsys, log, out, *SGLANG_FIELDS)[0] == 0
    decode = ["model=qwen1_5_moe_a2_7b", f"evaluation.trace_path={out}", "workload=decode",
              "workload.context_len=512", "evaluation.train_batches=8",
              "evaluation.test_batches=4"]  # fmt: skip
    res = _gps(tmp_path, *decode, "workload.batch_size=3")
    assert res["setup"]["phase"] == "decode" and res["setup"]["tokens_per_step"] == 3
    assert {"baseline", "token", "distribution"} <= {s["family"] for s in res["strategies"]}
    with pytest.raises(ValueError, match=r"holds 6, so no request is left to fit .* lower "
                                         r"workload\.batch_size to 3 or less"):  # fmt: skip
        _gps(tmp_path / "all", *decode, "workload.batch_size=6")


# ---------------------------------------------------------------- pickled dicts of arrays


def test_pickled_dict_of_per_layer_arrays_imports_without_running_code(tmp_path, capsys):
    trace = _routing(layers=3, sequences=2, length=5, seed=8)
    dump = {
        f"model.layers.{i + 1}.mlp.gate": trace.experts[:, i].astype(np.int64) for i in range(3)
    }  # decoder layers 1..3 (layer 0 dense), as a profiler keys them
    dump["input_ids"] = trace.token_id
    path = tmp_path / "routing.pkl"
    path.write_bytes(pickle.dumps(dump))
    _fails(capsys, path, "layer", path, tmp_path / "o.npz", "--format", "pickle")
    code, out, _ = _convert(capsys, path, tmp_path / "o.npz", "--format", "pickle",
                            "--num-experts", E, "--layer-map", "1:0,2:1,3:2")  # fmt: skip
    assert code == 0 and "token trace: T=10 tokens, L=3 layers, top-4 of E=60" in out
    got = load_trace(tmp_path / "o.npz")
    np.testing.assert_array_equal(got.experts, trace.experts)
    np.testing.assert_array_equal(got.token_id, trace.token_id)
    # the ids/weights-per-layer layout, pickled with protocol 2 (numpy's _reconstruct path)
    nested = {
        "topk_ids": {i: trace.experts[:, i] for i in range(3)},
        "topk_weights": {i: np.full((10, K), 0.25, np.float32) for i in range(3)},
    }
    path.write_bytes(pickle.dumps(nested, protocol=2))
    got = read_pickled_arrays(path, num_experts=E)
    assert got.scores is not None and got.num_layers == 3


class _Payload:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned",)


def test_pickle_that_names_other_code_is_refused_and_never_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({0: np.zeros((2, 2), np.int64), 1: _Payload()}))
    message = _fails(capsys, path, "<pickle>", path, tmp_path / "o.npz", "--format", "pickle")
    assert "refusing to load global" in message and not (tmp_path / "pwned").exists()
    torchish = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00."
    path.write_bytes(torchish)
    with pytest.raises(TraceError, match="holds torch objects"):
        load_pickle(path)
    path.write_bytes(pickle.dumps({}))
    _fails(capsys, path, "<pickle>", path, tmp_path / "o.npz", "--format", "pickle")


def test_pickled_router_logits_route_with_the_models_rule(tmp_path):
    rng = np.random.default_rng(9)
    logits = {f"layer_{i}": rng.normal(size=(12, 8)).astype(np.float32) for i in range(2)}
    path = tmp_path / "logits.pkl"
    path.write_bytes(pickle.dumps(logits))
    config = {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2,
              "num_hidden_layers": 2}  # fmt: skip
    with pytest.raises(TraceError, match=r"field 'layer 0': \[T, E\] floats .* --hf-config"):
        read_pickled_arrays(path)
    trace = read_pickled_arrays(path, hf_config=config)
    want = np.argsort(-logits["layer_1"], axis=1)[:, :2]
    np.testing.assert_array_equal(np.sort(trace.experts[:, 1], 1), np.sort(want, 1))


# ---------------------------------------------------------------- each review defect: one error


def _sglang_json(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_counts_take_whole_number_floats_and_refuse_fractions(tmp_path, capsys):
    path = _sglang_json(tmp_path / "c.json", {"counts": {"a": [[3.0, 1.0], [2.0, 2.0]]}})
    assert _convert(capsys, path, tmp_path / "o.npz", "--format", "counts")[0] == 0
    assert load_trace(tmp_path / "o.npz").counts.tolist() == [[[3, 1], [2, 2]]]
    _sglang_json(path, {"counts": {"a": [[3.0, 1.5], [2.0, 2.0]]}})
    message = _fails(capsys, path, "a", path, tmp_path / "o.npz", "--format", "counts")
    assert "value 1.5 at index (0, 1) is not a whole number" in message
    assert whole_counts(np.array([2.0, 0.0]), "x", "f").dtype == np.int64
    _sglang_json(path, {"counts": {"a": [[]]}})
    _fails(capsys, path, "a", path, tmp_path / "o.npz", "--format", "counts")


def test_sglang_statistics_as_json_read_like_the_pt_dump(tmp_path, capsys):
    rng = np.random.default_rng(10)
    counts = rng.integers(0, 40, size=(3, 2, 8)).astype(float)
    path = _sglang_json(tmp_path / "expert_distribution.json", {"logical_count": counts.tolist()})
    code, out, _ = _convert(capsys, path, tmp_path / "o.npz", "--format",
                            "sglang-expert-distribution")  # fmt: skip
    assert code == 0 and "load series: S=3 steps, L=2 layers, E=8 experts" in out
    assert (load_trace(tmp_path / "o.npz").counts == counts.astype(int)).all()
    _sglang_json(path, {"logical_count": counts[0].tolist()})  # --init-expert-location's [L, E]
    assert _convert(capsys, path, tmp_path / "o.npz", "--format",
                    "sglang-expert-distribution")[0] == 0  # fmt: skip
    fmt = ["--format", "sglang-expert-distribution"]
    _sglang_json(path, {"logical_count": np.zeros((4, 2, 8)).tolist()})
    message = _fails(capsys, path, "logical_count", path, tmp_path / "o.npz", *fmt)
    assert "all 4 steps count zero tokens" in message
    _sglang_json(path, {"records": [{"forward_pass_id": 0,
                                     "global_physical_count": [[1, 2, 3]]}],
                        "last_physical_to_logical_map": [[0, -1, 1]]})  # fmt: skip
    message = _fails(capsys, path, "last_physical_to_logical_map", path, tmp_path / "o.npz", *fmt)
    assert "expert id -1 at index (0, 1)" in message


def test_sglang_error_names_the_file_once(tmp_path, capsys):
    path = tmp_path / "expert_distribution_recorder_1.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/other.txt", "no pickle here")
    _fails(capsys, path, "data.pkl", path, tmp_path / "o.npz", "--format",
           "sglang-expert-distribution")  # fmt: skip


def test_arrays_refuse_a_vector_num_experts_and_empty_arrays(tmp_path, capsys):
    path = tmp_path / "a.npz"
    np.savez(path, experts=np.tile(np.int16([0, 1]), (4, 1, 1)), num_experts=np.array([8, 8]))
    message = _fails(capsys, path, "num_experts", path, tmp_path / "o.npz", "--format", "arrays")
    assert "expected one integer E" in message
    np.savez(path, experts=np.zeros((0, 2, 2), np.int16))
    message = _fails(capsys, path, "experts", path, tmp_path / "o.npz", "--format", "arrays",
                     "--num-experts", "8")  # fmt: skip
    assert "no tokens" in message


def _hf(tmp_path: Path, layers: int, hidden_layers: int, t: int = 6, **config) -> tuple:
    np.savez(tmp_path / "logits.npz", **{f"layer_{i}": np.zeros((t, 8), np.float32)
                                         for i in range(layers)})  # fmt: skip
    cfg = {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2,
           "num_hidden_layers": hidden_layers, **config}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path / "logits.npz", tmp_path / "config.json"


def test_hf_router_logits_errors(tmp_path, capsys):
    fmt = ["--format", "hf-router-logits"]
    path, config = _hf(tmp_path, layers=3, hidden_layers=2)
    message = _fails(capsys, path, "layer_2", path, tmp_path / "o.npz", *fmt,
                     "--hf-config", config)  # fmt: skip
    assert "3 layers of router logits, but" in message and "describes 2 MoE layers" in message
    path, config = _hf(tmp_path, layers=2, hidden_layers=2, t=0)
    _fails(capsys, path, "layer_0", path, tmp_path / "o.npz", *fmt, "--hf-config", config)
    path, config = _hf(tmp_path, layers=2, hidden_layers=2, num_experts_per_tok=None)
    message = _fails(capsys, config, "num_experts_per_tok", path, tmp_path / "o.npz", *fmt,
                     "--hf-config", config)  # fmt: skip
    assert "model_type" not in message


def _esft(root: Path, lengths: list[int], k: int = 6) -> Path:
    rng = np.random.default_rng(11)
    folder = root / "expert_scores" / "law"
    folder.mkdir(parents=True)
    lines = []
    for i, n in enumerate(lengths):
        ids = np.concatenate([rng.permutation(64)[:k] for _ in range(n)])
        if i == 0:  # the first line's tokens share no expert: alone it reads as top-(n*k)
            ids = rng.permutation(64)[: n * k]
        w = np.round(rng.random(n * k), 4)
        lines.append("\t".join(map(str, ids)) + "\t\t" + "\t".join(map(str, w)))
    (folder / "expert_weights_1.txt").write_text("\n".join(lines) + "\n")
    return root


def test_esft_top_k_is_checked_on_every_line(tmp_path, capsys):
    """A first line of 2 tokens reads as top-12 on its own (the old reader took it); every line
    rules it out, and ``--top-k`` is checked on every line."""
    root = _esft(tmp_path, [2, 4, 6])
    file = root / "expert_scores" / "law" / "expert_weights_1.txt"
    with pytest.warns(UserWarning, match="inferred k = 6"):
        assert read_esft(root).top_k == 6
    assert read_esft(root, top_k=6).meta["top_k_inferred"] is False
    message = _fails(capsys, file, "experts", root, tmp_path / "o.npz", "--format", "esft",
                     "--top-k", "12")  # fmt: skip
    assert "repeats an expert in its top-12" in message and "(wrong --top-k?)" in message
    other = _esft(tmp_path / "b", [2, 5, 6])
    file = other / "expert_scores" / "law" / "expert_weights_1.txt"
    with pytest.warns(UserWarning, match="inferred k = 6"):
        assert read_esft(other).top_k == 6
    message = _fails(capsys, f"{file}:2", "experts", other, tmp_path / "o.npz", "--format",
                     "esft", "--top-k", "12")  # fmt: skip
    assert "30 ids: not a multiple of top-k 12" in message
