"""Trace format: save/load round trips, every validation error, JSONL conversion, batching."""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gps.traces import batching, io
from gps.traces.batching import batch_loads, decode_order, split_by_sequence, take_tokens
from gps.traces.io import load_trace, save_trace
from gps.traces.jsonl import read_routing_jsonl
from gps.traces.trace import LoadSeries, TokenTrace
from gps.traces.validate import TraceError, validate_load_series, validate_token_trace


def make_trace(
    tokens: int = 12,
    layers: int = 3,
    k: int = 2,
    experts: int = 5,
    *,
    scores: bool = True,
    domain: bool = True,
    seed: int = 0,
) -> TokenTrace:
    """Valid random trace: distinct top-k ids, 3 sequences, scores summing to 1."""
    rng = np.random.default_rng(seed)
    ids = np.argsort(rng.random((tokens, layers, experts)), axis=-1)[..., :k].astype(np.int16)
    gate = rng.random((tokens, layers, k))
    gate = np.sort(gate / gate.sum(-1, keepdims=True), axis=-1)[..., ::-1]
    sequence = np.arange(tokens, dtype=np.int32) % 3
    return TokenTrace(
        experts=ids,
        token_id=rng.integers(-1, 100, tokens).astype(np.int32),
        sequence_id=sequence,
        position=(np.arange(tokens) // 3).astype(np.int32),
        num_experts=experts,
        scores=gate.astype(np.float16) if scores else None,
        domain=(sequence % 2).astype(np.int16) if domain else None,
        meta={"model": "test", "domains": ["a", "b"]},
    )


def make_series(steps: int = 5, layers: int = 2, experts: int = 4) -> LoadSeries:
    counts = np.arange(steps * layers * experts, dtype=np.int64).reshape(steps, layers, experts)
    return LoadSeries(counts=counts, step=np.arange(steps, dtype=np.int64) * 10, meta={"a": 1})


def assert_same_trace(a: TokenTrace, b: TokenTrace) -> None:
    for name in ("experts", "token_id", "sequence_id", "position", "scores", "domain"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert a.num_experts == b.num_experts and a.meta == b.meta


# --- save / load ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False, None])
@pytest.mark.parametrize("optional", [True, False])
def test_token_trace_round_trip(tmp_path: Path, compress: bool | None, optional: bool) -> None:
    trace = make_trace(scores=optional, domain=optional)
    path = save_trace(tmp_path / "t.npz", trace, compress=compress)
    loaded = load_trace(path)
    assert isinstance(loaded, TokenTrace)
    assert_same_trace(trace, loaded)
    assert not (tmp_path / "t.npz.tmp").exists()


def test_stored_trace_is_memory_mapped_read_only_and_aligned(tmp_path: Path) -> None:
    path = save_trace(tmp_path / "t.npz", make_trace(), compress=False)
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    loaded = load_trace(path)
    for arr in (loaded.experts, loaded.scores, loaded.token_id):
        assert not arr.flags.writeable
        assert arr.ctypes.data % 64 == 0
    eager = load_trace(path, mmap=False)
    assert eager.experts.flags.writeable
    assert_same_trace(loaded, eager)


def test_compressed_archive_is_deflated_and_readable_by_numpy(tmp_path: Path) -> None:
    trace = make_trace()
    path = save_trace(tmp_path / "t.npz", trace, compress=True)
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    with np.load(path) as npz:
        assert str(npz["kind"]) == "token_trace"
        assert np.array_equal(npz["experts"], trace.experts)
        assert json.loads(str(npz["meta"])) == trace.meta


def test_auto_compression_depends_on_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = make_trace()
    small = save_trace(tmp_path / "small.npz", trace)
    monkeypatch.setattr(io, "AUTO_COMPRESS_BYTES", 10)
    large = save_trace(tmp_path / "large.npz", trace)
    with zipfile.ZipFile(small) as a, zipfile.ZipFile(large) as b:
        assert a.getinfo("experts.npy").compress_type == zipfile.ZIP_DEFLATED
        assert b.getinfo("experts.npy").compress_type == zipfile.ZIP_STORED


@pytest.mark.parametrize("compress", [True, False])
def test_load_series_round_trip(tmp_path: Path, compress: bool) -> None:
    series = make_series()
    loaded = load_trace(save_trace(tmp_path / "s.npz", series, compress=compress))
    assert isinstance(loaded, LoadSeries)
    assert np.array_equal(loaded.counts, series.counts) and loaded.counts.dtype == np.int64
    assert np.array_equal(loaded.step, series.step) and loaded.meta == series.meta


@settings(max_examples=20, deadline=None)
@given(
    tokens=st.integers(0, 20),
    layers=st.integers(1, 4),
    experts=st.integers(1, 9),
    k=st.integers(1, 4),
    compress=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(
    tokens: int, layers: int, experts: int, k: int, compress: bool, seed: int
) -> None:
    trace = make_trace(tokens, layers, min(k, experts), experts, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_trace(save_trace(Path(tmp) / "t.npz", trace, compress=compress))
        assert_same_trace(trace, loaded)


def test_save_refuses_invalid_trace_and_keeps_old_file(tmp_path: Path) -> None:
    path = save_trace(tmp_path / "t.npz", make_trace())
    bad = replace(make_trace(), num_experts=1)
    with pytest.raises(TraceError, match=r"t\.npz"):
        save_trace(path, bad)
    assert load_trace(path).num_experts == 5
    with pytest.raises(TraceError, match="cannot save"):
        save_trace(tmp_path / "x.npz", {"experts": 1})  # type: ignore[arg-type]


def _write_members(path: Path, **arrays: np.ndarray) -> Path:
    """An archive with arbitrary members (bypasses save_trace's validation)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(value))
    return path


def _members_of(trace: TokenTrace) -> dict[str, np.ndarray]:
    return io._arrays_of(trace)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.pop("experts"), "experts"),
        (lambda m: m.pop("kind"), "kind"),
        (lambda m: m.pop("num_experts"), "num_experts"),
        (lambda m: m.update(extra=np.zeros(3)), "extra"),
        (lambda m: m.update(kind=np.asarray("weird")), "kind"),
        (lambda m: m.update(kind=np.asarray(3)), "kind"),
        (lambda m: m.update(format_version=np.asarray(99)), "format_version"),
        (lambda m: m.update(meta=np.asarray("{not json")), "meta"),
        (lambda m: m.update(num_experts=np.asarray([5, 5])), "num_experts"),
        (lambda m: m.update(experts=m["experts"].astype(np.int32)), "experts"),
        (lambda m: m.update(experts=m["experts"] + 4), "experts"),
        (lambda m: m.update(position=m["position"][:-1]), "position"),
        (lambda m: m.update(scores=np.full(m["scores"].shape, np.nan, np.float16)), "scores"),
    ],
)
def test_load_errors_name_file_and_field(tmp_path: Path, edit, field: str) -> None:
    members = _members_of(make_trace())
    edit(members)
    path = _write_members(tmp_path / "bad.npz", **members)
    with pytest.raises(TraceError) as err:
        load_trace(path)
    assert err.value.field == field and err.value.origin == str(path)
    assert str(path) in str(err.value)


def test_load_errors_on_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(TraceError, match=r"not a \.npz"):
        load_trace(tmp_path / "text.npz")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(TraceError, match=r"not \.npy"):
        load_trace(tmp_path / "other.npz")
    with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as zf:
        with zf.open("kind.npy", "w") as member:
            np.lib.format.write_array(member, np.array([{"a": 1}], dtype=object))
    with pytest.raises(TraceError, match="kind"):
        load_trace(tmp_path / "pickled.npz")


def test_corrupt_deflate_stream_is_reported(tmp_path: Path) -> None:
    path = save_trace(tmp_path / "t.npz", make_trace(tokens=400), compress=True)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("experts.npy")
    assert info.compress_size > 400
    data = bytearray(path.read_bytes())
    start = info.header_offset + 200  # past the local header (< 100 bytes), inside the stream
    data[start : start + 60] = bytes(60)
    path.write_bytes(bytes(data))
    with pytest.raises(TraceError, match="unreadable") as err:
        load_trace(path)
    assert err.value.field == "experts"


@pytest.mark.parametrize(("mmap", "message"), [(True, "shorter than"), (False, "unreadable")])
def test_truncated_stored_member_is_reported(tmp_path: Path, mmap: bool, message: str) -> None:
    good = save_trace(tmp_path / "good.npz", make_trace(tokens=400), compress=False)
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[:200] if name == "experts.npy" else data)
    with pytest.raises(TraceError, match=message) as err:
        load_trace(bad, mmap=mmap)
    assert err.value.field == "experts" and str(bad) in str(err.value)


def test_load_series_file_with_unsorted_steps_is_rejected(tmp_path: Path) -> None:
    members = io._arrays_of(make_series())
    members["step"] = members["step"][::-1].copy()
    path = _write_members(tmp_path / "s.npz", **members)
    with pytest.raises(TraceError, match="strictly increasing") as err:
        load_trace(path)
    assert err.value.field == "step" and str(path) in str(err.value)


# --- validation ----------------------------------------------------------------------------


def _with(trace: TokenTrace, **changes: object) -> TokenTrace:
    return replace(trace, **changes)


T0 = make_trace()
BAD_TRACES = {
    "id too large": (_with(T0, experts=np.where(T0.experts == 0, 5, T0.experts)), "experts"),
    "negative id": (_with(T0, experts=np.where(T0.experts == 0, -1, T0.experts)), "experts"),
    "repeated id": (_with(T0, experts=np.repeat(T0.experts[..., :1], 2, axis=-1)), "experts"),
    "experts int32": (_with(T0, experts=T0.experts.astype(np.int32)), "experts"),
    "experts 2-D": (_with(T0, experts=T0.experts[:, :, 0]), "experts"),
    "experts list": (_with(T0, experts=T0.experts.tolist()), "experts"),
    "zero layers": (_with(T0, experts=T0.experts[:, :0], scores=None), "experts"),
    "k > E": (_with(T0, num_experts=1), "experts"),
    "E zero": (_with(T0, num_experts=0), "num_experts"),
    "E bool": (_with(T0, num_experts=True), "num_experts"),
    "E float": (_with(T0, num_experts=5.0), "num_experts"),
    "token_id short": (_with(T0, token_id=T0.token_id[:-1]), "token_id"),
    "token_id < -1": (_with(T0, token_id=T0.token_id - 5), "token_id"),
    "sequence negative": (_with(T0, sequence_id=T0.sequence_id - 1), "sequence_id"),
    "position int64": (_with(T0, position=T0.position.astype(np.int64)), "position"),
    "scores NaN": (_with(T0, scores=np.where(T0.experts == 0, np.nan, T0.scores)), "scores"),
    "scores inf": (_with(T0, scores=np.full_like(T0.scores, np.inf)), "scores"),
    "scores negative": (_with(T0, scores=-T0.scores), "scores"),
    "scores float32": (_with(T0, scores=T0.scores.astype(np.float32)), "scores"),
    "scores shape": (_with(T0, scores=T0.scores[:, :, :1]), "scores"),
    "domain range": (_with(T0, domain=T0.domain + 2), "domain"),
    "domain dtype": (_with(T0, domain=T0.domain.astype(np.int32)), "domain"),
    "domain no names": (_with(T0, meta={}), "meta.domains"),
    "meta not JSON": (_with(T0, meta={"domains": ["a", "b"], "x": object()}), "meta"),
    "meta not dict": (_with(T0, meta=[1]), "meta"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRACES))
def test_validate_token_trace_rejects(case: str) -> None:
    trace, field = BAD_TRACES[case]
    with pytest.raises(TraceError) as err:
        validate_token_trace(trace, origin="file.npz")
    assert err.value.field == field
    assert str(err.value).startswith("file.npz: field")


def test_validate_names_the_first_bad_element() -> None:
    experts = T0.experts.copy()
    experts[7, 2, 1] = 9
    with pytest.raises(TraceError, match="token 7, layer 2, slot 1"):
        validate_token_trace(_with(T0, experts=experts))


def test_validation_scans_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    from gps.traces import validate

    monkeypatch.setattr(validate, "_CHUNK_ELEMENTS", 4)
    trace = make_trace(tokens=50)
    assert validate_token_trace(trace) is trace
    scores = trace.scores.copy()
    scores[49, 2, 1] = np.nan
    with pytest.raises(TraceError, match="token 49"):
        validate_token_trace(_with(trace, scores=scores))
    experts = trace.experts.copy()
    experts[48, 1] = experts[48, 1, 0]
    with pytest.raises(TraceError, match="token 48, layer 1"):
        validate_token_trace(_with(trace, experts=experts))


def test_validate_rejects_non_traces() -> None:
    with pytest.raises(TraceError):
        validate_token_trace(make_series())  # type: ignore[arg-type]
    with pytest.raises(TraceError):
        validate_load_series(T0)  # type: ignore[arg-type]


S0 = make_series()
BAD_SERIES = {
    "float counts": (replace(S0, counts=S0.counts.astype(float)), "counts"),
    "negative count": (replace(S0, counts=S0.counts - 3), "counts"),
    "2-D counts": (replace(S0, counts=S0.counts[:, 0]), "counts"),
    "list counts": (replace(S0, counts=S0.counts.tolist()), "counts"),
    "step length": (replace(S0, step=S0.step[:-1]), "step"),
    "step int32": (replace(S0, step=S0.step.astype(np.int32)), "step"),
    "step repeated": (replace(S0, step=np.zeros(5, np.int64)), "step"),
    "step decreasing": (replace(S0, step=S0.step[::-1].copy()), "step"),
    "meta": (replace(S0, meta={"x": {1, 2}}), "meta"),
}


@pytest.mark.parametrize("case", sorted(BAD_SERIES))
def test_validate_load_series_rejects(case: str) -> None:
    series, field = BAD_SERIES[case]
    with pytest.raises(TraceError) as err:
        validate_load_series(series, origin="s.npz")
    assert err.value.field == field and "s.npz" in str(err.value)


def test_validate_accepts_valid_and_unsigned_series() -> None:
    assert validate_load_series(S0) is S0
    unsigned = replace(S0, counts=S0.counts.astype(np.uint32))
    assert validate_load_series(unsigned) is unsigned
    assert validate_token_trace(T0) is T0


# --- JSON Lines conversion -----------------------------------------------------------------


def _record(seq: int, tok: int, layer: int, experts: list[int], **extra: object) -> dict:
    base = {"dataset": "ds", "problem_id": seq, "layer": layer, "token_idx": tok}
    return base | {"experts": experts, "gating_probs": [0.75, 0.25]} | extra


def _write_jsonl(path: Path, records: list[dict | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def _grid(layers: int = 2) -> list[dict]:
    """2 sequences (problem 5 first, then 3) x 2 tokens x ``layers`` layers, shuffled."""
    records = [
        _record(seq, tok, layer, [(seq + tok + layer) % 4, (seq + tok + layer + 1) % 4])
        for seq in (5, 3)
        for tok in (1, 0)
        for layer in range(layers)
    ]
    return records[::-1]


def test_jsonl_conversion_known_answer(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "r.jsonl", _grid())
    trace = read_routing_jsonl(path, num_experts=4, model="m", source="s", license="l")
    # sequences numbered in first-seen order; the file is reversed, so (ds, 3) comes first
    assert trace.meta["sequence_keys"] == [["ds", 3], ["ds", 5]]
    assert trace.sequence_id.tolist() == [0, 0, 1, 1]
    assert trace.position.tolist() == [0, 1, 0, 1]
    expected = [
        [[(seq + tok + layer) % 4, (seq + tok + layer + 1) % 4] for layer in range(2)]
        for seq, tok in ((3, 0), (3, 1), (5, 0), (5, 1))
    ]
    assert trace.experts.tolist() == expected and trace.experts.dtype == np.int16
    assert trace.scores.dtype == np.float16 and np.all(trace.scores[..., 0] == 0.75)
    assert trace.token_id.tolist() == [-1] * 4
    assert trace.meta["domains"] == ["ds"] and trace.domain.tolist() == [0] * 4
    assert (trace.meta["model"], trace.meta["source"], trace.meta["license"]) == ("m", "s", "l")
    assert trace.meta["converted_from"] == ["r.jsonl"] and trace.meta["dropped_tokens"] == 0


def test_jsonl_several_files_share_sequence_ids(tmp_path: Path) -> None:
    a = _write_jsonl(tmp_path / "a.jsonl", _grid())
    b_records = [r | {"dataset": "other"} for r in _grid()]
    b = _write_jsonl(tmp_path / "b.jsonl", b_records)
    trace = read_routing_jsonl([a, b], num_experts=4)
    assert trace.num_tokens == 8 and len(set(trace.sequence_id.tolist())) == 4
    assert trace.meta["domains"] == ["ds", "other"]
    assert np.bincount(trace.domain).tolist() == [4, 4]


def test_jsonl_missing_layer_is_dropped_with_warning_or_error(tmp_path: Path) -> None:
    records = _grid(layers=3)
    gone = next(r for r in records if (r["problem_id"], r["token_idx"], r["layer"]) == (5, 1, 2))
    records.remove(gone)
    path = _write_jsonl(tmp_path / "r.jsonl", records)
    with pytest.warns(UserWarning, match="dropped 1 of 4 tokens"):
        trace = read_routing_jsonl(path, num_experts=4)
    assert trace.num_tokens == 3
    assert trace.meta["dropped_tokens"] == 1
    assert trace.meta["dropped_token_examples"] == [
        {"sequence_key": ["ds", 5], "position": 1, "layers_present": 2}
    ]
    with pytest.raises(TraceError, match=r"r\.jsonl:\d+: field 'layer': .*2 of 3 layers"):
        read_routing_jsonl(path, num_experts=4, missing_layers="error")
    with pytest.raises(ValueError, match="missing_layers"):
        read_routing_jsonl(path, num_experts=4, missing_layers="fill")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        (_record(0, 0, 1, [1, 2]), "layer", "duplicate record"),
        (_record(0, 1, 1, [1, 2, 3]), "experts", "3 experts"),
        (_record(0, 1, 1, [1, 9]), "experts", "outside"),
        (_record(0, 1, 1, [2, 2]), "experts", "repeated"),
        (_record(0, 1, 1, [1, 2.5]), "experts", "not an integer"),
        (_record(0, 1, 1, [1, 2], gating_probs=[0.5]), "gating_probs", "list of 2"),
        (_record(0, 1, 1, [1, 2], gating_probs=[0.5, "x"]), "gating_probs", "not a number"),
        (_record(0, 1, 1, [1, 2], gating_probs=[[0.5], [0.5]]), "gating_probs", "not a number"),
        (
            _record(0, 1, 1, [1, 2], gating_probs=[[0.5], [0.2, 0.3]]),
            "gating_probs",
            "not a number",
        ),
        (_record(0, 1, 1, [[1], [2]]), "experts", "not an integer"),
        (_record(0, 1, 1, [1, 2**70]), "experts", "not an integer"),
        (_record(0, 1, 1, [1, 2]) | {"layer": -1}, "layer", "outside"),
        (_record(0, 1, 1, [1, 2], token_idx="3"), "token_idx", "not an integer"),
        (_record(0, 1, 1, []), "experts", "non-empty"),
        (
            {"dataset": "ds", "problem_id": 0, "layer": 1, "experts": [1, 2]},
            "gating_probs",
            "missing",
        ),
        ("{oops", "<json>", "invalid JSON"),
        ("[1, 2]", "<json>", "expected an object"),
    ],
)
def test_jsonl_bad_record_names_file_line_and_field(
    tmp_path: Path, line: dict | str, field: str, message: str
) -> None:
    records = [_record(0, 0, 0, [0, 1]), _record(0, 0, 1, [1, 2]), _record(0, 1, 0, [0, 1])]
    path = _write_jsonl(tmp_path / "r.jsonl", [*records, line])
    with pytest.raises(TraceError, match=message) as err:
        read_routing_jsonl(path, num_experts=4)
    assert err.value.field == field
    assert err.value.origin == f"{path}:4"


def test_jsonl_layer_absent_everywhere_and_empty_or_missing_file(tmp_path: Path) -> None:
    records = [r for r in _grid(layers=3) if r["layer"] != 1]
    with pytest.raises(TraceError, match=r"layers \[0, 2\] were logged, not 0\.\.1: .*"
                       r"--layer-map 0:0,2:2"):  # fmt: skip
        read_routing_jsonl(_write_jsonl(tmp_path / "r.jsonl", records), num_experts=4)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TraceError, match="no routing records"):
        read_routing_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(TraceError, match="no such file"):
        read_routing_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="num_experts"):
        read_routing_jsonl(tmp_path / "empty.jsonl", num_experts=0)


def test_jsonl_infers_num_experts_with_warning(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "r.jsonl", _grid())
    with pytest.warns(UserWarning, match="inferred 4"):
        trace = read_routing_jsonl(path)
    assert trace.num_experts == 4 and trace.meta["num_experts_inferred"] is True


def test_jsonl_custom_fields_token_ids_and_no_scores(tmp_path: Path) -> None:
    records = [
        {"rid": f"req{s}", "layer_id": layer, "topk_ids": [layer, 3], "pos": t, "tok": 10 * s + t}
        for s in (0, 1)
        for t in (0, 1)
        for layer in (0, 1)
    ]
    path = _write_jsonl(tmp_path / "sglang.jsonl", records)
    trace = read_routing_jsonl(
        path,
        layer_field="layer_id",
        experts_field="topk_ids",
        scores_field=None,
        token_field="pos",
        sequence_fields=("rid",),
        token_id_field="tok",
        domain_field=None,
        num_experts=4,
    )
    assert trace.scores is None and trace.domain is None
    assert trace.token_id.tolist() == [0, 1, 10, 11]
    assert trace.experts[:, 1].tolist() == [[1, 3]] * 4
    records[1]["tok"] = 99  # token (req0, 0) now has two different ids across its layers
    _write_jsonl(path, records)
    with pytest.raises(TraceError, match="differs") as err:
        read_routing_jsonl(
            path,
            layer_field="layer_id",
            experts_field="topk_ids",
            scores_field=None,
            token_field="pos",
            sequence_fields=("rid",),
            token_id_field="tok",
            domain_field=None,
            num_experts=4,
        )
    assert err.value.origin == f"{path}:2" and err.value.field == "tok"


# --- the real Mixtral trace (../shared/traces) ----------------------------------------------


def test_shared_mixtral_trace_converts_as_documented(mixtral_trace: TokenTrace) -> None:
    trace = mixtral_trace
    assert isinstance(trace, TokenTrace)
    # 244 GSM8K + 333 HumanEval tokens with all 32 layers (shared/traces README)
    assert (trace.num_tokens, trace.num_layers, trace.top_k, trace.num_experts) == (577, 32, 2, 8)
    assert trace.meta["domains"] == ["gsm8k", "humaneval"]
    assert np.bincount(trace.domain).tolist() == [244, 333]
    assert trace.meta["dropped_tokens"] == 8
    assert np.unique(trace.sequence_id).size == 4
    sums = trace.scores.astype(np.float64).sum(-1)
    assert np.allclose(sums, 1.0, atol=2e-3)  # renormalised top-2 weights
    assert np.all(trace.scores[..., 0] >= trace.scores[..., 1])  # gate order
    # README: per-layer max/mean expert load over a file, median 1.47 across layers
    for d in (0, 1):
        part = take_tokens(trace, trace.domain == d)
        load = batch_loads(part, part.num_tokens)[0]
        ratio = load.max(1) / load.mean(1)
        assert 1.4 < np.median(ratio) < 1.55 and 1.1 < ratio.min() and ratio.max() < 1.9


# --- batching ------------------------------------------------------------------------------


def _tiny() -> TokenTrace:
    experts = np.array(
        [[[0, 1], [2, 0]], [[1, 2], [2, 1]], [[0, 2], [0, 1]], [[1, 0], [1, 2]], [[2, 1], [0, 2]]],
        dtype=np.int16,
    )
    zeros = np.zeros(5, np.int32)
    return TokenTrace(experts, zeros - 1, zeros, np.arange(5, dtype=np.int32), num_experts=3)


def test_batch_loads_known_answer() -> None:
    loads = batch_loads(_tiny(), 2)
    assert loads.dtype == np.int64 and loads.shape == (2, 2, 3)
    assert loads.tolist() == [[[1, 2, 1], [1, 1, 2]], [[2, 1, 1], [1, 2, 1]]]
    last = batch_loads(_tiny(), 2, drop_last=False)
    assert last.shape == (3, 2, 3) and last[2].tolist() == [[0, 1, 1], [1, 0, 1]]
    assert batch_loads(_tiny(), 6).shape == (0, 2, 3)
    assert batch_loads(_tiny(), 6, drop_last=False).sum() == 5 * 2 * 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_batch_loads_rejects_bad_batch_size(bad: object) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        batch_loads(_tiny(), bad)  # type: ignore[arg-type]


def test_batch_loads_refuses_out_of_range_ids() -> None:
    trace = replace(_tiny(), num_experts=2)  # id 2 present: invalid, never clipped
    with pytest.raises(TraceError, match="experts"):
        batch_loads(trace, 2)


@settings(max_examples=25, deadline=None)
@given(
    tokens=st.integers(0, 40),
    batch=st.integers(1, 9),
    drop_last=st.booleans(),
    chunk=st.sampled_from([1, 7, 1 << 18]),
    seed=st.integers(0, 2**16),
)
def test_batch_loads_matches_a_naive_count(
    tokens: int, batch: int, drop_last: bool, chunk: int, seed: int
) -> None:
    trace = make_trace(tokens, layers=3, k=2, experts=4, seed=seed)
    old = batching._CHUNK_ELEMENTS
    batching._CHUNK_ELEMENTS = chunk
    try:
        loads = batch_loads(trace, batch, drop_last=drop_last)
    finally:
        batching._CHUNK_ELEMENTS = old
    n = tokens // batch if drop_last else -(-tokens // batch)
    expected = np.zeros((n, 3, 4), dtype=np.int64)
    for t in range(min(tokens, n * batch)):
        for layer in range(3):
            for e in trace.experts[t, layer]:
                expected[t // batch, layer, e] += 1
    assert np.array_equal(loads, expected)


def test_take_tokens_slice_indices_and_mask() -> None:
    trace = make_trace(tokens=9)
    head = take_tokens(trace, slice(0, 4))
    assert head.num_tokens == 4 and np.shares_memory(head.experts, trace.experts)
    picked = take_tokens(trace, np.array([8, 0]))
    assert picked.position.tolist() == [trace.position[8], trace.position[0]]
    assert np.array_equal(picked.scores, trace.scores[[8, 0]])
    masked = take_tokens(trace, trace.sequence_id == 1)
    assert masked.num_tokens == 3 and set(masked.sequence_id.tolist()) == {1}
    assert masked.domain is not None and masked.meta == trace.meta
    bare = take_tokens(make_trace(scores=False, domain=False), [1, 2])
    assert bare.scores is None and bare.domain is None
    validate_token_trace(masked)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (np.ones(3, bool), "bool mask has 3"),
        (np.array([0, 12]), "outside"),
        (np.array([0.5]), "neither bool nor integer"),
        (np.zeros((2, 2), int), "1-D"),
    ],
)
def test_take_tokens_rejects_bad_index(index: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        take_tokens(make_trace(), index)


def test_decode_order_interleaves_sequences() -> None:
    trace = decode_order(make_trace(tokens=12))
    assert trace.position.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert trace.sequence_id.tolist() == [0, 1, 2] * 4


@settings(max_examples=25, deadline=None)
@given(
    sequences=st.integers(2, 12),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**16),
)
def test_split_by_sequence_never_leaks(sequences: int, fraction: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    trace = make_trace(tokens=40, seed=seed)
    trace = replace(trace, sequence_id=rng.integers(0, sequences, 40).astype(np.int32))
    train, test = split_by_sequence(trace, fraction, seed)
    train_seq, test_seq = set(train.sequence_id.tolist()), set(test.sequence_id.tolist())
    assert train_seq and test_seq and not train_seq & test_seq
    assert train.num_tokens + test.num_tokens == 40
    present = len(train_seq | test_seq)
    assert len(test_seq) == min(present - 1, max(1, round(fraction * present)))
    again = split_by_sequence(trace, fraction, seed)[1]
    assert np.array_equal(again.experts, test.experts)


def test_split_by_sequence_depends_on_seed_and_rejects_bad_input() -> None:
    trace = replace(make_trace(tokens=60), sequence_id=np.arange(60, dtype=np.int32))
    tests = {tuple(split_by_sequence(trace, 0.3, s)[1].sequence_id.tolist()) for s in range(5)}
    assert len(tests) > 1
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            split_by_sequence(trace, bad, 0)
    single = replace(trace, sequence_id=np.zeros(60, np.int32))
    with pytest.raises(ValueError, match="at least 2 sequences"):
        split_by_sequence(single, 0.5, 0)


def test_jsonl_boolean_scores_are_an_error_naming_the_line(tmp_path: Path) -> None:
    # every weight a JSON boolean: refused at its line (this once escaped as StopIteration)
    record = _record(0, 0, 0, [0, 1], gating_probs=[True, False])
    path = _write_jsonl(tmp_path / "r.jsonl", [record])
    with pytest.raises(TraceError, match="not a number: True") as err:
        read_routing_jsonl(path, num_experts=4)
    assert err.value.field == "gating_probs" and err.value.origin == f"{path}:1"


def test_int_column_reports_a_uint64_value_as_read() -> None:
    """A column numpy reads as uint64 (every value >= 2**63) is checked before the int64 cast,
    so the error quotes the value in the file, not its wrapped int64."""
    from gps.traces.jsonl import _int_column

    with pytest.raises(TraceError, match=r"value 9223372036854775808 outside \[0, 4\)"):
        _int_column([2**63, 2**63 + 1], "experts", lambda i: f"f:{i + 1}", 0, 4)
    assert _int_column([3, 0], "experts", lambda i: f"f:{i + 1}", 0, 4).dtype == np.int64
