"""Importers (``gps-trace convert --format``), routing rules and the recorder's torch-free logic."""

from __future__ import annotations

import collections
import json
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gps.traces import load_trace
from gps.traces.cli import main as cli_main
from gps.traces.importers import (
    read_arrays,
    read_counts,
    read_esft,
    read_hf_router_logits,
    read_sglang_expert_distribution,
)
from gps.traces.record import find_routers, read_prompts
from gps.traces.routing import ARCHITECTURES, RoutingRule, logits_to_trace, route, rule_from_config
from gps.traces.shared import shared_traces_dir
from gps.traces.torch_pickle import load_torch_file
from gps.traces.validate import TraceError

SHARED = shared_traces_dir()
ESFT_NPZ = SHARED / "deepseek_v2_lite_esft" / "esft_routing_compact.npz"
COUNTS_JSON = SHARED / "olmoe_mixtral_domain_counts" / "olmoe_mixtral_expert_counts.json"


def _toy_arrays(rng: np.random.Generator, t: int = 40, layers: int = 3, k: int = 2, e: int = 8):
    experts = np.stack([rng.permutation(e)[:k] for _ in range(t * layers)]).reshape(t, layers, k)
    scores = rng.random((t, layers, k)).astype(np.float16) + np.float16(0.01)
    domain = np.repeat([0, 1], t // 2).astype(np.uint8)
    seq = np.tile(np.repeat([0, 1], t // 4), 2).astype(np.int16)  # restarts in each domain
    pos = np.tile(np.arange(t // 4), 4).astype(np.int16)
    return experts.astype(np.uint8), scores, domain, seq, pos


# ---------------------------------------------------------------- arrays


def test_arrays_keys_sequences_by_domain_and_sorts_best_first(tmp_path):
    experts, scores, domain, seq, pos = _toy_arrays(np.random.default_rng(0))
    path = tmp_path / "a.npz"
    np.savez(path, expert_ids=experts, gate_weights=scores, domain=domain, seq=seq, pos=pos,
             domains=np.array(["x", "y"]))  # fmt: skip
    trace = read_arrays(path, num_experts=8)
    assert trace.num_tokens == 40 and trace.top_k == 2
    assert np.unique(trace.sequence_id).size == 4  # (domain, seq) pairs, not 2 seq numbers
    assert trace.meta["domains"] == ["x", "y"]
    assert (np.diff(trace.scores.astype(np.float32), axis=-1) <= 0).all()  # best first
    np.testing.assert_allclose(trace.scores.astype(np.float32).sum(-1), 1.0, atol=2e-3)
    assert (np.sort(trace.experts, -1) == np.sort(experts, -1)).all()  # same expert sets
    kept = read_arrays(path, num_experts=8, sort_by_score=False, renormalise=False)
    assert (kept.experts == experts).all() and (kept.scores == scores).all()


def test_arrays_npy_alone_is_one_sequence(tmp_path):
    experts = _toy_arrays(np.random.default_rng(1))[0]
    np.save(tmp_path / "e.npy", experts)
    with pytest.warns(UserWarning, match="inferred"):
        trace = read_arrays(tmp_path / "e.npy")
    assert trace.scores is None and (trace.sequence_id == 0).all()
    assert (trace.position == np.arange(40)).all()


def test_arrays_id_out_of_range_names_file_and_field(tmp_path):
    experts = _toy_arrays(np.random.default_rng(2))[0]
    experts[5, 1, 0] = 9
    np.savez(tmp_path / "bad.npz", experts=experts)
    with pytest.raises(
        TraceError, match=r"bad\.npz: field 'experts': value 9 at index \(5, 1, 0\)"
    ):
        read_arrays(tmp_path / "bad.npz", num_experts=8)
    np.savez(tmp_path / "none.npz", ids=experts)
    with pytest.raises(TraceError, match=r"none\.npz: field 'experts': missing"):
        read_arrays(tmp_path / "none.npz")
    with pytest.raises(TraceError, match=r"field 'wrong': missing"):
        read_arrays(tmp_path / "none.npz", fields={"experts": "wrong"})


@pytest.mark.skipif(not ESFT_NPZ.is_file(), reason=f"real ESFT routing absent: {ESFT_NPZ}")
def test_arrays_converts_esft_with_one_command(tmp_path):
    out = tmp_path / "esft.npz"
    assert cli_main(["convert", "--format", "arrays", str(ESFT_NPZ), str(out),
                     "--num-experts", "64"]) == 0  # fmt: skip
    trace = load_trace(out)
    assert (trace.num_tokens, trace.num_layers, trace.top_k, trace.num_experts) == (
        33279, 26, 6, 64,
    )  # fmt: skip
    assert np.unique(trace.sequence_id).size == 213  # as the shared README says
    assert trace.meta["domains"] == ["intent", "law", "summary", "translation"]


# ---------------------------------------------------------------- esft


def _write_esft(root: Path, tasks: dict[str, list[int]], layers: int, k: int, rng) -> None:
    for task, lengths in tasks.items():
        folder = root / "expert_scores" / task
        folder.mkdir(parents=True)
        for layer in range(1, layers + 1):
            lines = []
            for n in lengths:
                ids = np.concatenate([rng.permutation(16)[:k] for _ in range(n)])
                w = np.round(rng.random(n * k), 4)
                lines.append("\t".join(map(str, ids)) + "\t\t" + "\t".join(map(str, w)))
            (folder / f"expert_weights_{layer}.txt").write_text("\n".join(lines) + "\n")


def test_esft_folders_become_domains_and_sequences(tmp_path):
    _write_esft(tmp_path, {"law": [5, 3], "intent": [4]}, layers=3, k=3,
                rng=np.random.default_rng(3))  # fmt: skip
    trace = read_esft(tmp_path, num_experts=16, top_k=3)
    assert (trace.num_tokens, trace.num_layers, trace.top_k) == (12, 3, 3)
    assert trace.meta["domains"] == ["intent", "law"] and trace.meta["layers"] == [1, 2, 3]
    assert trace.sequence_id.tolist() == [0] * 4 + [1] * 5 + [2] * 3
    assert trace.position.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2]


def test_esft_missing_layer_names_the_file(tmp_path):
    _write_esft(tmp_path, {"law": [2], "intent": [2]}, layers=2, k=2, rng=np.random.default_rng(4))
    (tmp_path / "expert_scores" / "law" / "expert_weights_2.txt").unlink()
    with pytest.raises(TraceError, match=r"law: field 'expert_weights_2\.txt': missing layer"):
        read_esft(tmp_path, num_experts=16, top_k=2)


# ---------------------------------------------------------------- routing rules


def _config(model_type: str, **extra) -> dict:
    base = {
        "mixtral": {"num_local_experts": 8, "num_experts_per_tok": 2},
        "qwen2_moe": {"num_experts": 60, "num_experts_per_tok": 4},
        "qwen3_moe": {"num_experts": 128, "num_experts_per_tok": 8},
        "olmoe": {"num_experts": 64, "num_experts_per_tok": 8},
        "deepseek_v2": {"n_routed_experts": 64, "num_experts_per_tok": 6},
        "deepseek_v3": {"n_routed_experts": 256, "num_experts_per_tok": 8, "n_group": 8,
                        "topk_group": 4},
    }[model_type]  # fmt: skip
    return {"model_type": model_type, **base, **extra}


@pytest.mark.parametrize(
    ("model_type", "e", "k", "scoring", "group", "norm"),
    [
        ("mixtral", 8, 2, "softmax", "none", True),
        ("qwen2_moe", 60, 4, "softmax", "none", False),
        ("qwen3_moe", 128, 8, "softmax", "none", True),
        ("olmoe", 64, 8, "softmax", "none", False),
        ("deepseek_v2", 64, 6, "softmax", "none", False),  # V2-Lite: topk_method greedy
        ("deepseek_v3", 256, 8, "sigmoid", "top2_sum", True),
    ],
)
def test_registry_reads_each_architecture(model_type, e, k, scoring, group, norm):
    rule = rule_from_config(_config(model_type))
    assert (rule.num_experts, rule.top_k, rule.scoring, rule.group_score, rule.norm_topk_prob) == (
        e, k, scoring, group, norm,
    )  # fmt: skip
    assert model_type in ARCHITECTURES


def test_registry_errors_name_the_field():
    with pytest.raises(ValueError, match=r"'model_type'.*gpt2"):
        rule_from_config({"model_type": "gpt2"})
    with pytest.raises(ValueError, match=r"cfg\.json: field 'num_experts_per_tok'"):
        rule_from_config({"model_type": "mixtral", "num_local_experts": 8}, "cfg.json")
    cfg = _config("deepseek_v2", topk_method="group_limited_greedy", n_group=8)
    with pytest.raises(ValueError, match="'topk_group'"):
        rule_from_config(cfg)


def test_softmax_topk_matches_brute_force():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(200, 16)).astype(np.float32)
    experts, weights = route(logits, RoutingRule(num_experts=16, top_k=4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    best = np.argsort(-probs, axis=-1)[:, :4]
    assert (experts == best).all()  # same experts, best first
    expect = np.take_along_axis(probs, best, -1)
    np.testing.assert_allclose(weights, expect / expect.sum(-1, keepdims=True), rtol=1e-5)


def test_grouped_topk_keeps_to_the_best_groups():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(500, 64)).astype(np.float32) * 2
    plain = RoutingRule(num_experts=64, top_k=6)
    grouped = RoutingRule(num_experts=64, top_k=6, n_group=8, topk_group=3, group_score="max")
    ids, _ = route(logits, grouped)
    groups = ids // 8
    assert max(np.unique(row).size for row in groups) <= 3
    probs = np.exp(logits)
    group_best = probs.reshape(500, 8, 8).max(-1)
    allowed = np.argsort(-group_best, axis=-1)[:, :3]
    assert all(set(g) <= set(a) for g, a in zip(groups, allowed, strict=True))
    assert (np.sort(route(logits, plain)[0], -1) != np.sort(ids, -1)).any(axis=1).any()


def test_noaux_tc_bias_steers_choice_not_weights():
    logits = np.zeros((3, 8), dtype=np.float32)
    logits[:, 0] = 1.0
    bias = np.zeros(8, dtype=np.float32)
    bias[5] = 10.0
    rule = RoutingRule(num_experts=8, top_k=2, scoring="sigmoid", n_group=2, topk_group=1,
                       group_score="top2_sum", norm_topk_prob=True)  # fmt: skip
    ids, weights = route(logits, rule, bias)
    assert (ids[:, 0] == 5).all()  # the bias wins the choice, and its group (4..7) only
    assert (ids // 4 == 1).all()
    np.testing.assert_allclose(weights[:, 0], 0.5, atol=1e-6)  # weights: sigmoid(0) each


def test_logits_to_trace_wrong_expert_count_names_the_layer():
    rule = RoutingRule(num_experts=8, top_k=2, model_type="mixtral")
    good = np.zeros((10, 8), dtype=np.float32)
    with pytest.raises(TraceError, match=r"run\.npz: field 'layer_1': .*num_experts=8"):
        logits_to_trace([good, np.zeros((10, 7))], rule, origin="run.npz")


def _hf_files(tmp_path: Path, layers: dict[str, np.ndarray], model_type="mixtral",
              num_hidden_layers=3, **extra):  # fmt: skip
    np.savez(tmp_path / "logits.npz", **layers, **extra)
    config = _config(model_type, num_hidden_layers=num_hidden_layers)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "logits.npz", tmp_path / "config.json"


def test_hf_router_logits_drops_padding_and_checks_layers(tmp_path):
    rng = np.random.default_rng(7)
    logits = {f"layer_{i}": rng.normal(size=(2 * 5, 8)).astype(np.float32) for i in range(3)}
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    path, cfg = _hf_files(
        tmp_path, logits, attention_mask=mask, input_ids=np.arange(10).reshape(2, 5)
    )
    trace = read_hf_router_logits(path, cfg)
    assert trace.num_tokens == 8 and trace.num_layers == 3 and trace.num_experts == 8
    assert trace.sequence_id.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert trace.position.tolist() == [0, 1, 2, 0, 1, 2, 3, 4]
    assert trace.token_id.tolist() == [0, 1, 2, 5, 6, 7, 8, 9]
    expect = route(logits["layer_2"], rule_from_config(_config("mixtral")))[0]
    assert (trace.experts[:, 2] == expect[mask.ravel() != 0]).all()

    del logits["layer_1"]
    path, cfg = _hf_files(tmp_path, logits)
    with pytest.raises(TraceError, match=r"logits\.npz: field 'layer_1': missing"):
        read_hf_router_logits(path, cfg)
    logits["layer_1"] = rng.normal(size=(10, 6))
    path, cfg = _hf_files(tmp_path, logits)
    with pytest.raises(TraceError, match=r"logits\.npz: field 'layer_1': router logits shape"):
        read_hf_router_logits(path, cfg)


# ---------------------------------------------------------------- SGLang dump


def _torch_save_like(obj: object, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write ``obj`` (numpy arrays as tensors) the way ``torch.save`` does.

    With torch installed this is ``torch.save`` itself; without it the same zip layout
    (``archive/data.pkl`` with ``torch._utils._rebuild_tensor_v2`` and persistent storage
    ids, ``archive/data/<key>``, ``archive/byteorder``) is written by hand.
    """
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:

        def to_torch(x):
            if isinstance(x, np.ndarray):
                return torch.from_numpy(x)
            if isinstance(x, dict):
                return {k: to_torch(v) for k, v in x.items()}
            if isinstance(x, list):
                return [to_torch(v) for v in x]
            return x

        torch.save(to_torch(obj), path)
        return
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = (
        "torch._utils",
        ("_rebuild_tensor_v2"),
    )
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_types = {}
    for dtype, name in ((np.int32, "IntStorage"), (np.int64, "LongStorage")):
        cls = type(name, (), {"__module__": "torch"})
        setattr(fake_torch, name, cls)
        storage_types[np.dtype(dtype)] = cls
    fake_torch._utils = fake_utils
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)
    storages: list[np.ndarray] = []

    class Storage:
        def __init__(self, array):
            self.key, self.array = str(len(storages)), array
            storages.append(array)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                cls = storage_types[obj.array.dtype]
                return ("storage", cls, obj.key, "cpu", obj.array.size)
            return None

        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray):
                a = np.ascontiguousarray(obj)
                stride = tuple(s // a.itemsize for s in a.strides)
                args = (Storage(a.ravel()), 0, a.shape, stride, False, collections.OrderedDict())
                return _rebuild_tensor_v2, args
            return NotImplemented

    import io

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buffer.getvalue())
        zf.writestr("archive/byteorder", "little")
        for i, array in enumerate(storages):
            zf.writestr(f"archive/data/{i}", array.astype(array.dtype.newbyteorder("<")).tobytes())


def test_sglang_stat_dump_becomes_a_load_series(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    counts = rng.integers(0, 50, size=(6, 4, 16)).astype(np.int32)
    counts[4] = 0  # a buffer slot never filled
    path = tmp_path / "expert_distribution_recorder_1700000000.0.pt"
    _torch_save_like({"rank": 0, "logical_count": counts,
                      "average_utilization_rate_over_window": None}, path, monkeypatch)  # fmt: skip
    series = read_sglang_expert_distribution(path)
    assert series.counts.shape == (5, 4, 16) and series.step.tolist() == [0, 1, 2, 3, 5]
    assert (series.counts == counts[[0, 1, 2, 3, 5]]).all()


def test_sglang_per_pass_dump_maps_physical_to_logical(tmp_path, monkeypatch):
    mapping = np.array([[0, 1, 2, 3, 0, 1]] * 2, dtype=np.int64)  # 6 physical slots, 4 experts
    count = np.array([[1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 1, 1]], dtype=np.int32)
    records = [{"forward_pass_id": 7, "rank": r, "global_physical_count": count} for r in (0, 1)]
    path = tmp_path / "d.pt"
    _torch_save_like({"records": records, "last_physical_to_logical_map": mapping}, path,
                     monkeypatch)  # fmt: skip
    series = read_sglang_expert_distribution(path)
    assert series.step.tolist() == [7]
    assert series.counts[0].tolist() == [[12, 16, 6, 8], [2, 2, 0, 0]]  # both ranks added


def test_torch_pickle_refuses_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}))
    with pytest.raises(ValueError, match=r"refusing to load global builtins\.print"):
        load_torch_file(tmp_path / "evil.pt")


# ---------------------------------------------------------------- counts


def test_counts_json_entries_become_steps(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"counts": {"m/a": [[1, 2], [3, 4]], "m/b": [[5, 6], [7, 8]],
                                           "other": [[0, 0], [0, 0]]}}))  # fmt: skip
    series = read_counts(path, prefix="m/", layers=[0, 7])
    assert series.counts.tolist() == [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    assert series.meta["step_names"] == ["m/a", "m/b"] and series.meta["layers"] == [0, 7]
    path.write_text(json.dumps({"a": [[1, 2], [3]]}))
    with pytest.raises(TraceError, match=r"c\.json: field 'a'"):
        read_counts(path)


@pytest.mark.skipif(not COUNTS_JSON.is_file(), reason=f"OLMoE/Mixtral counts absent: {COUNTS_JSON}")
def test_counts_reads_the_olmoe_repository_counts():
    series = read_counts(COUNTS_JSON, prefix="mistral/expert_counts/", layers=[0, 7, 15])
    assert series.counts.shape == (5, 3, 8)  # 5 domains, layers 0/7/15, 8 experts
    per_token = series.counts.sum(-1) / 2  # top-2: ~208,896 tokens per domain and layer
    assert (np.abs(per_token - 208_896) < 5_000).all()


# ---------------------------------------------------------------- recorder, torch-free parts


def test_find_routers_per_architecture():
    mixtral_old = [f"model.layers.{i}.block_sparse_moe.gate" for i in range(2)]
    assert find_routers(["model", *mixtral_old], ARCHITECTURES["mixtral"]) == mixtral_old
    qwen = ["model.layers.1.mlp.gate", "model.layers.1.mlp.shared_expert_gate",
            "model.layers.0.mlp.gate"]  # fmt: skip
    assert find_routers(qwen, ARCHITECTURES["qwen2_moe"]) == [
        "model.layers.0.mlp.gate", "model.layers.1.mlp.gate",
    ]  # fmt: skip
    deepseek = ["model.layers.0.mlp.gate_proj", "model.layers.1.mlp.gate"]  # layer 0 dense
    assert find_routers(deepseek, ARCHITECTURES["deepseek_v2"]) == ["model.layers.1.mlp.gate"]
    with pytest.raises(ValueError, match="no router module"):
        find_routers(["model.layers.0.mlp.up_proj"], ARCHITECTURES["olmoe"])


def test_read_prompts_txt_and_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("hello\n\nworld\n")
    assert [p.text for p in read_prompts(tmp_path / "p.txt")] == ["hello", "world"]
    (tmp_path / "p.jsonl").write_text(
        '{"input_ids": [1, 2], "dataset": "law"}\n{"text": "hi"}\n{"input_ids": [1, -2]}\n'
    )
    with pytest.raises(TraceError, match=r"p\.jsonl:3: field 'input_ids'"):
        read_prompts(tmp_path / "p.jsonl")


def test_cli_convert_format_errors_exit_2(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", experts=np.full((2, 1, 2), 3, dtype=np.int16))
    assert cli_main(["convert", "--format", "arrays", str(tmp_path / "x.npz"),
                     str(tmp_path / "o.npz"), "--num-experts", "8"]) == 2  # fmt: skip
    assert "field 'experts'" in capsys.readouterr().err and not (tmp_path / "o.npz").exists()


@pytest.mark.skipif(not ESFT_NPZ.is_file(), reason=f"real ESFT routing absent: {ESFT_NPZ}")
def test_gps_runs_end_to_end_on_converted_esft(tmp_path):
    """The quality bar: one documented convert command, then the advisor on real routing."""
    from hydra import compose, initialize_config_dir

    from gps.app import run

    esft = tmp_path / "esft.npz"
    assert cli_main(["convert", "--format", "arrays", str(ESFT_NPZ), str(esft),
                     "--num-experts", "64"]) == 0  # fmt: skip
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    overrides = ["model=deepseek_v2_lite", f"evaluation.trace_path={esft}",
                 "workload.batch_size=1", "workload.seq_len=256", "evaluation.train_batches=3",
                 "evaluation.test_batches=2", "predictor=fast", "strategy.ilp_time_limit_s=2",
                 "report=minimal"]  # fmt: skip
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run(cfg, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["evaluation"]["trace_path"] == str(esft)
    families = {s["family"] for s in results["strategies"]}
    assert {"baseline", "distribution", "token", "oracle"} <= families
