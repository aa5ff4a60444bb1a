"""gps-eplb: static EPLB placement, rebalance stall, redundant-expert memory, interval choice,
the pricing seam's step-time model, replay helpers, flags and the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gps.advisor.eplb import analyse
from gps.advisor.eplb.analysis import check_settings
from gps.advisor.eplb.flags import engine_flags, sglang_flags, vllm_flags
from gps.advisor.eplb.pricing import price_slot_tokens, step_time_model
from gps.advisor.eplb.replay import dispatch_balanced_ratio, load_ratio
from gps.advisor.eplb.schedules import (
    best_interval,
    interval_curve,
    periodic_schedule,
    transfer_mode,
    window_drift,
)
from gps.advisor.eplb.verdict import Priced, choose, describe_tie
from gps.advisor.ledger import Ledger
from gps.advisor.uncertainty import speedup_interval
from gps.config import EplbConfig
from gps.cost.redundancy import (
    expert_bytes_per_rank,
    kv_capacity_tokens,
    kv_tokens_lost,
    max_concurrency,
    redundant_bytes_per_rank,
    valid_redundant,
)
from gps.engine import load_engine
from gps.eplb_app import main as eplb_main
from gps.model import load_model_spec
from gps.plans.eplb_placement import (
    eplb_placement,
    physical_slots,
    physical_to_logical_map,
    plan_from_physical_map,
    sglang_init_expert_location,
    trivial_placement,
)
from gps.plans.plan import Plan
from gps.plans.rebalance import RebalanceCosts, amortised_step_s, rebalance_stall
from gps.profiles import load_cluster, load_cluster_config
from gps.traces.engine_stats import EngineLoadStats, sglang_stat_dump, write_sglang_dump
from gps.traces.fluctuation import FluctuationModel
from gps.workload import Workload

# ------------------------------------------------------------------------ placement


def test_eplb_placement_fills_every_slot_and_balances():
    rng = np.random.default_rng(0)
    load = rng.pareto(1.2, size=(3, 16)) * 100 + 1
    plan = eplb_placement(load, 4, 4)  # 20 physical experts, 5 per GPU
    assert plan.slot_expert.shape == (3, 4, 5) and (plan.slot_expert >= 0).all()
    assert (plan.replica_counts() >= 1).all() and plan.replica_counts().sum(axis=1).tolist() == [
        20
    ] * 3
    static = trivial_placement(3, 16, 4, 0).gpu_load(load).max(axis=1)
    assert (plan.gpu_load(load).max(axis=1) < static).all()
    zero = eplb_placement(np.zeros((1, 8)), 2, 0)  # no load at all: still a full placement
    assert (zero.slot_expert >= 0).all()


def test_physical_maps_round_trip_and_sglang_file():
    plan = eplb_placement(np.arange(1, 9, dtype=float)[None], 2, 2)
    m = physical_to_logical_map(plan)
    assert m.shape == (1, 10) and set(m.ravel()) == set(range(8))
    back = plan_from_physical_map(m, 2)
    assert (back.slot_expert == plan.slot_expert).all()
    doc = sglang_init_expert_location(plan)
    assert list(doc) == ["physical_to_logical_map"] and len(doc["physical_to_logical_map"][0]) == 10
    assert trivial_placement(1, 4, 2, 2).slot_expert.tolist() == [[[0, 1, 2], [3, 0, 1]]]


@pytest.mark.parametrize("r", [-1, 1, 3])
def test_redundant_counts_the_engines_refuse(r):
    with pytest.raises(ValueError, match="num_redundant_experts"):
        physical_slots(8, 4, r)


def test_valid_redundant_lists_what_both_engines_accept():
    assert valid_redundant(256, 32, 2) == [0, 32, 64]
    assert valid_redundant(256, 320, 2) == [64, 384]  # 256 + R must divide over 320 GPUs
    assert valid_redundant(64, 8, 1) == [0, 8]


@pytest.mark.parametrize(
    ("name", "gpus", "link_gbps"),
    [
        ("b200_nvlink", 8, 675.0),
        ("gb200_nvl32", 32, 675.0),
        ("mi300x_if", 8, 336.0),
        ("mi355x_if", 8, 403.2),
    ],
)
def test_stall_validation_clusters_load(name, gpus, link_gbps):
    """900 / 448 / 537.6 GB/s per direction at the assumed 0.75 efficiency."""
    cluster = load_cluster_config(name)
    assert cluster.num_gpus == gpus
    assert cluster.intra_link.gpu_bandwidth / 1e9 == pytest.approx(link_gbps)


# ------------------------------------------------------------------------ rebalance stall


def test_stall_bytes_of_one_rebalance_two_gpus_four_experts():
    """2 GPUs x 2 slots, experts {0,1} | {2,3} -> {0,2} | {1,3}: GPU 0 receives expert 2 and
    GPU 1 expert 1 (W bytes each), in both layers; nothing else moves."""
    cluster = load_cluster_config("h100_nvlink")
    cluster = load_cluster(
        {"name": "two", "gpu": "h100_sxm5_80gb", "intra_node_link": "nvlink4", "gpus_per_node": 2}
    )
    old = Plan(np.array([[[0, 1], [2, 3]]] * 2), 4)
    new = Plan(np.array([[[0, 2], [1, 3]]] * 2), 4)
    w = 100e6
    costs = RebalanceCosts(engine="test", cpu_s=0.5, per_layer_s=0.01)
    r = rebalance_stall(old, new, w, cluster, costs, synchronous=True)
    assert r.bytes_per_gpu.tolist() == [[w, w], [w, w]]
    link = cluster.intra_link  # 450 GB/s x 0.75, 10 us
    per_layer = link.latency_s + w / link.gpu_bandwidth
    assert per_layer == pytest.approx(10e-6 + 100e6 / 337.5e9)
    assert r.transfer_s.tolist() == pytest.approx([per_layer, per_layer])
    assert r.stall_s == pytest.approx(0.5 + 2 * (per_layer + 0.01))
    assert r.max_bytes_per_gpu == 2 * w
    chunked = rebalance_stall(old, new, w, cluster, costs, layers_per_chunk=1)
    assert chunked.passes == 2 and chunked.stall_s == pytest.approx(r.stall_s)
    assert chunked.max_pass_stall_s == pytest.approx(0.5 + per_layer + 0.01)
    asynchronous = rebalance_stall(old, new, w, cluster, costs, synchronous=False)
    assert asynchronous.stall_s == 0.0 and asynchronous.lag_s == pytest.approx(r.stall_s)
    same = rebalance_stall(old, old, w, cluster, costs)
    assert same.max_bytes_per_gpu == 0 and same.stall_s == pytest.approx(0.5 + 2 * 0.01)
    assert amortised_step_s(0.01, 1.0, 100) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="interval_steps"):
        amortised_step_s(0.01, 1.0, 0)


def test_vllm_per_layer_constant_is_its_documented_fit():
    """vLLM PR #28369: 260 ms GPU time over DeepSeek-V2-Lite's 26 MoE layers, minus the
    worst-case transfer of 8 bf16 experts per GPU over NVLink 4."""
    spec = load_model_spec("deepseek_v2_lite")
    link = load_cluster_config("h100_nvlink").intra_link
    expert = 3 * 2048 * 1408 * 2
    transfer = link.latency_s + 8 * expert / link.gpu_bandwidth
    vllm = RebalanceCosts.of(load_engine("vllm"))
    assert 0.260 / 26 - transfer == pytest.approx(vllm.per_layer_s, abs=5e-5)
    assert spec.num_experts == 64 and vllm.sources["per_layer_s"].startswith("fit")


def test_rebalance_costs_come_from_the_engine_profiles():
    sglang, vllm = (RebalanceCosts.of(load_engine(n)) for n in ("sglang", "vllm"))
    assert (sglang.cpu_s, vllm.cpu_s) == (1.0, 0.010)
    assert sglang.per_layer_s == vllm.per_layer_s  # assumed equal (no SGLang measurement)
    assert "#7879" in sglang.sources["cpu_s"] and "#28369" in vllm.sources["cpu_s"]
    assert load_engine("vllm").eplb.asynchronous and not load_engine("sglang").eplb.asynchronous
    with pytest.raises(ValueError, match=r"trtllm.*no EPLB"):
        RebalanceCosts.of(load_engine("trtllm"))


# ------------------------------------------------------------------------ memory


def test_memory_per_redundant_expert_matches_vllms_formula():
    """vLLM docs: NUM_MOE_LAYERS * BYTES_PER_EXPERT * (E + R) / EP; ~2.4 GB for one redundant
    expert per EP rank on DeepSeek-V3 (58 MoE layers, 3 * 7168 * 2048 FP8 bytes)."""
    spec = load_model_spec("deepseek_v3")
    per_expert = 3 * 7168 * 2048
    assert redundant_bytes_per_rank(spec, 32, 32) == 58 * per_expert
    assert redundant_bytes_per_rank(spec, 32, 32) / 2**30 == pytest.approx(2.38, abs=0.01)
    assert expert_bytes_per_rank(spec, 32, 32) == 58 * per_expert * 288 / 32
    # the KV cache loses those bytes at (512 + 64) latent elements x 2 bytes x 61 layers
    assert kv_tokens_lost(spec, 32, 32) == pytest.approx(58 * per_expert / (576 * 2 * 61))
    cluster = load_cluster_config("h800_4node_ib")
    wl = Workload(
        phase="decode", batch_size=2048, seq_len=1, context_len=4096, alltoall="deepep_low_latency"
    )
    lost = kv_capacity_tokens(spec, cluster, wl, 0) - kv_capacity_tokens(spec, cluster, wl, 32)
    assert lost == pytest.approx(kv_tokens_lost(spec, 32, 32))
    assert max_concurrency(spec, cluster, wl, 32) <= max_concurrency(spec, cluster, wl, 0)


# ------------------------------------------------------------------------ interval choice


def test_interval_optimum_on_a_linear_drift():
    """A plan's step time grows by a per step of age: the mean over an interval I is
    t0 + a (I - 1) / 2, plus the stall S / I; the optimum is I* = sqrt(2 S / a) = 20."""
    t0, a, stall = 0.01, 1e-4, 0.02
    ages = t0 + a * np.arange(200)
    intervals = [5, 10, 20, 40, 80]
    curve, extra = interval_curve(ages, stall, intervals)
    expected = [t0 + a * (i - 1) / 2 + stall / i for i in intervals]
    assert curve == pytest.approx(expected) and not extra.any()
    assert best_interval(curve, intervals) == round(math.sqrt(2 * stall / a)) == 20
    # an asynchronous rebalance landing 10 steps late serves ages 10 .. 10 + I - 1
    lagged, _ = interval_curve(ages, 0.0, [5, 20], lag_steps=10)
    assert math.isinf(lagged[0]) and lagged[1] == pytest.approx(t0 + a * (10 + 19 / 2))
    far, extrapolated = interval_curve(ages[:10], stall, [20])
    assert extrapolated.all() and np.isfinite(far).all()
    with pytest.raises(ValueError, match="interval"):
        interval_curve(ages, stall, [0])


def test_window_drift_is_the_window_mean_predictors_error():
    """The drift is predictors.metrics.horizon_errors of a window_mean forecast (the forecast
    module's metric), on the same forecast origins."""
    from gps.traces.trace import LoadSeries
    from predictors import make_predictor
    from predictors.metrics import horizon_errors

    rng = np.random.default_rng(2)
    counts = rng.integers(1, 50, size=(40, 2, 6))
    p = counts / counts.sum(-1, keepdims=True)
    series = LoadSeries(counts=counts, step=np.arange(40))
    ours = window_drift(p, 4, [1, 5])
    # origins t - h >= window - 1 = 3: the train split n = 3 + h
    for h, frac, mine in ((1, 0.1, ours[0]), (5, 0.2, ours[1])):
        theirs = horizon_errors(
            series, make_predictor("window_mean", window=4), [h], train_fraction=frac
        )
        assert mine == pytest.approx(theirs[h])
    assert window_drift(p, 4, [39]) == [None]


# ------------------------------------------------------------------------ replay


def _brute_ratio(plan: Plan, loads: np.ndarray) -> np.ndarray:
    gpu = plan.gpu_load(loads)
    return gpu.max(-1) / gpu.mean(-1)


def _brute_water(plan: Plan, load: np.ndarray, passes: int = 2) -> np.ndarray:
    """Per layer, by loops: start from the even split, then ``passes`` sweeps over the
    replicated experts (most replicas first, then id), each expert's copies lifted off and
    poured back onto its holders in small drops, lowest GPU first."""
    nl = load.shape[0]
    out = []
    for layer in range(nl):
        per_gpu = plan.expert_gpu_counts()[layer]  # [G, E]
        counts = per_gpu.sum(0)
        gpu = (per_gpu * (load[layer] / np.maximum(counts, 1))).sum(1)
        multi = np.flatnonzero(counts > 1)
        order = multi[np.argsort(-counts[multi], kind="stable")]
        alloc = {e: per_gpu[:, e] * load[layer, e] / counts[e] for e in order}
        for _ in range(passes):
            for e in order:
                gpu -= alloc[e]
                hs = np.flatnonzero(per_gpu[:, e])
                new = np.zeros(plan.num_gpus)
                for _ in range(2000):  # pour in small drops
                    k = hs[np.argmin(gpu[hs] + new[hs])]
                    new[k] += load[layer, e] / 2000
                gpu += new
                alloc[e] = new
        out.append(gpu.max() / gpu.mean())
    return np.asarray(out)


def test_load_ratio_and_dispatch_balancing_against_loops():
    rng = np.random.default_rng(7)
    load = rng.pareto(1.0, size=(5, 2, 12)) * 10 + 0.5
    plan = eplb_placement(load.mean(0), 4, 4)
    assert load_ratio(plan, load) == pytest.approx(_brute_ratio(plan, load))
    balanced = dispatch_balanced_ratio(plan, load)
    assert (balanced <= load_ratio(plan, load) + 1e-9).all()  # never above the even split
    for s in range(5):
        assert balanced[s] == pytest.approx(_brute_water(plan, load[s], 1), rel=2e-3)
        two = dispatch_balanced_ratio(plan, load[s : s + 1], passes=2)[0]
        assert two == pytest.approx(_brute_water(plan, load[s], 2), rel=2e-3)
        assert (two <= balanced[s] + 1e-9).all()  # another sweep never raises the busiest GPU
    assert dispatch_balanced_ratio(plan, load, passes=0) == pytest.approx(load_ratio(plan, load))
    chunked = dispatch_balanced_ratio(plan, load, chunk_steps=2)
    assert chunked == pytest.approx(balanced)
    for seed in range(4):  # many replicated experts, batches that drift from the plan's mean
        g = np.random.default_rng(seed)
        mean = g.pareto(1.0, size=(3, 32)) + 0.1
        wide = eplb_placement(mean, 8, 16)
        batch = g.gamma(0.3, 1.0, size=(6, 3, 32)) * mean * 50
        assert (dispatch_balanced_ratio(wide, batch) <= load_ratio(wide, batch) + 1e-9).all()
    flat = eplb_placement(load.mean(0), 4, 0)
    assert dispatch_balanced_ratio(flat, load) == pytest.approx(load_ratio(flat, load))


def test_periodic_schedule_plans_from_the_window_and_lags():
    rng = np.random.default_rng(1)
    hist, loads = rng.random((6, 1, 8)) * 10, rng.random((10, 1, 8)) * 10
    sched = periodic_schedule(hist, loads, window=3, interval=4, num_gpus=2, num_redundant=0)
    assert sched.starts == [0, 4, 8]
    first = eplb_placement(hist[-3:].mean(0), 2, 0)
    assert (sched.plans[0].slot_expert == first.slot_expert).all()
    late = periodic_schedule(hist, loads, 3, 4, 2, 0, lag_steps=3)
    assert late.starts == [0, 7]  # the plan of step 8 would land at 11: beyond the span
    assert sched.ratios(loads).shape == (10, 1)


def test_a_strategy_row_takes_gps_interval_with_its_stall_in_every_step():
    """``Priced.summary`` is ``gps.advisor.uncertainty.speedup_interval`` (moving blocks of
    ``block`` steps, seeded) on the strategy's steps plus its amortised stall: seeded, the
    point inside, and the same numbers as calling it directly."""
    rng = np.random.default_rng(3)
    base = 1.0 + rng.random(200) * 0.1
    strat = base / 1.2 + rng.random(200) * 0.01
    row = Priced("periodic", 8, strat, extra_s=0.002).summary(base, block=10, resamples=200,
                                                              seed=4)  # fmt: skip
    assert row["speedup"] == pytest.approx(base.mean() / (strat.mean() + 0.002))
    lo, hi = row["speedup_ci95"]
    assert lo <= row["speedup"] <= hi
    assert (lo, hi) == speedup_interval(base, strat + 0.002, seed=4, resamples=200, block=10)
    again = Priced("periodic", 8, strat, extra_s=0.002).summary(base, block=10, resamples=200,
                                                                seed=4)  # fmt: skip
    assert again == row
    assert row["step_s"] == pytest.approx(strat.mean() + 0.002)


# ------------------------------------------------------------------------ the pricing seam


@pytest.mark.parametrize(
    ("engine", "overlap"),
    [("ideal", "none"), ("sglang", "none"), ("vllm", "none"), ("sglang", "two_batch")],
)
def test_step_time_model_matches_direct_pricing(engine, overlap):
    """Interpolating per-layer times over load ratios reproduces the cost model on random
    per-GPU loads (data-parallel sources: the busiest GPU sets each layer), under each engine
    profile (its per-step time, all-to-all mode and launch mode) and with two-batch overlap."""
    spec = load_model_spec("deepseek_v2_lite")
    cluster = load_cluster_config("h100_nvlink")
    wl = Workload(phase="prefill", batch_size=4, seq_len=1024, context_len=1024, overlap=overlap)
    ledger = Ledger(engine=load_engine(engine))
    rng = np.random.default_rng(0)
    load = rng.pareto(1.5, size=(3, 26, 64)) + 0.2
    load *= wl.tokens_per_step * spec.top_k / load.sum(-1, keepdims=True)
    plan = eplb_placement(load.mean(0), 8, 8)
    counts = plan.replica_counts()
    st = np.take_along_axis(
        (load / counts)[:, :, None, :], plan.slot_expert[None].reshape(1, 26, 1, -1), -1
    )
    st = st.reshape(3, 26, 8, 9)
    direct = price_slot_tokens(spec, cluster, wl, ledger, st)
    x = load_ratio(plan, load)
    model = step_time_model(spec, cluster, wl, ledger, 9, float(x.max()))
    assert model.step_s(x) == pytest.approx(direct.total_s, rel=0.02)
    assert model.balanced_step_s <= model.step_s(x).min()
    assert model.engine_s == pytest.approx(float(direct.engine_s[0]))


def test_the_seam_prices_the_engine_profile_per_step_costs():
    """vLLM's profile adds its 1 ms scheduler time (and the sampler's passes) to every step;
    the ideal engine adds nothing; the seam is ``price_step`` of the mechanism ledger."""
    from gps.advisor.ledger import price_step
    from gps.cost.step import StepRouting

    spec = load_model_spec("deepseek_v2_lite")
    cluster = load_cluster_config("h100_nvlink")
    wl = Workload(phase="decode", batch_size=64, seq_len=1, context_len=1024,
                  alltoall="deepep_low_latency")  # fmt: skip
    st = np.full((1, 26, 8, 8), wl.tokens_per_step * 6 / 64)
    ideal = step_time_model(spec, cluster, wl, Ledger(), 8, 2.0)
    vllm = step_time_model(spec, cluster, wl, Ledger(engine=load_engine("vllm")), 8, 2.0)
    assert ideal.engine_s == 0.0 and vllm.engine_s > 1e-3
    assert vllm.fixed_s - ideal.fixed_s == pytest.approx(vllm.engine_s)
    ledger = Ledger(engine=load_engine("vllm"), dispatch_chunks=4)
    direct = price_step(spec, cluster, wl, ledger, StepRouting(slot_tokens=st), np.asarray(True),
                        None, {})  # fmt: skip
    seam = price_slot_tokens(spec, cluster, wl, ledger, st)
    assert seam.total_s == pytest.approx(direct.total_s)
    with pytest.raises(ValueError, match="resident_experts"):
        price_slot_tokens(spec, cluster, wl, Ledger(resident_experts=0.5,
                                                    fetch_link=cluster.intra_link), st)  # fmt: skip


def _row(strategy: str, r: int, speedup: float, lo: float, hi: float) -> dict:
    return {"strategy": strategy, "num_redundant_experts": r, "speedup": speedup,
            "speedup_ci95": [lo, hi]}  # fmt: skip


def test_verdict_overlapping_intervals_tie_and_the_simplest_wins():
    """``gps``'s rule: intervals overlapping the fastest one's tie with it, the simplest of the
    tied is the verdict (static before dispatch, then fewer redundant experts), and the tie is
    said; a row whose interval ends below the leader's start is not tied."""
    rows = [
        _row("dispatch", 8, 1.100, 1.090, 1.110),
        _row("static", 8, 1.097, 1.085, 1.105),  # overlaps [1.090, 1.110]
        _row("static", 0, 1.080, 1.070, 1.091),  # overlaps at its top
        _row("no_balancing", 0, 1.0, 1.0, 1.0),  # clear of it
    ]
    verdict, tied = choose(rows)
    assert verdict is rows[2] and tied == rows[:3]  # fastest first
    tie = describe_tie(verdict, tied)
    assert tie["leader"] == {"strategy": "dispatch", "num_redundant_experts": 8}
    assert [(t["strategy"], t["num_redundant_experts"]) for t in tie["strategies"]] == [
        ("dispatch", 8), ("static", 8), ("static", 0)]  # fmt: skip
    assert "3 candidates' 95% intervals overlap" in tie["text"]
    assert "static (R=0), not the fastest (dispatch, R=8)" in tie["text"]
    # a row overlapping a tied row but not the leader is not tied (no chaining)
    verdict, tied = choose([*rows[:2], _row("static", 0, 1.080, 1.070, 1.089)])
    assert verdict is rows[1] and len(tied) == 2


def test_verdict_clear_intervals_give_the_leader_and_no_tie():
    rows = [
        _row("no_balancing", 0, 1.0, 1.0, 1.0),
        _row("static", 0, 1.050, 1.040, 1.060),
        _row("dispatch", 8, 1.100, 1.090, 1.110),  # clear of every other interval
    ]
    verdict, tied = choose(rows)
    assert verdict is rows[2] and tied == [rows[2]] and describe_tie(verdict, tied) is None
    # the leader's interval reaching 1.0 ties no balancing, which is then the verdict
    verdict, tied = choose([rows[0], _row("periodic", 8, 1.004, 0.998, 1.010)])
    assert verdict["strategy"] == "no_balancing" and len(tied) == 2
    assert "no_balancing (R=0), not the fastest (periodic, R=8)" in (
        describe_tie(verdict, tied)["text"])  # fmt: skip
    with pytest.raises(ValueError, match="no strategy"):
        choose([])


def test_transfer_mode_is_the_engines_own_unless_overridden():
    """``None``: SGLang synchronous (no asynchronous rebalance), vLLM asynchronous, each with
    the profile's version and source; an override says it overrides which mode."""
    sglang, vllm = load_engine("sglang"), load_engine("vllm")
    a, why = transfer_mode(sglang, None, "strategy.eplb_async=null")
    assert a is False and why.startswith("synchronous transfer")
    assert "sglang 0.4.6 - 0.5.2's own mode" in why and sglang.sources["eplb_async"] in why
    a, why = transfer_mode(vllm, None, "strategy.eplb_async=null")
    assert a is True and why.startswith("asynchronous transfer") and "use_async" in why
    a, why = transfer_mode(sglang, True, "strategy.eplb_async=true")
    assert a is True and "strategy.eplb_async=true overrides sglang" in why
    assert "own synchronous mode" in why
    with pytest.raises(ValueError, match="no EPLB defaults"):
        transfer_mode(load_engine("trtllm"), None, "x")


def test_eplb_settings_are_the_config_schema_and_bad_values_name_the_key():
    """One dataclass: ``gps-eplb`` reads ``gps.config.EplbConfig`` itself (its defaults are
    the schema's), and a bad value names its key."""
    from gps.eplb_app import compose_config, settings_for

    s = settings_for(compose_config("deepseek_v2_lite", None, ["eplb.block_steps=4"]))
    assert isinstance(s, EplbConfig) and s.block_steps == 4 and s.bootstrap == 400
    assert not hasattr(s, "tie_margin")
    check_settings(EplbConfig())
    for key, value in (("block_steps", 0), ("bootstrap", 0), ("anchors", 0),
                       ("windows", []), ("intervals", [0]), ("num_redundant", -1),
                       ("memory_fraction", 1.5), ("layers_per_chunk", 0),
                       ("predictor", "nope")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"eplb\.{key}="):
            check_settings(EplbConfig(**{key: value}))
    # predictive re-planning forecasts from per-step loads: a token-level predictor, or a
    # Distribution-Only one that reads token ids, is refused by name, an empty one not priced
    # a synthetic what-if predictor reads the true loads: refused too (no forecast to deploy)
    for name in ("popularity", "token_id_mle", "whatif_distribution"):
        with pytest.raises(ValueError, match=rf"eplb\.predictor='{name}': must be empty or"):
            check_settings(EplbConfig(predictor=name))
    check_settings(EplbConfig(predictor="", layers_per_chunk=None))
    check_settings(EplbConfig(predictor="linear_ar", layers_per_chunk=1))


def test_gps_eplb_bad_setting_exits_2_naming_the_key_before_reading(tmp_path, capsys):
    """A bad ``eplb.*`` override is refused by its key before the statistics are read (the
    file named does not exist), in one line, and nothing is written."""
    out = tmp_path / "out"
    argv = [str(tmp_path / "absent.json"), "--engine", "sglang", "--model", "deepseek_v2_lite",
            "--out", str(out), "--"]  # fmt: skip
    cases = [
        ("eplb.block_steps=0", "eplb.block_steps=0"),
        ("eplb.predictor=popularity", "eplb.predictor='popularity'"),
    ]
    for override, key in cases:
        code = eplb_main([*argv, override])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
        assert key in err and "absent.json" not in err and not out.exists()


# ------------------------------------------------------------------------ analysis and CLI


def _toy_stats(
    steps: int = 60, layers: int = 26, experts: int = 64, copies: int = 6 * 512, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.dirichlet(np.full(experts, 0.5), size=layers)
    drift = np.cumsum(rng.normal(0, 0.05, (steps, layers, experts)), axis=0)
    p = np.exp(np.log(base)[None] + drift)
    p /= p.sum(-1, keepdims=True)
    return rng.multinomial(copies, p).astype(np.int32)


def test_analysis_of_one_pool_has_every_key_and_a_sane_verdict():
    counts = _toy_stats()
    stats = EngineLoadStats(
        counts=counts.astype(np.int64),
        step=np.arange(60),
        engine="sglang",
        mode="stat",
        format_version="test",
        source=["toy"],
    )
    spec = load_model_spec("deepseek_v2_lite")
    cluster = load_cluster_config("h100_nvlink")
    wl = Workload(phase="prefill", batch_size=1, seq_len=512, context_len=512)
    res = analyse(
        stats,
        spec,
        cluster,
        wl,
        FluctuationModel(rho=np.array([8e-4]), top_k=6),
        EplbConfig(windows=[5, 10], intervals=[5, 10, 20], bootstrap=50, anchors=4),
        Ledger(engine=load_engine("vllm")),
    )
    for key in (
        "verdict",
        "speedup",
        "speedup_ci95",
        "num_redundant_experts",
        "window_steps",
        "rebalance_interval_steps",
        "stall_s_per_rebalance",
        "kv_cache_tokens_lost",
    ):
        assert key in res
    assert res["loads"]["source"] == "recorded"
    assert res["speedup"] >= 1.0 - 1e-9  # never below no balancing: it is a candidate
    assert {row["num_redundant_experts"] for row in res["redundancy_curve"]} == {0, 8, 16}
    assert res["interval_curve"]["intervals"] == [5, 10, 20, 3000]  # + vLLM's default
    assert 0.0 <= res["imbalance_share_of_step"] < 1.0
    with pytest.raises(ValueError, match="layer mismatch"):
        analyse(
            stats,
            load_model_spec("deepseek_v3"),
            cluster,
            wl,
            FluctuationModel.independent(),
            EplbConfig(),
            Ledger(engine=load_engine("vllm")),
        )
    with pytest.raises(ValueError, match="no EPLB defaults"):
        analyse(stats, spec, cluster, wl, FluctuationModel.independent(), EplbConfig(),
                Ledger(engine=load_engine("trtllm")))  # fmt: skip


def test_flags_name_the_engines_real_arguments():
    s = sglang_flags("periodic", 32, 500, 1000, layers_per_chunk=4, location_file="x.json")
    assert s["args"][:2] == ["--enable-eplb", "--ep-num-redundant-experts"]
    for flag in (
        "--eplb-rebalance-num-iterations",
        "--expert-distribution-recorder-buffer-size",
        "--init-expert-location",
        "--eplb-rebalance-layers-per-chunk",
    ):
        assert flag in s["args"]
    static = sglang_flags("static", 0, 500, 1000)
    assert "--init-expert-location" in static["args"] and "--enable-eplb" not in static["args"]
    v = vllm_flags("periodic", 32, 500, 1000, synchronous=False)
    assert v["args"][:3] == ["--enable-expert-parallel", "--enable-eplb", "--eplb-config"]
    assert json.loads(v["args"][3]) == {
        "window_size": 500,
        "step_interval": 1000,
        "num_redundant_experts": 32,
        "use_async": True,
    }
    both = engine_flags("vllm", "periodic", 32, 500, 1000, synchronous=False)
    assert list(both) == ["vllm", "sglang"] and "rerun gps-eplb" in both["sglang"]["notes"][-1]


def test_gps_eplb_command_writes_results_and_flags(tmp_path, capsys):
    dump = write_sglang_dump(sglang_stat_dump(_toy_stats()), tmp_path / "stat.json")
    out = tmp_path / "out"
    code = eplb_main(
        [
            str(dump),
            "--engine",
            "sglang",
            "--model",
            "deepseek_v2_lite",
            "--hardware",
            "h100_nvlink",
            "--out",
            str(out),
            "--",
            "workload.batch_size=1",
            "workload.seq_len=512",
            "eplb.decode_batch_size=64",
            "eplb.windows=[5,10]",
            "eplb.intervals=[5,10,20]",
            "eplb.bootstrap=50",
            "eplb.anchors=4",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "Verdict" in text and "sglang flags" in text and "vllm flags" in text
    assert "Periodic EPLB priced with synchronous transfer" in text and "own mode" in text
    assert "Redundant experts" in text and "Rebalance interval" in text and "Drift" in text
    results = json.loads((out / "results.json").read_text())["eplb"]
    for key in (
        "verdict",
        "speedup",
        "speedup_ci95",
        "num_redundant_experts",
        "window_steps",
        "rebalance_interval_steps",
        "stall_s_per_rebalance",
        "kv_cache_tokens_lost",
        "flags",
        "tie",
    ):
        assert key in results
    assert set(results["pools"]) == {"prefill", "decode"}
    for pool in results["pools"].values():
        tie = pool["tie"]
        tied = [pool["strategies"][pool["verdict"]]] if tie is None else tie["strategies"]
        assert any(t["strategy"] == pool["verdict"] for t in tied)
        if tie is not None:
            assert tie["text"] in text
    assert results["pools"]["decode"]["loads"]["source"] == "fluctuation model"
    location = json.loads((out / "init_expert_location_prefill.json").read_text())
    assert np.asarray(location["physical_to_logical_map"]).shape[0] == 26


def test_gps_eplb_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"logical_count": [[[1, -3]]]}))
    out = tmp_path / "out"
    code = eplb_main(
        [str(bad), "--engine", "vllm", "--model", "deepseek_v2_lite", "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err
    assert "bad.json" in err and "logical_count" in err and not out.exists()
    code = eplb_main([str(bad), "--engine", "vllm", "--model", "no_such_model"])
    assert code == 2


def test_gps_eplb_on_the_esft_routing_seen_as_a_recorder_dump(tmp_path, capsys):
    """The issue's quality bar: ESFT DeepSeek-V2-Lite routing converted to an SGLang stat
    dump, priced with both engines' flags printed."""
    from gps.traces.engine_stats import trace_to_sglang_stat
    from gps.traces.shared import esft_trace

    try:
        trace = esft_trace()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    dump = write_sglang_dump(trace_to_sglang_stat(trace, 512), tmp_path / "esft.pt")
    code = eplb_main(
        [
            str(dump),
            "--engine",
            "sglang",
            "--model",
            "deepseek_v2_lite",
            "--hardware",
            "h100_nvlink",
            "--out",
            str(tmp_path / "o"),
            "--",
            "workload.batch_size=1",
            "workload.seq_len=512",
            "eplb.windows=[8,16]",
            "eplb.intervals=[4,8,16]",
            "eplb.bootstrap=50",
            "eplb.anchors=4",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "Redundant experts" in text and "Rebalance interval" in text
    assert "sglang flags" in text and "vllm flags" in text


# ------------------------------------------------------------------------ strategies in gps


def _gps_context(loads: np.ndarray, r_extra: int = 1):
    """A ``gps`` advisor context: 2 history + the rest held out, 4 GPUs on one node."""
    from test_cost_helpers import cluster, gqa_model

    from gps.advisor import strategies as st
    from gps.advisor.data import EvalData
    from gps.traces.trace import TokenTrace

    nl, e = loads.shape[1:]
    trace = TokenTrace(
        experts=np.zeros((1, nl, 2), dtype=np.int16), token_id=np.zeros(1, np.int32),
        sequence_id=np.zeros(1, np.int32), position=np.zeros(1, np.int32), num_experts=e,
    )  # fmt: skip
    data = EvalData(trace, trace, loads[:2], loads[2:], 64, "test")
    cl = cluster(1, 4)
    wl = Workload(phase="prefill", batch_size=1, seq_len=64)
    return st.Context(gqa_model(num_layers=nl, num_experts=e), cl, wl, data,
                      -(-e // 4) + r_extra, Ledger())  # fmt: skip


def test_static_eplb_is_a_balanced_replacement_even_without_redundant_experts():
    """R = 0 re-places the experts by the history's mean (no contiguous homes): its busiest
    GPU carries less of that mean than the contiguous layout's; R = all fills every slot."""
    from gps.advisor import strategies as st

    loads = np.zeros((5, 2, 8))
    loads[:, :, :2] = 100.0  # experts 0 and 1 are hot: contiguously they share GPU 0
    loads[:, :, 2:] = 10.0
    ctx = _gps_context(loads)
    assert st.eplb_redundant(ctx) == [0, 4]  # 3 slots on each of 4 GPUs for 8 experts
    r0 = st.static_eplb(ctx, 0)
    mean = loads[:2].mean(0)
    assert r0.family == "static" and r0.name == "static_eplb_r0"
    assert r0.plans[0].gpu_load(mean).max() == 110.0 < ctx.static.gpu_load(mean).max() == 200.0
    full = st.static_eplb(ctx, 4)
    assert (full.plans[0].slot_expert >= 0).all() and full.plans[0].replica_counts().sum() == 24
    assert (r0.plans[0].slot_expert >= 0).sum() == 16  # 2 layers x 8, padded to 3 slots


def test_engine_eplb_amortises_one_rebalance_stall_over_the_interval():
    """Synchronous, interval 2 (a rebalance at held-out step 2): ``rebalance_s`` = the stall of
    that rebalance (host + per-layer + transfers, ``gps.plans.rebalance``) / 2, added to every
    step's price; an interval beyond the span prices one representative rebalance."""
    from gps.advisor import strategies as st
    from gps.advisor.pricing import price_routed

    rng = np.random.default_rng(4)
    loads = np.floor(rng.gamma(0.5, 1.0, (6, 2, 8)) * 100)
    ctx = _gps_context(loads)
    costs = RebalanceCosts("test", cpu_s=0.5, per_layer_s=0.01)
    r = st.engine_eplb(ctx, st.EplbCadence(window=2, interval=2, asynchronous=False, costs=costs))
    assert r.notes["rebalances_in_span"] == 1 and r.name == "eplb_w2_i2_sync"
    moved = rebalance_stall(r.plans[0], r.plans[2], ctx.expert_bytes, ctx.cluster, costs)
    assert r.rebalance_s == pytest.approx(moved.stall_s / 2)
    assert moved.stall_s >= 0.5 + 2 * 0.01 and r.migration_s == {}
    free = st.Routed(**{**r.__dict__, "rebalance_s": 0.0})
    with_stall, without = (price_routed(x, ctx.spec, ctx.cluster, ctx.workload, ctx.ledger)
                           for x in (r, free))  # fmt: skip
    assert with_stall.total_s - without.total_s == pytest.approx(np.full(4, r.rebalance_s))
    assert with_stall.components["migration"].sum(-1) == pytest.approx(
        without.components["migration"].sum(-1) + r.rebalance_s
    )
    long = st.engine_eplb(ctx, st.EplbCadence(2, 1000, asynchronous=True, costs=costs))
    assert long.notes["rebalances_in_span"] == 0 and long.rebalance_s == 0.0  # async: hidden
    assert len({id(p) for p in long.plans}) == 1


def test_gps_eplb_cadence_from_the_engine_profile_and_the_switches():
    from gps.advisor.advise import cadence_summary, eplb_cadence
    from gps.eplb_app import compose_config

    cfg = compose_config("mixtral_8x7b", None, ["engine=vllm"])
    c = eplb_cadence(cfg.strategy, load_engine("vllm"))
    assert (c.window, c.interval, c.asynchronous, c.costs.cpu_s) == (1000, 3000, True, 0.010)
    cfg = compose_config("mixtral_8x7b", None, ["strategy.eplb_interval=250"])
    assert cfg.strategy.eplb_async is None  # the default: each engine's own transfer mode
    c = eplb_cadence(cfg.strategy, load_engine("sglang"))
    assert (c.window, c.interval, c.asynchronous) == (1000, 250, False)  # SGLang: no async
    forced = compose_config("mixtral_8x7b", None, ["strategy.eplb_async=true"])
    assert eplb_cadence(forced.strategy, load_engine("sglang")).asynchronous  # still possible
    assert eplb_cadence(cfg.strategy, load_engine("trtllm")) is None
    assert not cadence_summary(cfg.strategy, load_engine("trtllm"))["priced"]
    cfg = compose_config("mixtral_8x7b", None, ["strategy.periodic=[every_n]"])
    assert cadence_summary(cfg.strategy, load_engine("sglang"))["reason"].startswith("strategy")


def test_gps_prices_aggregate_statistics_through_the_fluctuation_model(tmp_path):
    """``gps evaluation.trace_path=<an SGLang stat dump>``: no tokens, so no token-level
    strategy runs; the held-out batches are drawn from the fluctuation model (the recorded
    steps hold a quarter of the step's copies), the report says so, and the oracle still
    bounds every deployable strategy."""
    from hydra import compose, initialize_config_dir

    from gps.app import CONF_DIR, run

    rng = np.random.default_rng(0)
    base = rng.dirichlet(np.full(8, 2.0), size=32)
    drift = np.cumsum(rng.normal(0, 0.05, (8, 32, 8)), axis=0)
    p = np.exp(np.log(base)[None] + drift)
    p /= p.sum(-1, keepdims=True)
    dump = write_sglang_dump(sglang_stat_dump(rng.multinomial(2 * 128, p).astype(np.int32)),
                             tmp_path / "stat.json")  # fmt: skip
    overrides = ["workload.batch_size=2", "workload.seq_len=256", "evaluation.train_batches=4",
                 "evaluation.test_batches=3", "predictor=fast", "report=minimal",
                 f"evaluation.trace_path={dump}"]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run(cfg, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    loads = results["setup"]["loads"]
    assert loads["source"] == "fluctuation model" and loads["smoothing_steps"] == 4
    assert loads["fluctuation"]["rho"] == [pytest.approx(8.71e-3)]  # Mixtral's fit (auto)
    families = {s["family"] for s in results["strategies"]}
    assert "token" not in families and "capacity" not in families and "ilp" not in families
    names = {s["name"]: s for s in results["strategies"]}
    assert {"static_eplb_r0", "static_eplb_r8", "eplb_w1000_i1000_sync"} <= set(names)
    oracle = names["oracle"]["speedup_vs_baseline"]
    for s in results["strategies"]:
        if s["family"] in ("baseline", "static", "periodic", "distribution"):
            assert s["speedup_vs_baseline"] <= oracle * (1 + 1e-9), s["name"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Loads from aggregate statistics" in report
    # the default engine is SGLang: its periodic EPLB is priced synchronously, and says why
    assert names["eplb_w1000_i1000_sync"]["notes"]["stall_s_per_rebalance"] > 0
    assert (
        "**Periodic EPLB.** `eplb_w1000_i1000_sync`" in report
        and "priced with synchronous transfer" in report
        and "sglang 0.4.6 - 0.5.2's own mode (sglang server_arguments.md" in report
    )
    short = ["evaluation.train_batches=6", "evaluation.test_batches=3"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, *short])
    with pytest.raises(ValueError, match=r"8 recorded steps, but evaluation\.train_batches=6"):
        run(cfg, tmp_path / "short")
