"""Engine profiles (gps/engine.py, conf/engine/) and serving workloads (gps/serving.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from gps.engine import IDEAL, EngineError, EngineProfile
from gps.serving import ServingWorkload, plan_steps
from gps.workload import Workload, WorkloadError

CONF = Path(__file__).parents[1] / "conf" / "engine"


def load(name: str) -> EngineProfile:
    return EngineProfile.from_config(yaml.safe_load((CONF / f"{name}.yaml").read_text()))


@pytest.mark.parametrize("name", ["ideal", "sglang", "vllm", "trtllm"])
def test_shipped_engines_load_and_every_number_has_a_source(name: str) -> None:
    engine = load(name)
    assert engine.name == name
    if name != "ideal":
        assert all(engine.sources[k].strip() for k in engine.sources)
        assert engine.launch["prefill"] in ("eager", "cuda_graph")


def test_ideal_engine_adds_nothing() -> None:
    assert IDEAL == load("ideal")
    assert IDEAL.scheduler_s == {"prefill": 0.0, "decode": 0.0}
    assert set(IDEAL.alltoall_sms.values()) == {0}
    assert IDEAL.alltoall == {"prefill": None, "decode": None}


def test_sglang_facts_from_its_sources() -> None:
    sg = load("sglang")
    assert sg.alltoall == {"prefill": "deepep", "decode": "deepep_low_latency"}
    assert sg.alltoall_sms["deepep"] == 20 and sg.alltoall_sms["deepep_low_latency"] == 0
    assert sg.launch == {"prefill": "eager", "decode": "cuda_graph"}
    assert sg.chunked_prefill_tokens == 8192
    assert sg.held_sms("deepep", 132) == 20 and sg.held_sms("deepep", 16) == 15


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"typo": 1}, r"engine\.typo: unknown field"),
        ({"launch": {"prefill": "graph", "decode": "cuda_graph"}}, r"engine\.launch\.prefill"),
        ({"alltoall": {"prefill": "nccl"}}, r"engine\.alltoall\.prefill='nccl'"),
        ({"scheduler_us": {"decode": -1}}, r"engine\.scheduler_us\.decode"),
        ({"scheduler_us": {"warmup": 1}}, r"engine\.scheduler_us\.warmup: unknown phase"),
        ({"alltoall_sms": {"flat": 0, "deepep": 20}}, r"alltoall_sms\.deepep_low_latency"),
        ({"chunked_prefill_tokens": 0}, r"engine\.chunked_prefill_tokens=0"),
        ({"sources": {}}, r"engine\.sources\.version: engine 'sglang' gives no source"),
    ],
)
def test_bad_engine_fields_are_named(patch: dict, match: str) -> None:
    data = {**yaml.safe_load((CONF / "sglang.yaml").read_text()), **patch}
    with pytest.raises(EngineError, match=match):
        EngineProfile.from_config(data)


BASE = Workload("prefill", 1, 1, alltoall="deepep")


def test_short_prompts_fill_the_prefill_budget() -> None:
    # 100 requests of 1000 + 201 tokens, budget 8192: 8 prompts per prefill step,
    # 100/8 = 12.5 prefill steps and 200 decode steps of batch 100 at context 1000 + 100
    plan = plan_steps(ServingWorkload(100, 1000, 201), load("sglang"), BASE)
    assert plan.running == 100
    assert (plan.prefill.batch_size, plan.prefill.seq_len) == (8, 1000)
    assert plan.prefill_steps == 12.5
    assert (plan.decode.batch_size, plan.decode.context_len) == (100, 1100)
    assert plan.decode_steps == 200
    assert (plan.input_tokens, plan.output_tokens) == (100_000, 20_100)
    assert plan.round_s(2.0, 0.1) == pytest.approx(12.5 * 2.0 + 200 * 0.1)


def test_long_prompts_are_chunked_and_running_requests_capped() -> None:
    # 20,000-token prompts over a 8192 budget: 3 chunks of 6,667; vLLM caps 2,000 at 1,024
    plan = plan_steps(ServingWorkload(2000, 20_000, 1), load("vllm"), BASE)
    assert plan.running == 1024
    assert (plan.prefill.batch_size, plan.prefill.seq_len) == (1, 6667)
    assert plan.prefill_steps == 3 * 1024
    assert plan.decode is None and plan.decode_steps == 0
    own = plan_steps(ServingWorkload(8, 20_000, 2, chunked_prefill_tokens=32768), IDEAL, BASE)
    assert (own.prefill.batch_size, own.prefill.seq_len, own.prefill_steps) == (1, 20_000, 8.0)


@pytest.mark.parametrize("field", ["concurrency", "prompt_len", "output_len"])
def test_bad_serving_fields_are_named(field: str) -> None:
    bad = ServingWorkload(**{"concurrency": 8, field: 0})
    with pytest.raises(WorkloadError, match=rf"serving\.{field}=0"):
        plan_steps(bad, IDEAL, BASE)


# ---- an engine inside a step (gps.cost.e2e.batch_cost(engine=...)) ---------------------------


def custom(**fields) -> EngineProfile:
    """The ideal engine with ``fields`` changed (no sources needed for name 'ideal')."""
    from gps.engine import EngineConfig

    return EngineProfile.from_config({**EngineConfig().__dict__, **fields})


def test_scheduler_and_sampling_enter_the_step_by_hand() -> None:
    from test_cost_helpers import HBM, LAUNCH, cluster, gqa_model

    from gps.cost.e2e import batch_cost

    spec, cl = gqa_model(num_experts=8), cluster(1, 2)
    wl = Workload("decode", 64, 1, 512, alltoall="flat")
    ideal = batch_cost(spec, cl, wl)
    eng = custom(scheduler_us={"prefill": 0, "decode": 500}, sampling_passes=3)
    cost = batch_cost(spec, cl, wl, engine=eng)
    # 32 sequences per GPU sample from 3 passes over 32 x V fp32 logits, 3 launches
    sampling = 3 * 4 * 32 * spec.vocab_size / HBM + 3 * LAUNCH
    assert cost.engine == pytest.approx({"scheduler": 500e-6, "sampling": sampling})
    assert float(cost.total_s) == pytest.approx(float(ideal.total_s) + 500e-6 + sampling)
    assert float(ideal.engine_s) == 0.0
    # the MoE layers alone: no embedding, dense layers, LM head, scheduler or sampling
    moe = cost.layers_only()
    layers_s = float(cost.per_layer_s.sum())
    assert float(moe.total_s) == pytest.approx(layers_s, rel=1e-12)
    assert float(moe.tokens_per_s) == pytest.approx(wl.tokens_per_step / layers_s, rel=1e-12)
    assert float(moe.balanced_total_s) == pytest.approx(
        float(cost.balanced_total_s - cost.non_moe_s) - 500e-6 - sampling, rel=1e-12
    )
    assert float(moe.non_moe_s) == float(moe.engine_s) == 0.0
    assert set(moe.engine.values()) == set(moe.non_moe.values()) == {0.0}


def test_eager_launches_bound_short_kernels_by_the_host() -> None:
    from test_cost_helpers import cluster, gpu, gqa_model

    from gps.cost.e2e import batch_cost
    from gps.cost.roofline import op_time

    g = gpu(host_launch_s=10e-6)
    assert float(op_time(1e6, 1e3, g, launches=2)) == pytest.approx(20e-6)  # host-bound
    assert float(op_time(1e12, 1e3, g)) == pytest.approx(2e-3 + 1e-6)  # GPU-bound
    spec, cl = gqa_model(num_experts=8), cluster(1, 2, eager_launch_overhead_s=10e-6)
    wl = Workload("decode", 4, 1, 64, alltoall="flat")
    graph = batch_cost(spec, cl, wl, engine=custom())
    eager = batch_cost(spec, cl, wl, engine=custom(launch={"prefill": "eager", "decode": "eager"}))
    assert float(eager.total_s) > float(graph.total_s)
    assert eager.components["experts"].min() >= 10e-6


def test_engine_modes_and_held_sms() -> None:
    from test_cost_helpers import cluster, gqa_model

    from gps.cost.e2e import batch_cost

    spec, cl = gqa_model(num_experts=8), cluster(2, 2)
    wl = Workload("prefill", 4, 256, alltoall="flat")
    deepep = custom(alltoall={"prefill": "deepep", "decode": "deepep_low_latency"})
    ideal_deepep = batch_cost(spec, cl, Workload("prefill", 4, 256, alltoall="deepep"))
    np.testing.assert_allclose(
        batch_cost(spec, cl, wl, engine=deepep).components["dispatch"],
        ideal_deepep.components["dispatch"],
    )
    tbo = Workload("prefill", 4, 256, alltoall="deepep", overlap="two_batch")
    free = batch_cost(spec, cl, tbo)
    held = batch_cost(spec, cl, tbo, engine=custom(alltoall_sms={
        "flat": 0, "deepep": 50, "deepep_low_latency": 0}))  # fmt: skip
    half = batch_cost(spec, cl, replace(tbo, batch_size=2, overlap="none"))
    # slower than with every SM, never slower than both micro-batches one after another (which
    # may exceed the full batch run serially: TBO can lose, SGLang measured -27% at 32/GPU)
    assert float(free.per_layer_s.sum()) < float(held.per_layer_s.sum())
    assert float(held.per_layer_s.sum()) <= 2 * float(half.per_layer_s.sum()) * (1 + 1e-12)


def test_a_serving_load_sets_the_step_the_advisor_prices() -> None:
    from hydra import compose, initialize_config_dir

    from gps.advisor.advise import build
    from gps.app import CONF_DIR

    over = ["serving.concurrency=32", "serving.prompt_len=1000", "serving.output_len=200"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        decode = compose(config_name="config", overrides=[*over, "workload=decode"])
        prefill = compose(config_name="config", overrides=over)
        bad = compose(config_name="config", overrides=["serving.concurrency=0"])
    # SGLang's 8,192-token budget: 8 prompts per prefill step; decode batch 32 at 1000 + 100
    _, _, wl, _ = build(decode)
    assert (wl.phase, wl.batch_size, wl.context_len) == ("decode", 32, 1100)
    _, _, wl, _ = build(prefill)
    assert (wl.phase, wl.batch_size, wl.seq_len) == ("prefill", 8, 1000)
    with pytest.raises(WorkloadError, match=r"serving\.concurrency=0"):
        build(bad)
