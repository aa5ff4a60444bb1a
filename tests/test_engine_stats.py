"""Engine load-statistics readers (``gps.traces.engine_stats``), the torch-free ``.pt`` writer
and the per-batch fluctuation model (``gps.traces.fluctuation``)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from gps.traces.engine_stats import (
    detect_format,
    read_engine_stats,
    read_sglang_dump,
    read_trtllm_statistic,
    read_vllm_eplb,
    sglang_stat_dump,
    stats_from_trace,
    trace_to_sglang_stat,
    write_sglang_dump,
)
from gps.traces.fluctuation import (
    FITTED_RHO,
    FluctuationModel,
    fit_fluctuation,
    fitted_model,
    request_chunks,
    within_token_factor,
)
from gps.traces.importers import read_sglang_expert_distribution
from gps.traces.torch_pickle import load_torch_file, save_torch_file
from gps.traces.trace import TokenTrace
from gps.traces.validate import TraceError


def _trace(
    rng: np.random.Generator, t: int = 120, layers: int = 3, k: int = 2, e: int = 8, seqs: int = 6
) -> TokenTrace:
    experts = np.argsort(rng.random((t, layers, e)), axis=-1)[..., :k].astype(np.int16)
    seq = np.repeat(np.arange(seqs), t // seqs).astype(np.int32)
    pos = np.tile(np.arange(t // seqs), seqs).astype(np.int32)
    return TokenTrace(
        experts=experts,
        token_id=np.full(t, -1, np.int32),
        sequence_id=seq,
        position=pos,
        num_experts=e,
        meta={"model": "toy"},
    )


# ------------------------------------------------------------------------ SGLang


@pytest.mark.parametrize("suffix", [".pt", ".json"])
def test_sglang_stat_dump_round_trips(tmp_path, suffix):
    rng = np.random.default_rng(0)
    trace = _trace(rng)
    dump = trace_to_sglang_stat(trace, tokens_per_step=20)
    assert dump["logical_count"].shape == (6, 3, 8) and dump["logical_count"].dtype == np.int32
    path = write_sglang_dump(dump, tmp_path / f"expert_distribution_recorder_1.0{suffix}")
    stats = read_sglang_dump(path, num_layers=3, num_experts=8)
    assert stats.engine == "sglang" and stats.mode == "stat"
    assert (stats.counts == dump["logical_count"]).all()
    assert stats.counts.sum(axis=-1).tolist() == [[40] * 3] * 6  # 20 tokens x top-2
    assert stats.step.tolist() == list(range(6))
    assert read_engine_stats(path).counts.shape == (6, 3, 8)  # format detected


def test_sglang_pt_dump_is_what_the_existing_importer_reads(tmp_path):
    counts = np.random.default_rng(1).integers(0, 9, size=(4, 2, 5)).astype(np.int32)
    path = write_sglang_dump(sglang_stat_dump(counts), tmp_path / "d.pt")
    assert (read_sglang_expert_distribution(path).counts == counts).all()
    assert detect_format([path]) == "sglang"


def test_sglang_json_whole_number_floats_are_counts(tmp_path):
    path = tmp_path / "stat.json"
    path.write_text(json.dumps({"logical_count": [[[1.0, 2.0], [0.0, 5.0]]], "rank": 0}))
    assert read_sglang_dump(path).counts.tolist() == [[[1, 2], [0, 5]]]


def _dump(tmp_path: Path, logical_count, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"logical_count": logical_count}))
    return path


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ([[[[1]]]], {}, r"shape \(1, 1, 1, 1\): expected 2-D or 3-D counts"),
        ([[[1, -2]]], {}, r"negative count -2 at index \(0, 0, 1\)"),
        ([[[1, 2]], [[3, 4]]], {"num_layers": 2}, r"1 layers, expected 2 \(layer mismatch"),
        ([[[0, 0]], [[0, 0]]], {}, r"all 2 steps count zero tokens"),
        ([[[1.5, 2]]], {}, r"value 1\.5 at index \(0, 0, 0\) is not a whole number"),
        ([[[1, 2]], [[3]]], {}, r"ragged"),
    ],
)
def test_malformed_sglang_dumps_give_one_clear_error(tmp_path, value, kwargs, message):
    path = _dump(tmp_path, value)
    with pytest.raises(TraceError, match=message) as info:
        read_sglang_dump(path, **kwargs)
    assert str(info.value).count(str(path)) == 1 and "logical_count" in str(info.value)
    if not kwargs:  # the importer is the same reader: the same message, file named once
        with pytest.raises(TraceError) as again:
            read_sglang_expert_distribution(path)
        assert str(again.value) == str(info.value)


def test_one_sglang_reader_for_gps_trace_and_gps_eplb(tmp_path):
    """``gps-trace convert --format sglang-expert-distribution`` and ``gps-eplb`` read SGLang
    dumps with one reader: the same counts and steps, per-pass and stat alike; a broken
    torch file names the file once."""
    counts = np.random.default_rng(5).integers(0, 9, size=(5, 2, 4)).astype(np.int32)
    counts[2] = 0
    path = write_sglang_dump(sglang_stat_dump(counts), tmp_path / "s.pt")
    a, b = read_sglang_dump(path), read_sglang_expert_distribution(path)
    assert (a.counts == b.counts).all() and a.step.tolist() == b.step.tolist() == [0, 1, 3, 4]
    assert b.meta["mode"] == "stat" and b.meta["dropped_empty_steps"] == 1
    records = {"records": [{"forward_pass_id": 3, "rank": 0,
                            "global_physical_count": [[1, 2, 3]]}],
               "last_physical_to_logical_map": [[0, 1, 0]]}  # fmt: skip
    rec = tmp_path / "p.json"
    rec.write_text(json.dumps(records))
    a, b = read_sglang_dump(rec), read_sglang_expert_distribution(rec)
    assert a.counts.tolist() == b.counts.tolist() == [[[4, 2]]] and b.step.tolist() == [3]
    broken = tmp_path / "b.pt"
    broken.write_bytes(b"PK\x03\x04 not a zip")
    for reader in (read_sglang_dump, read_sglang_expert_distribution):
        with pytest.raises(TraceError) as info:
            reader(broken)
        assert str(info.value).count(str(broken)) == 1


def test_sglang_dumps_with_different_layers_do_not_mix(tmp_path):
    a = _dump(tmp_path, [[[1, 2]]], "a.json")
    b = _dump(tmp_path, [[[1, 2]], [[3, 4]]], "b.json")
    b.write_text(json.dumps({"logical_count": [[[1, 2], [3, 4]]]}))
    with pytest.raises(TraceError, match=r"b\.json: field 'logical_count'.*layer mismatch"):
        read_sglang_dump([a, b])


def test_sglang_missing_keys_and_unreadable_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"rank": 0}))
    with pytest.raises(TraceError, match=r"x\.json: field 'logical_count': missing"):
        read_sglang_dump(path)
    path.write_text("{not json")
    with pytest.raises(TraceError, match=r"not readable JSON"):
        read_sglang_dump(path)
    with pytest.raises(TraceError, match="no such file"):
        read_sglang_dump(tmp_path / "absent.pt")


def test_sglang_ring_order_and_dropped_rows(tmp_path):
    full = _dump(tmp_path, [[[1, 2]], [[3, 4]]], "full.json")
    partial = _dump(tmp_path, [[[1, 2]], [[0, 0]]], "partial.json")
    assert read_sglang_dump(full).meta["ring_order_known"] is False
    stats = read_sglang_dump(partial)
    assert stats.meta["ring_order_known"] is True and stats.meta["dropped_empty_steps"] == 1


def test_sglang_per_pass_ranks_are_summed_and_mapped(tmp_path):
    mapping = np.array([[0, 1, 2, 3, 0, 1]] * 2)  # 6 physical slots of 4 logical experts
    count = np.array([[1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 1, 1]], dtype=np.int32)
    files = []
    for rank in (0, 1):
        records = [
            {"forward_pass_id": 7, "rank": rank, "global_physical_count": count},
            {
                "forward_pass_id": 9,
                "rank": rank,
                "global_physical_count": count * 0 + 1,
                "topk_ids_of_layer": np.zeros((2, 1, 1), np.int32),
            },
        ]
        files.append(
            save_torch_file(
                {"records": records, "last_physical_to_logical_map": mapping},
                tmp_path / f"r_{rank}.pt",
            )
        )
    stats = read_sglang_dump(files)
    assert stats.mode == "per_token" and stats.step.tolist() == [7, 9]
    assert stats.counts[0].tolist() == [[12, 16, 6, 8], [2, 2, 0, 0]]
    assert stats.counts[1].tolist() == [[4, 4, 2, 2]] * 2
    assert stats.physical_to_logical.tolist() == mapping.tolist()


def test_sglang_per_pass_layer_mismatch(tmp_path):
    path = save_torch_file(
        {
            "records": [{"forward_pass_id": 0, "global_physical_count": np.ones((3, 6), np.int32)}],
            "last_physical_to_logical_map": np.zeros((2, 6), np.int64),
        },
        tmp_path / "p.pt",
    )
    with pytest.raises(TraceError, match=r"records\[0\]\.global_physical_count.*layer mismatch"):
        read_sglang_dump(path)


# ------------------------------------------------------------------------ vLLM


def test_vllm_window_is_unrolled_and_mapped(tmp_path):
    window = np.zeros((4, 1, 3), dtype=np.int64)
    window[0], window[1], window[2] = [[1, 1, 1]], [[2, 0, 0]], [[0, 3, 0]]  # row 3 unwritten
    mapping = np.array([[0, 1, 0]])  # physical 2 is a replica of logical 0
    path = tmp_path / "eplb.npz"
    np.savez(
        path,
        expert_load_window=window,
        expert_load_window_step=np.array(1),
        physical_to_logical_map=mapping,
    )
    stats = read_vllm_eplb(path, num_experts=2)
    # rolled so that row 1 (the next to write) comes first; the zero row is dropped
    assert stats.counts[:, 0].tolist() == [[2, 0], [0, 3], [2, 1]]
    assert stats.meta["ring_order_known"] and stats.mode == "window"
    assert detect_format([path]) == "vllm"


def test_vllm_local_buffers_of_two_ranks(tmp_path):
    mapping = np.array([[0, 1, 2, 3]])
    files = []
    for rank, local in ((0, [[5, 1]]), (1, [[0, 2]])):
        path = tmp_path / f"rank{rank}.json"
        path.write_text(
            json.dumps(
                {
                    "expert_load_pass": local,
                    "ep_rank": rank,
                    "physical_to_logical_map": mapping.tolist(),
                }
            )
        )
        files.append(path)
    stats = read_vllm_eplb(files)
    assert stats.counts.tolist() == [[[5, 1, 0, 2]]]


def test_vllm_errors_name_file_and_field(tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"expert_load_pass": [[1, 2, 3]]}))
    with pytest.raises(TraceError, match=r"v\.json: field 'physical_to_logical_map': missing"):
        read_vllm_eplb(path, num_experts=2)
    assert read_vllm_eplb(path, num_experts=3).counts.tolist() == [[[1, 2, 3]]]
    path.write_text(
        json.dumps(
            {"expert_load_pass": [[1, 2, 3]], "physical_to_logical_map": [[0, 1, 0], [0, 1, 0]]}
        )
    )
    with pytest.raises(TraceError, match=r"physical_to_logical_map.*layer mismatch"):
        read_vllm_eplb(path)
    path.write_text(json.dumps({"weights": 1}))
    with pytest.raises(TraceError, match="expert_load_window"):
        read_vllm_eplb(path)


# ------------------------------------------------------------------------ TensorRT-LLM


def _safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype="<i8").tobytes()
        header[name] = {
            "dtype": "I64",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_trtllm_statistic_folder(tmp_path):
    (tmp_path / "meta_info.json").write_text(
        json.dumps({"num_experts": 4, "num_experts_per_token": 2})
    )
    _safetensors(
        tmp_path / "rank0.safetensors",
        {
            "10_3": np.array([1, 0, 2, 1]),
            "10_5": np.array([0, 0, 4, 0]),
            "11_3": np.array([2, 2, 0, 0]),
            "11_5": np.array([1, 1, 1, 1]),
        },
    )
    _safetensors(
        tmp_path / "rank1.safetensors",
        {
            "10_3": np.array([1, 1, 1, 1]),
            "10_5": np.array([0, 0, 0, 4]),
            "11_3": np.array([0, 0, 0, 4]),
            "11_5": np.array([1, 1, 1, 1]),
        },
    )
    stats = read_trtllm_statistic(tmp_path, num_experts=4)
    assert stats.step.tolist() == [10, 11] and stats.layers == [3, 5]
    assert stats.counts[0].tolist() == [[2, 1, 3, 2], [0, 0, 4, 4]]
    assert read_engine_stats(tmp_path).engine == "trtllm"
    (tmp_path / "rank1.safetensors").unlink()
    _safetensors(tmp_path / "rank1.safetensors", {"10_3": np.array([1, 1, 1, 1])})
    stats = read_trtllm_statistic(tmp_path)  # rank 1 lacks pairs rank 0 has: still complete
    _safetensors(
        tmp_path / "rank0.safetensors",
        {"10_3": np.array([1, 1, 1, 1]), "11_5": np.array([1, 1, 1, 1])},
    )
    with pytest.raises(TraceError, match=r"field '10_5': missing"):
        read_trtllm_statistic(tmp_path)
    assert stats.num_steps == 2


# ------------------------------------------------------------------------ moe-gps traces


def test_stats_from_trace_and_torch_writer(tmp_path):
    rng = np.random.default_rng(3)
    trace = _trace(rng)
    stats = stats_from_trace(trace, 50)
    assert stats.counts.shape == (2, 3, 8) and stats.engine == "gps"
    obj = {
        "a": [1, (2.5, None)],
        "b": np.arange(6, dtype=np.int64).reshape(2, 3)[:, ::2],
        "c": np.int32(4),
        "d": np.zeros(0, dtype=np.float32),
    }
    back = load_torch_file(save_torch_file(obj, tmp_path / "o.pt"))
    assert back["a"] == [1, (2.5, None)] and back["c"] == 4
    assert back["b"].tolist() == [[0, 2], [3, 5]] and back["d"].shape == (0,)
    with pytest.raises(ValueError, match="no torch storage type"):
        save_torch_file({"x": np.zeros(2, dtype=np.complex64)}, tmp_path / "bad.pt")
    with pytest.raises(TraceError, match="fewer than one step"):
        stats_from_trace(trace, 10_000)


# ------------------------------------------------------------------------ fluctuation


def test_within_token_factor_hand_value():
    mu = np.full((1, 64), 1 / 64)
    # sum mu (1 - k mu) / sum mu (1 - mu) = (1 - 6/64) / (1 - 1/64) = 58/63
    assert within_token_factor(mu, 6)[0] == pytest.approx(58 / 63)


def test_sampled_batches_have_the_model_variance():
    rng = np.random.default_rng(0)
    mu = rng.dirichlet(np.ones(16), size=2)  # [L=2, E=16]
    model = FluctuationModel(rho=np.array([0.002, 0.0]), top_k=4)
    n, per_request = 4000, 100
    x = model.sample(np.broadcast_to(mu, (3000, 2, 16)), n, 4, per_request, rng)
    assert np.allclose(x.sum(-1), n)
    observed = ((x - n * mu) ** 2).sum(-1).mean(0) / (n * (mu * (1 - mu)).sum(-1))
    assert observed == pytest.approx(model.phi(mu, 4, per_request), rel=0.08)
    # independent tokens under-state the variance of requests that share experts
    assert model.phi(mu, 4, per_request)[0] > 1.5 * model.phi(mu, 4, 1)[0]


def test_fit_recovers_a_known_correlation():
    """Requests draw their own expert proportions from a Dirichlet around mu (intra-class
    correlation rho = 1 / (alpha + 1)); each token picks k distinct experts from them."""
    rng = np.random.default_rng(5)
    e, k, layers, requests, n = 32, 2, 2, 400, 60
    mu = rng.dirichlet(np.ones(e) * 3, size=layers)
    rho = 0.01
    alpha = 1 / rho - 1
    experts = np.empty((requests * n, layers, k), dtype=np.int16)
    for q in range(requests):
        for layer in range(layers):
            p = rng.dirichlet(mu[layer] * alpha)
            g = rng.gumbel(size=(n, e)) + np.log(np.maximum(p, 1e-300))
            experts[q * n : (q + 1) * n, layer] = np.argsort(-g, axis=-1)[:, :k]
    trace = TokenTrace(
        experts=experts,
        token_id=np.full(requests * n, -1, np.int32),
        sequence_id=np.repeat(np.arange(requests), n).astype(np.int32),
        position=np.tile(np.arange(n), requests).astype(np.int32),
        num_experts=e,
    )
    fit = fit_fluctuation(trace)
    # Gumbel top-k without replacement is not exactly a multinomial draw: ~15% bias allowed
    assert fit.rho == pytest.approx([rho, rho], rel=0.2)
    assert fit_fluctuation(request_chunks(trace, 30)).rho.mean() > 0
    with pytest.raises(ValueError, match="fewer than two usable"):
        fit_fluctuation(trace, groups=[7])


def test_fitted_models_and_names():
    assert fitted_model("independent").rho.tolist() == [0.0]
    assert fitted_model("0.003").layer_rho(4).tolist() == [0.003] * 4
    with pytest.raises(ValueError, match=r"eplb\.fluctuation"):
        fitted_model("mystery")
    with pytest.raises(ValueError, match="rho"):
        FluctuationModel(rho=np.array([-1.0]), top_k=2)


def test_committed_fits_reproduce_from_the_shared_traces(mixtral_trace):
    """``FITTED_RHO`` holds what ``fit_fluctuation`` gives on the named fit data."""
    from gps.traces.shared import esft_trace

    try:
        esft = esft_trace()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert float(np.median(fit_fluctuation(esft, groups=[0, 1]).rho)) == pytest.approx(
        FITTED_RHO["esft"][0], rel=0.01
    )
    chunks = request_chunks(mixtral_trace, 32)
    assert float(np.median(fit_fluctuation(chunks, groups=[0]).rho)) == pytest.approx(
        FITTED_RHO["mixtral"][0], rel=0.01
    )
