"""The mechanism ledger (gps/cost/ledger.py, gps/advisor/ledger.py): hand-computed port budgets,
prefetch order, the corrective all-to-all in every mode, the bounds it guarantees by
construction (property tests) and bad switches."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from hypothesis.extra.numpy import arrays
from test_cost_helpers import INTER_BW, INTER_LAT, INTRA_BW, INTRA_LAT, cluster, gqa_model

from gps.advisor import strategies as st
from gps.advisor.data import EvalData
from gps.advisor.ledger import Ledger, resident_slots
from gps.advisor.pricing import price_routed
from gps.cost.comm import DEEPEP_LL_FIXED_S
from gps.cost.e2e import batch_cost
from gps.cost.layer import dispatch_leg_s
from gps.cost.ledger import (
    LEDGER,
    chunk_pipeline_exposed,
    hidden_state_move_bytes,
    port_exposure,
    prefetch_exposed,
    prefetched_fraction,
    stretched_end,
)
from gps.cost.parallel import ParallelConfig
from gps.cost.routing import traffic_from_slot_tokens, uniform_slot_tokens
from gps.cost.step import Prefetch, StepExtras
from gps.engine import EngineConfig, EngineProfile
from gps.hardware import LinkProfile
from gps.model import load_model_spec
from gps.plans import expert_weight_bytes
from gps.plans.rebalance import RebalanceCosts
from gps.traces.trace import TokenTrace
from gps.workload import Workload
from predictors.splits import copy_hits, expected_split, split_copies

MB = 1e6
SLOW = LinkProfile("slow", bandwidth=1e3, latency_s=0.01)  # 100 B take 0.1 s


def test_copy_hits_and_split_by_hand() -> None:
    true = np.array([[[0, 1]], [[2, 3]], [[1, -1]]])  # [T=3, L=1, k=2]
    guess = np.array([[[1, 2]], [[2, 3]], [[1, 0]]])
    np.testing.assert_array_equal(copy_hits(guess, true)[:, 0], [[False, True], [True, True],
                                                                 [True, False]])  # fmt: skip
    s = split_copies(guess, true, num_experts=4, tokens_per_batch=3)
    np.testing.assert_array_equal(s.hit[0, 0], [0, 2, 1, 1])
    np.testing.assert_array_equal(s.miss[0, 0], [1, 0, 0, 0])  # expert 0 of token 0
    np.testing.assert_array_equal(s.guessed[0, 0], [1, 2, 2, 1])
    with pytest.raises(ValueError, match="tokens_per_batch"):
        split_copies(guess, true, 4, 2)


def test_prefetched_fraction_by_hand() -> None:
    score = np.array([3.0, 1.0, 1.0, 7.0])
    cand = np.array([True, True, True, False])  # slot 3 is no candidate whatever its score
    # two slots' bytes: slot 0 first (whole), slots 1 and 2 tied, sharing the second slot evenly
    np.testing.assert_allclose(prefetched_fraction(score, cand, np.array(2.0)), [1, 0.5, 0.5, 0])
    np.testing.assert_allclose(prefetched_fraction(score, cand, np.array(0.5)), [0.5, 0, 0, 0])
    np.testing.assert_allclose(prefetched_fraction(score, cand, np.array(9.0)), [1, 1, 1, 0])


def test_prefetch_exposed_by_hand_wrong_guess_costs_more_than_none() -> None:
    busy = np.array([[[True, True, True, False]]])  # [L=1, G=1, R=4]: slots 0-2 busy
    resident = resident_slots(4, 0.25)  # slot 0 in HBM; slots 1-3 fetched over SLOW
    np.testing.assert_array_equal(resident, [True, False, False, False])

    def exposed(score) -> float:
        p = Prefetch(busy, np.asarray(score, dtype=float)[None, None], resident, 100.0, SLOW)
        return float(prefetch_exposed(p, np.array([[0.21]]))[0, 0])  # 0.2 s after latency

    # the port moves 200 B = 2 slots before the gate
    # truth first (slots 1, 2): nothing missing
    assert exposed([0, 5, 4, 1]) == 0.0
    # a wrong belief ranks idle slot 3 above busy slot 2: slot 2 (100 B) after the gate
    assert exposed([0, 5, 0, 1]) == pytest.approx(0.01 + 0.1, rel=1e-12)
    # no belief: slots 1-3 share the port, 2/3 of each; busy 1 and 2 miss 1/3 each
    assert exposed([0, 0, 0, 0]) == pytest.approx(0.01 + 2 * 100 / 3 / 1e3, rel=1e-12)
    # nothing before the gate (prefetch off): both busy slots after it
    assert exposed([-np.inf] * 4) == pytest.approx(0.01 + 0.2, rel=1e-12)


def test_chunk_pipeline_by_hand() -> None:
    """Attention 1 s in 4 chunks of 0.25 s, each chunk's dispatch 0.3 s: the dispatches queue
    (0.25-0.55, 0.55-0.85, 0.85-1.15, 1.15-1.45), 0.45 s past the attention =
    ``d + (c - 1) * (d - a)``. One chunk: the whole dispatch after attention."""
    one = np.array([1.0])
    assert chunk_pipeline_exposed(one, np.array([0.3]), 4)[0] == pytest.approx(0.45)
    assert chunk_pipeline_exposed(one, np.array([0.1]), 4)[0] == pytest.approx(0.1)  # d < a
    assert chunk_pipeline_exposed(one, np.array([0.8]), 1)[0] == pytest.approx(0.8)
    # the dispatch kernels hold half the SMs: 2 chunks of 0.5 s, dispatch 0.4 s each. Chunk 2
    # starts at 0.5 beside dispatch 1 (0.5-0.9): 0.2 s of work by 0.9, 0.3 s left -> 1.2;
    # dispatch 2 1.2-1.6: 0.6 s past the attention (0.4 s with every SM)
    assert chunk_pipeline_exposed(one, np.array([0.4]), 2, 0.5)[0] == pytest.approx(0.6)
    assert chunk_pipeline_exposed(one, np.array([0.4]), 2)[0] == pytest.approx(0.4)


def test_one_port_budget_shared_by_replica_copies_and_chunked_dispatch() -> None:
    """Attention 1 s, window 1, a 4-chunk dispatch of 0.3 s per chunk (0.2 s of bytes and
    0.1 s of fixed kernel cost: 1.2 s of port time against 0.8 s unchunked). Alone, the
    pipeline exposes 0.45 s and carries 0.75 s inside the window. GPU 0's NVLink spends 0.7 s
    copying replicas, leaving 0.3 s: 1.2 - 0.3 = 0.9 s shows (the dispatch is collective, so
    the layer waits for GPU 0) -- more than the 0.8 s unchunked dispatch."""
    attn, dc = np.array([1.0]), np.array([0.3])
    copies = {"intra": np.array([[0.7, 0.0]])}  # [L=1, G=2]

    def expose(**kw):
        return port_exposure(attn, np.array([0.8]), ("intra",), StepExtras(**kw),
                             chunk_dispatch_s=dc)  # fmt: skip

    alone = expose(dispatch_chunks=4)
    assert alone["dispatch"][0] == pytest.approx(0.45)
    shared = expose(dispatch_chunks=4, migration_s=copies)
    assert shared["dispatch"][0] == pytest.approx(0.9)
    assert shared["migration"][0] == 0.0
    # copies on the NIC do not touch NVLink's budget
    nic = expose(dispatch_chunks=4, migration_s={"inter": copies["intra"]})
    assert nic["dispatch"][0] == pytest.approx(0.45)
    # one chunk: the dispatch after attention, whole
    assert expose()["dispatch"][0] == 0.8
    with pytest.raises(ValueError, match="chunk_dispatch_s"):
        port_exposure(attn, np.array([0.8]), ("intra",), StepExtras(dispatch_chunks=4))
    # prefetch on NVLink gets what the copies (0.7 s) and the chunks inside the window (0.75 s)
    # leave of GPU 1's 1 s: 0.25 s, 0.24 s after the latency = 2.4 of its 3 busy non-resident
    # slots (equal beliefs: 0.8 of each); 3 x 20 B after the gate: 0.01 + 0.06 s
    busy = np.ones((1, 2, 4), dtype=bool)
    pre = Prefetch(busy, np.zeros((1, 2, 4)), resident_slots(4, 0.25), 100.0, SLOW, "intra")
    gpu1 = {"intra": np.array([[0.0, 0.0]])}
    out = expose(dispatch_chunks=4, migration_s=gpu1, prefetch=pre)
    assert out["expert_fetch"][0] == pytest.approx(0.07)
    # copies past the window show; prefetch on the same port gets nothing left
    over = {"host": np.array([[1.5, 0.2]])}
    pre = Prefetch(busy[..., :2], np.zeros((1, 2, 2)), np.array([True, False]), 100.0, SLOW,
                   "host")  # fmt: skip
    out = port_exposure(attn, np.array([0.0]), ("intra",),
                        StepExtras(migration_s=over, prefetch=pre))  # fmt: skip
    assert out["migration"][0] == pytest.approx(0.5)
    # GPU 0: no budget left, its busy slot after the gate (0.11 s); GPU 1: 0.8 s left, fetched
    assert out["expert_fetch"][0] == pytest.approx(0.11)


def test_two_batch_all_to_alls_take_the_dispatch_ports_budget() -> None:
    """Under two-batch overlap one micro-batch's dispatch and the previous layer's last combine
    run on NVLink during the attention stages (``taken_s``, 1 s of a 2 s attention): replica
    copies worth the whole attention (2 s) expose 1 s there, 0 s without the overlap; copies on
    PCIe (not a dispatch port) keep the whole budget; prefetch on NVLink gets what is left."""
    attn, d, taken = np.array([2.0]), np.array([0.5]), np.array([1.0])
    nvl = {"intra": np.array([[2.0, 1.5]])}
    plain = port_exposure(attn, d, ("intra",), StepExtras(migration_s=nvl))
    tbo = port_exposure(attn, d, ("intra",), StepExtras(migration_s=nvl), taken_s=taken)
    assert plain["migration"][0] == 0.0
    assert tbo["migration"][0] == pytest.approx(1.0)
    assert tbo["dispatch"][0] == 0.5  # the micro-batches' own dispatch is priced by the schedule
    host = port_exposure(attn, d, ("intra",), StepExtras(migration_s={"host": nvl["intra"]}),
                         taken_s=taken)  # fmt: skip
    assert host["migration"][0] == 0.0
    # prefetch over NVLink (2 busy non-resident slots of 100 B per GPU) behind a schedule that
    # takes 1.95 s of the 2 s
    busy = np.ones((1, 2, 3), dtype=bool)
    pre = Prefetch(busy, np.zeros((1, 2, 3)), resident_slots(3, 1 / 3), 100.0, SLOW, "intra")
    few = {"intra": np.array([[0.0, 0.3]])}
    out = port_exposure(attn, d, ("intra",), StepExtras(migration_s=few, prefetch=pre),
                        taken_s=np.array([1.95]))  # fmt: skip
    # GPU 1: budget 2 - 1.95 = 0.05 s, all of it copies (0.3 s): 0.25 s of copies show, no
    # prefetch before the gate: 200 B after it (0.01 + 0.2 s); GPU 0: 0.05 s -> 0.04 s after
    # the latency, 40 B of 200 B: 160 B after the gate (0.01 + 0.16 s)
    assert out["migration"][0] == pytest.approx(0.25)
    assert out["expert_fetch"][0] == pytest.approx(0.21)


@pytest.mark.parametrize("mode", ["flat", "deepep", "deepep_low_latency"])
def test_corrective_alltoall_in_every_mode(mode: str) -> None:
    """10 MB of mispredicted copies from GPU 0 (node 0) to GPU 2 (node 1), one copy per
    token: an extra collective priced like every dispatch of its mode."""
    c, spec = cluster(2, 2), gqa_model()
    traffic = np.zeros((1, 4, 4))
    traffic[0, 0, 2] = 10 * MB
    got = float(dispatch_leg_s(spec, c, Workload("decode", 8, alltoall=mode), traffic,
                               copies_per_token=1)[0])  # fmt: skip
    inter = 10 * MB / INTER_BW
    want = {
        "flat": INTER_LAT + inter,
        # one destination node: IB once, then GPU 2 holds it already (forwarding to the
        # other GPU of node 1 is half the copies in expectation: (gpn - 1) / gpn)
        "deepep": max(INTRA_LAT + 5 * MB / INTRA_BW, INTER_LAT + inter),
        "deepep_low_latency": inter + DEEPEP_LL_FIXED_S,
    }[mode]
    assert got == pytest.approx(want, rel=1e-12)
    empty = dispatch_leg_s(spec, c, Workload("decode", 8, alltoall=mode), np.zeros((1, 4, 4)))
    assert float(empty[0]) == 0.0  # no miss, no round


def test_paper_dispatch_override_and_balanced_bound() -> None:
    spec, c, w = gqa_model(), cluster(1, 4), Workload("decode", batch_size=8, context_len=1000)
    ref = batch_cost(spec, c, w)
    d = np.full(ref.components["dispatch"].shape, 1e-3)
    got = batch_cost(spec, c, w, extras=StepExtras(dispatch_s=d))
    np.testing.assert_allclose(got.components["dispatch"], 1e-3)
    np.testing.assert_allclose(got.components["combine"], ref.components["combine"])
    assert float(got.total_s) == pytest.approx(
        float(ref.total_s) + (1e-3 - ref.components["dispatch"]).sum(), rel=1e-12
    )
    assert np.all(got.balanced_total_s <= got.total_s + 1e-15)


def test_chunked_dispatch_is_priced_for_every_step_and_bounded() -> None:
    """Each of the 8 chunks is a real DeepEP all-to-all of 1/8 of the traffic (its latency
    paid 8 times); the pipeline ``d8 + 7 * max(0, d8 - a/8)`` or the port budget,
    ``8 * d8 - a``, whichever shows more."""
    spec, c = gqa_model(), cluster(2, 2)
    w = Workload("prefill", batch_size=4, seq_len=512)
    plain = batch_cost(spec, c, w)
    chunked = batch_cost(spec, c, w, extras=StepExtras(dispatch_chunks=8))
    a = plain.components["attention"]
    traffic = traffic_from_slot_tokens(uniform_slot_tokens(spec, c, w), spec)
    d8 = dispatch_leg_s(spec, c, w, traffic / 8)
    want = np.maximum(d8 + 7 * np.maximum(0.0, d8 - a / 8), 8 * d8 - a)
    np.testing.assert_allclose(chunked.components["dispatch"], want, rtol=1e-12)
    assert np.all(chunked.components["dispatch"] >= d8)  # the last chunk is never hidden
    assert float(chunked.balanced_total_s) <= float(chunked.total_s)


def test_chunking_low_latency_dispatch_pays_every_kernel() -> None:
    """DeepEP low-latency decode: every chunk's kernel pays ``DEEPEP_LL_FIXED_S``, so 16 chunks
    hold the ports ``16 * d16`` seconds against an attention far shorter: chunking costs more
    than not chunking (the reviewer's DeepSeek-V3 case: 42.6 us per layer became 2.7 us)."""
    spec, c = gqa_model(), cluster(2, 2)
    w = Workload("decode", batch_size=64, context_len=512, alltoall="deepep_low_latency")
    plain = batch_cost(spec, c, w)
    chunked = batch_cost(spec, c, w, extras=StepExtras(dispatch_chunks=16))
    a, d = plain.components["attention"], plain.components["dispatch"]
    traffic = traffic_from_slot_tokens(uniform_slot_tokens(spec, c, w), spec)
    d16 = dispatch_leg_s(spec, c, w, traffic / 16)
    assert np.all(d16 > DEEPEP_LL_FIXED_S)
    want = np.maximum(d16 + 15 * np.maximum(0.0, d16 - a / 16), 16 * d16 - a)
    np.testing.assert_allclose(chunked.components["dispatch"], want, rtol=1e-12)
    assert np.all(chunked.components["dispatch"] > d)
    assert np.all(chunked.components["dispatch"] >= 16 * DEEPEP_LL_FIXED_S - a)
    assert float(chunked.balanced_total_s) <= float(chunked.total_s)


def test_chunked_attention_runs_on_the_sms_the_dispatch_leaves() -> None:
    """An engine whose DeepEP kernels hold 50 of the 100 SMs: the attention chunks that run
    beside a dispatch run at half speed (``chunk_pipeline_exposed`` at rate 0.5)."""
    spec, c = gqa_model(), cluster(2, 2)
    w = Workload("prefill", batch_size=4, seq_len=512)
    sms = {"flat": 0, "deepep": 50, "deepep_low_latency": 0}
    half = EngineProfile.from_config(EngineConfig(alltoall_sms=sms))
    full = batch_cost(spec, c, w, extras=StepExtras(dispatch_chunks=4))
    slow = batch_cost(spec, c, w, extras=StepExtras(dispatch_chunks=4), engine=half)
    a = full.components["attention"]
    traffic = traffic_from_slot_tokens(uniform_slot_tokens(spec, c, w), spec)
    d4 = dispatch_leg_s(spec, c, w, traffic / 4)
    want = np.maximum(chunk_pipeline_exposed(a, d4, 4, 0.5), 4 * d4 - a)
    np.testing.assert_allclose(slow.components["dispatch"], want, rtol=1e-12)
    assert np.all(slow.components["dispatch"] >= full.components["dispatch"])


def test_hidden_state_move_never_pays() -> None:
    """The ledger does not credit moving a token's pre-attention hidden state to its predicted
    expert: the K/V context its attention needs there outweighs the dispatch it saves."""
    models = [
        p.stem
        for p in (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml")
        if p.stem != "hf"
    ]  # hf: a config.json the user names
    workloads = [Workload("prefill", 1, 128), Workload("decode", 1, context_len=64)]
    for name in models:
        spec = load_model_spec(name)
        for w in workloads:
            moved, saved = hidden_state_move_bytes(spec, w)
            assert moved > saved, (name, w.phase, moved, saved)
    names = {m.name for m in LEDGER}
    assert {"nearest-replica dispatch", "chunked dispatch", "expert-weight prefetch",
            "pre-attention hidden-state move"} <= names  # fmt: skip


def test_hidden_state_move_bytes_by_hand() -> None:
    """d = 1024 in bf16 (2 B) and 2 KV heads of 128 in bf16: 2 * 2 * 128 * 2 = 1024 B of K/V
    per context token. Decode with 64 tokens of context, or a 128-token prompt (64 on
    average): 1024 * 2 + 64 * 1024 = 67584 B moved against 2048 B of dispatch saved."""
    spec = gqa_model()
    for w in (Workload("decode", 1, context_len=64), Workload("prefill", 1, 128)):
        assert hidden_state_move_bytes(spec, w) == (67584.0, 2048.0)


def test_stretched_end_by_hand() -> None:
    """A 1 s compute stage from t = 0 beside communication holding half the SMs."""

    def end(start, work, busy_from, busy_to, rate=0.5):
        return float(stretched_end(np.array(start), np.array(work), np.array(busy_from),
                                   np.array(busy_to), rate))  # fmt: skip

    # 0.5 s of work by 0.5, the other 0.5 s at half speed over 0.5-1.5
    assert end(0.0, 1.0, 0.5, 1.5) == pytest.approx(1.5)
    # 0.5 s by 0.5, 0.25 s over 0.5-1.0, the last 0.25 s at full speed: 1.25
    assert end(0.0, 1.0, 0.5, 1.0) == pytest.approx(1.25)
    # starting inside the busy interval 0-2 at a quarter speed: 0.25 s by 2, 0.75 s after
    assert end(1.0, 1.0, 0.0, 2.0, 0.25) == pytest.approx(2.75)
    assert end(0.0, 1.0, 2.0, 3.0) == 1.0  # no overlap
    assert end(0.0, 1.0, 0.5, 1.5, 1.0) == 1.0  # every SM


def test_bad_switches_name_the_key() -> None:
    with pytest.raises(ValueError, match="expert_fetch_link"):
        Ledger(resident_experts=0.5)
    with pytest.raises(ValueError, match=r"strategy\.split"):
        Ledger(split="nearest")
    with pytest.raises(ValueError, match=r"strategy\.migration_overlap"):
        Ledger(window=1.5)
    with pytest.raises(ValueError, match=r"strategy\.resident_experts"):
        Ledger(resident_experts=-0.1, fetch_link=SLOW)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=r"strategy\.dispatch_chunks"):
            Ledger(dispatch_chunks=bad)
    with pytest.raises(ValueError, match="port"):
        Prefetch(np.ones((1, 1, 1), bool), np.zeros((1, 1, 1)), np.array([False]), 1.0, SLOW,
                 "pcie")  # fmt: skip
    with pytest.raises(ValueError, match="expert_bytes"):
        Prefetch(np.ones((1, 1, 1), bool), np.zeros((1, 1, 1)), np.array([False]), -1.0, SLOW)


# ----------------------------------------------------------------------------- properties

FEW = settings(max_examples=60, deadline=None)
R = 6
BUSY = arrays(bool, (3, R))
SCORES = arrays(np.float64, (3, R), elements=hs.floats(-5, 5))


@FEW
@given(busy=BUSY, score=SCORES, left=hs.floats(0.0, 1.0), resident=hs.integers(0, R))
def test_prefetch_knowing_the_truth_is_never_slower(busy, score, left, resident) -> None:
    res = np.arange(R) < resident

    def exposed(s):
        return prefetch_exposed(Prefetch(busy, s, res, 100.0, SLOW), np.full(3, left))

    truth = exposed(busy.astype(float))
    assert np.all(truth <= exposed(score) + 1e-12)
    assert np.all(truth <= exposed(np.zeros((3, R))) + 1e-12)


@FEW
@given(busy=BUSY, left=hs.floats(0.0, 1.0), resident=hs.integers(0, R), seed=hs.integers(0, 99))
def test_a_belief_naming_only_idle_slots_never_beats_no_belief(busy, left, resident, seed) -> None:
    """A wrong guess never costs less than no guess: ranking idle slots first (every guess
    wrong) leaves at least as much of the busy slots to fetch after the gate."""
    res = np.arange(R) < resident
    wrong = np.where(busy, 0.0, np.random.default_rng(seed).uniform(0.1, 1.0, busy.shape))

    def exposed(s):
        return prefetch_exposed(Prefetch(busy, s, res, 100.0, SLOW), np.full(3, left))

    assert np.all(exposed(wrong) >= exposed(np.zeros((3, R))) - 1e-12)


@FEW
@given(attn=hs.floats(0.0, 1e-2), dc=hs.floats(0.0, 1e-2), chunks=hs.integers(1, 16),
       rate=hs.floats(0.05, 1.0))  # fmt: skip
def test_chunk_pipeline_between_its_stages_and_their_sum(attn, dc, chunks, rate) -> None:
    """The last dispatch starts after the whole attention and the first after its first chunk,
    and the dispatches run one after another: the pipeline ends at least
    ``max(attention + d_c, attention / c + c * d_c)``. The communication stream idles only
    while an attention chunk runs at full speed: it ends at most ``attention + c * d_c``. Fewer
    SMs never end it sooner; with every SM it is the two-stage pipeline's closed form."""
    a, d = np.array([attn]), np.array([dc])
    got = float(chunk_pipeline_exposed(a, d, chunks, rate)[0])
    full = float(chunk_pipeline_exposed(a, d, chunks)[0])
    eps = 1e-12 * (attn + chunks * dc) + 1e-18
    assert got >= max(dc, attn / chunks + chunks * dc - attn) - eps
    assert got <= chunks * dc + eps
    assert got >= full - eps
    assert full == pytest.approx(dc + (chunks - 1) * max(0.0, dc - attn / chunks), abs=eps)


@FEW
@given(
    attn=hs.floats(1e-4, 1e-2), d=hs.floats(0.0, 1e-2), chunks=hs.integers(1, 16),
    window=hs.floats(0.0, 1.0), copies=arrays(np.float64, (1, 4), elements=hs.floats(0, 2e-2)),
    more=arrays(np.float64, (1, 4), elements=hs.floats(0, 1e-2)), fixed=hs.floats(0.0, 1e-3),
    rate=hs.floats(0.1, 1.0), taken=hs.floats(0.0, 1e-2),
)  # fmt: skip
def test_port_exposure_bounds_and_monotone(attn, d, chunks, window, copies, more, fixed, rate,
                                           taken) -> None:  # fmt: skip
    """One chunk's dispatch is ``d / c`` plus its kernel's fixed cost. The exposed dispatch is
    at least the last chunk's, at least what the port budget cannot carry, at most every chunk
    after a fully slowed attention; it never falls when copies, the chunk's dispatch, the SMs
    the dispatch holds or the two-batch schedule's port time grow."""
    a, dd = np.array([attn]), np.array([d])
    dc = np.array([d / chunks + fixed])

    def expose(m, w=window, dc=dc, r=rate, tk=None):
        x = StepExtras(window=w, dispatch_chunks=chunks, migration_s={"intra": m})
        out = port_exposure(a, dd, ("intra",), x, chunk_dispatch_s=dc, compute_rate=r, taken_s=tk)
        return out["dispatch"] + out["migration"] + out["expert_fetch"], out

    t, out = expose(copies)
    disp = float(out["dispatch"][0])
    eps = 1e-15
    if chunks == 1:
        assert disp == d
    else:
        port = chunks * dc[0]
        assert disp >= dc[0] - eps  # the last chunk's dispatch is never hidden
        assert disp >= port - window * attn - eps  # one budget per port
        assert disp <= port + (1 / rate - 1) * attn + 1e-12
        # the port idles only while attention runs at full speed: never past every chunk
        assert disp <= port + 1e-12
        if rate == 1.0:
            assert disp >= dc[0] + (chunks - 1) * max(0.0, dc[0] - attn / chunks) - eps
        assert np.all(expose(copies, dc=dc * 1.5)[1]["dispatch"] >= disp - eps)
        assert np.all(expose(copies, r=rate / 2)[1]["dispatch"] >= disp - eps)
    assert np.all(out["migration"] >= copies.max() - window * attn - eps)
    assert np.all(t <= expose(copies, w=0.0)[0] + eps)  # a window hides, never costs
    assert np.all(expose(copies + more)[0] >= t - eps)  # more copies never cost less
    assert np.all(expose(copies, tk=np.array([taken]))[0] >= t - eps)  # nor a busier port


FAST = LinkProfile("fast", bandwidth=1e6, latency_s=1e-4)  # a 1,000 B slot takes 1 ms


@FEW
@given(
    attn=hs.floats(1e-4, 1e-2), window=hs.floats(0.0, 1.0), chunks=hs.integers(1, 16),
    dc=hs.floats(0.0, 2e-3), copies=arrays(np.float64, (1, 4), elements=hs.floats(0, 2e-2)),
    taken=hs.floats(0.0, 1e-2), rate=hs.floats(0.1, 1.0),
    score=arrays(np.float64, (1, 4, 3), elements=hs.floats(-5, 5)),
)  # fmt: skip
def test_one_port_budget_is_never_spent_twice(attn, window, chunks, dc, copies, taken, rate,
                                               score) -> None:  # fmt: skip
    """One NVLink port per GPU carries, beside a layer's attention, what the two-batch schedule
    takes, replica copies, the chunked dispatch's port time and prefetch. On every GPU the
    copies it hides plus the chunks' port time inside the window never exceed what the
    schedule leaves of ``window * attention``; copies show exactly past that budget, and
    prefetch waits at least as long as with only the rest of the budget before the gate."""
    a = np.array([attn])
    busy = np.ones((1, 4, 3), dtype=bool)
    pre = Prefetch(busy, score, resident_slots(3, 1 / 3), 1000.0, FAST, "intra")
    x = StepExtras(window=window, dispatch_chunks=chunks, migration_s={"intra": copies},
                   prefetch=pre)  # fmt: skip
    out = port_exposure(a, np.array([chunks * dc]), ("intra",), x,
                        chunk_dispatch_s=np.array([dc]), compute_rate=rate,
                        taken_s=np.array([taken]))  # fmt: skip
    budget = max(window * attn - taken, 0.0)
    eps = 1e-12 * (attn + chunks * dc + copies.max()) + 1e-18
    hidden = np.minimum(copies, budget)  # [L, G] copy seconds each GPU's port carries
    inside = chunks * dc - float(out["dispatch"][0]) if chunks > 1 else 0.0
    assert inside >= -eps
    assert np.all(hidden + inside <= budget + eps)
    assert float(out["migration"][0]) == pytest.approx(max(copies.max() - budget, 0.0), abs=eps)
    left = np.maximum(budget - hidden - inside, 0.0)
    assert float(out["expert_fetch"][0]) >= float(prefetch_exposed(pre, left).max()) - eps


def _context(loads, nodes, per_node, r_extra, ledger, scale, horizon=4.0) -> st.Context:
    nl, e = loads.shape[1:]
    spec = gqa_model(num_layers=nl, num_experts=e)
    trace = TokenTrace(
        experts=np.zeros((1, nl, 2), dtype=np.int16), token_id=np.zeros(1, np.int32),
        sequence_id=np.zeros(1, np.int32), position=np.zeros(1, np.int32), num_experts=e,
    )  # fmt: skip
    data = EvalData(trace, trace, loads[:2], loads[2:], 64, "test", token_scale=scale)
    cl = cluster(nodes, per_node)
    slots = -(-e // cl.num_gpus) + r_extra
    w = Workload(phase="prefill", batch_size=1, seq_len=64 * int(scale))
    return st.Context(spec, cl, w, data, slots, ledger, "spare", "peer", horizon)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=hs.integers(0, 2**31 - 1),
    shape=hs.sampled_from([(1, 2, 4), (1, 4, 8), (2, 2, 8)]),
    r_extra=hs.integers(0, 2),
    window=hs.sampled_from([0.0, 0.5, 1.0]),
    resident=hs.sampled_from([1.0, 0.5, 0.0]),
    prefetch=hs.booleans(),
    chunks=hs.sampled_from([1, 4]),
    replica_choice=hs.booleans(),
    scale=hs.sampled_from([1.0, 2.0]),
    skew=hs.floats(0.2, 3.0),
)
def test_bounds_hold_by_construction(seed, shape, r_extra, window, resident, prefetch, chunks,
                                     replica_choice, scale, skew) -> None:  # fmt: skip
    """Over random loads, clusters, sampling and every mechanism switch: no balancing <= the
    oracle <= every followable strategy (a forecast, a Token-to-Expert guess at any accuracy,
    static EPLB placement, periodic EPLB with its rebalance stall amortised);
    nothing beats free-migration perfect knowledge; perfect knowledge of a plan sequence is
    never slower than any belief about it."""
    nodes, per_node, e = shape
    rng = np.random.default_rng(seed)
    loads = np.floor(rng.gamma(skew, 1.0, (5, 2, e)) * 40)  # 2 history + 3 held-out batches
    ledger = Ledger(replica_choice=replica_choice, dispatch_chunks=chunks, prefetch=prefetch,
                    resident_experts=resident, fetch_link=SLOW, window=window)  # fmt: skip
    ctx = _context(loads, nodes, per_node, r_extra, ledger, scale)

    def price(r: st.Routed) -> np.ndarray:
        return price_routed(r, ctx.spec, ctx.cluster, ctx.workload, ledger).total_s

    def scaled(r: st.Routed) -> st.Routed:
        return st.scaled(r, scale)

    none, own = scaled(st.no_balancing(ctx)), scaled(st.oracle(ctx))
    test = ctx.data.test_loads
    forecast = scaled(st.planned(ctx, loads[1:4], "distribution:last_batch", "distribution"))
    wrong = rng.permutation(test, axis=-1)
    guesses = [scaled(st.planned(ctx, expected_split(test, wrong, a).guessed, f"token:{a}",
                                 "token")) for a in (0.0, 0.6, 1.0)]  # fmt: skip
    costs = RebalanceCosts("test", cpu_s=1e-4, per_layer_s=1e-5)
    cadence = st.EplbCadence(window=2, interval=2, asynchronous=bool(seed % 2), costs=costs)
    deployed = [scaled(st.static_eplb(ctx, r)) for r in st.eplb_redundant(ctx)]
    deployed.append(scaled(st.engine_eplb(ctx, cadence)))  # its stall amortised per step
    followed = [none, forecast, *guesses, *deployed]
    cands = [own, *(st.perfect_knowledge(r, r.name) for r in followed)]
    totals = np.stack([price(c) for c in cands])
    oracle = st.fastest(cands, totals, "oracle")
    t_oracle = price(oracle).mean()
    for r in followed:
        assert t_oracle <= price(r).mean() * (1 + 1e-12), r.name
        assert np.all(price(st.perfect_knowledge(r, "p")) <= price(r) * (1 + 1e-12)), r.name
    free = st.free_migration_candidates(ctx, [oracle, *followed])
    ceiling = st.per_batch_fastest(free, np.stack([price(c) for c in free]), "free")
    for r in [oracle, *followed]:
        assert np.all(price(ceiling) <= price(r) * (1 + 1e-12)), r.name


def test_prefetch_under_expert_tp_moves_one_gpus_slice() -> None:
    """Layout ep4_tp2: each GPU of a rank holds half of each of its experts' width, so a busy
    non-resident slot moves half an expert over the fetch link (as a replica copy does)."""
    spec = gqa_model()
    full = expert_weight_bytes(spec)  # 3 * 1024 * 2048 * 2 B
    assert full == 3 * 1024 * 2048 * 2
    pcie = LinkProfile("pcie", bandwidth=1e10, latency_s=1e-5)
    layout = ParallelConfig("ep4_tp2", ep=4, tp=2, attention="tp")
    slots = np.ones((1, 1, 2))  # [L=1, G=1, R=2]: both slots busy, slot 1 not resident
    for parallel, want in ((None, 1e-5 + full / 1e10), (layout, 1e-5 + full / 2 / 1e10)):
        ledger = Ledger(resident_experts=0.5, fetch_link=pcie, prefetch=False, parallel=parallel)
        pre = ledger.extras(spec, slots, np.ones((1, 1, 2), bool), None, {}).prefetch
        assert pre.expert_bytes == full / ledger.expert_tp
        assert float(prefetch_exposed(pre, np.zeros((1, 1)))[0, 0]) == pytest.approx(want)
    with pytest.raises(ValueError, match=r"parallel\.tp"):
        Ledger(parallel=ParallelConfig("bad", tp=0))


def test_token_level_knowledge_buys_nothing_a_histogram_does_not() -> None:
    """Under our physics a Token-to-Expert strategy is priced exactly as a Distribution-Only one
    holding its guesses' histogram: nothing moves before the gate but weights and replicas."""
    rng = np.random.default_rng(3)
    loads = np.floor(rng.gamma(0.7, 1.0, (5, 2, 8)) * 40)
    ledger = Ledger(dispatch_chunks=4, resident_experts=0.5, fetch_link=SLOW, window=0.5)
    ctx = _context(loads, 1, 4, 1, ledger, 1.0)
    wrong = rng.permutation(ctx.data.test_loads, axis=-1)
    for a in (0.0, 0.5, 1.0):
        split = expected_split(ctx.data.test_loads, wrong, a)
        t2e = st.planned(ctx, split.guessed, "token:x", "token")
        t2e.token_routing = st.token_routing(ctx, t2e.plans, split)
        as_do = st.Routed(**{**t2e.__dict__, "family": "distribution", "token_routing": None})
        got, want = (price_routed(r, ctx.spec, ctx.cluster, ctx.workload, ledger).total_s
                     for r in (t2e, as_do))  # fmt: skip
        np.testing.assert_array_equal(got, want)


def test_expected_prefetch_is_monotone_in_accuracy() -> None:
    """Beliefs ``a * truth + (1 - a) * noise``: the expected exposure after the gate never rises
    with ``a`` (Monte Carlo over noise draws; a fixed plan, so only the belief moves)."""
    rng = np.random.default_rng(0)
    busy = rng.random((4, 1, 8)) < 0.4  # [L=4, G=1, R=8]
    res = np.arange(8) < 2
    draws = rng.random((400, 4, 1, 8))
    means = []
    for a in (0.0, 0.25, 0.5, 0.75, 1.0):
        score = a * busy + (1 - a) * draws
        p = Prefetch(np.broadcast_to(busy, draws.shape), score, res, 100.0, SLOW)
        means.append(float(prefetch_exposed(p, np.full(draws.shape[:-1], 0.25)).mean()))
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(means)), means
    assert means[-1] < means[0]


def test_no_balancing_prefetches_in_the_history_order() -> None:
    """The baseline has the history's mean load, like every static placement: its belief (the
    prefetch order of non-resident slots) is that mean routed through its static plan, so no
    strategy's speed-up over it is a prefetch order the baseline could have had."""
    loads = np.array([[[30.0, 1, 1, 8]], [[34.0, 1, 3, 2]], [[5.0, 9, 1, 1]]])  # 2 history + 1
    ledger = Ledger(prefetch=True, resident_experts=0.5, fetch_link=SLOW)
    ctx = _context(loads, 1, 2, 0, ledger, 1.0)
    base = st.no_balancing(ctx)
    mean = np.array([[[32.0, 1, 2, 5]]])  # the two history batches' mean
    expected = ctx.simulate_each([ctx.static], mean).slot_tokens
    np.testing.assert_allclose(base.belief, expected)
    assert not np.allclose(base.belief, base.sim.slot_tokens)  # not the held-out truth
