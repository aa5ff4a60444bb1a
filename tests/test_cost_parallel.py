"""Hybrid parallel layouts (gps/cost/parallel.py): pure EP equality, hand checks, bad layouts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_cost_helpers import cluster, gqa_model

from gps.cost.e2e import batch_cost
from gps.cost.layouts import compare_layouts, known_layouts
from gps.cost.parallel import LayoutError, ParallelConfig, resolve_layout
from gps.cost.step import StepRouting
from gps.model import load_model_spec
from gps.profiles import load_cluster_config
from gps.workload import Workload

WORKLOADS = [
    Workload("prefill", 4, 256),
    Workload("decode", 32, 1, 512, alltoall="deepep_low_latency"),
    Workload("decode", 8, 1, 512, alltoall="flat", overlap="two_batch"),
]


@pytest.mark.parametrize("wl", WORKLOADS)
@pytest.mark.parametrize("nodes", [1, 2])
def test_tp1_ep_all_gpus_equals_todays_expert_parallel_result(wl, nodes) -> None:
    spec = gqa_model(num_experts=8, top_k=2)
    cl = cluster(nodes, 4)
    today = batch_cost(spec, cl, wl)
    layout = batch_cost(spec, cl, wl, parallel=ParallelConfig("ep", ep=cl.num_gpus, tp=1))
    for name, value in today.components.items():
        np.testing.assert_allclose(layout.components[name], value, rtol=1e-12, err_msg=name)
    assert float(layout.total_s) == pytest.approx(float(today.total_s), rel=1e-12)
    assert float(layout.balanced_total_s) == pytest.approx(float(today.balanced_total_s))


def test_tensor_parallel_experts_hand_computed() -> None:
    # 4 GPUs, TP4, 4 experts of f=2048, top-2, flat all-to-all, prefill 2 x 512 tokens
    spec, cl = gqa_model(num_experts=4, top_k=2), cluster(1, 4)
    wl = Workload("prefill", 2, 512, alltoall="flat")
    c = batch_cost(spec, cl, wl, parallel=ParallelConfig("tp4", ep=1, tp=4, attention="dp"))
    t = 1024 * 2  # token copies: every GPU runs all of them through 1/4 of the width
    d, f = 1024, 2048 // 4
    compute = 6 * d * f * t / 5e14
    memory = (4 * 3 * d * f * 2 + 2 * (d + f) * t * 2) / 1e12
    assert float(c.components["experts"][0]) == pytest.approx(max(compute, memory) + 1e-6)
    # real TP: each GPU all-gathers its 256 tokens (once, whatever their 2 copies) to each of
    # the 3 others: 256*1024*2 B each (the copies-based pricing sent twice that)
    sent = 3 * 256 * 1024 * 2
    assert float(c.components["dispatch"][0]) == pytest.approx(1e-6 + sent / 1e11)


def test_replicated_groups_read_more_weights() -> None:
    spec, cl = gqa_model(num_experts=8, top_k=2), cluster(1, 8)
    wl = Workload("decode", 64, 1, 512)
    ep8 = batch_cost(spec, cl, wl, parallel=ParallelConfig("ep8", ep=8))
    ep4 = batch_cost(spec, cl, wl, parallel=ParallelConfig("ep4", ep=4))  # 2 groups, 2 experts
    assert np.all(ep4.components["experts"] > 1.5 * ep8.components["experts"])


def test_mixtral_three_layouts_priced_and_bad_layouts_named() -> None:
    spec, cl = load_model_spec("mixtral_8x7b"), load_cluster_config("h100_nvlink")
    wl = Workload("decode", 64, 1, 2048)
    names = {p.name: p for p in known_layouts()}
    assert {"ep", "ep8", "tp8", "ep4_tp2"} <= set(names)
    out = compare_layouts(names["tp8"], spec, cl, wl)
    rates = {r["name"]: r["tokens_per_s"] for r in out["compared"]}
    assert len({rates["ep8"], rates["tp8"], rates["ep4_tp2"]}) == 3
    assert all(rates[n] > 0 for n in ("ep", "ep8", "tp8", "ep4_tp2"))
    # ep4_tp4 (MoETuner's 16-GPU layout) does not fit 8 GPUs: priced as an error, not a rate
    errors = {r["name"]: r["error"] for r in out["compared"]}
    assert rates["ep4_tp4"] is None and "16 does not divide the 8 GPUs" in errors["ep4_tp4"]
    assert out["best"] in rates
    with pytest.raises(LayoutError, match=r"parallel\.tp=3 does not divide"):
        resolve_layout(ParallelConfig("x", ep=1, tp=3), spec, replace(cl, gpus_per_node=3), wl)
    with pytest.raises(LayoutError, match=r"parallel\.ep=3"):
        resolve_layout(ParallelConfig("x", ep=3, tp=1), spec, cl, wl)
    with pytest.raises(LayoutError, match=r"parallel\.tp=2: .*num_heads"):
        resolve_layout(ParallelConfig("x", ep=3, tp=2, attention="tp"), spec,
                       replace(cl, gpus_per_node=6), wl)  # fmt: skip
    with pytest.raises(LayoutError, match="needs slot_tokens"):
        batch_cost(spec, cl, wl, StepRouting(traffic_bytes=np.zeros((32, 8, 8))),
                   parallel=names["ep8"])  # fmt: skip


def test_gps_parallel_group_prices_three_mixtral_layouts() -> None:
    from hydra import compose, initialize_config_dir

    from gps.app import CONF_DIR, price_layout

    answers = {}
    for name in ("tp8", "ep8", "ep4_tp2"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"parallel={name}"])
        out = price_layout(cfg)
        assert out["layout"]["name"] == name and out["layout"]["error"] is None
        answers[name] = out["layout"]["tokens_per_s"]
    assert len(set(answers.values())) == 3
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["parallel=ep4_tp2", "parallel.tp=3"])
    with pytest.raises(LayoutError, match=r"parallel\.ep=4, parallel\.tp=3: ep\*tp = 12"):
        price_layout(cfg)


def test_ep_x_tp_layout_expert_bytes_and_collectives_by_hand() -> None:
    # 4 GPUs = EP2 x TP2, 4 experts of f = 2048 (top-2), flat: each rank holds 2 experts, each
    # GPU 1/2 of their width; prefill 1 x 1024 tokens, dp attention (256 tokens per GPU)
    spec, cl = gqa_model(num_experts=4, top_k=2), cluster(1, 4)
    wl = Workload("prefill", 1, 1024, alltoall="flat")
    c = batch_cost(spec, cl, wl, parallel=ParallelConfig("ep2_tp2", ep=2, tp=2, attention="dp"))
    d, f = 1024, 2048 // 2
    copies = 1024 * 2 / 2  # each rank's copies (uniform routing), run by both of its GPUs
    weights = 2 * 3 * d * f * 2  # 2 experts x 1/2 width, bf16: bytes a GPU reads
    memory = (weights + 2 * (d + f) * copies * 2) / 1e12
    compute = 6 * d * f * copies / 5e14
    assert float(c.components["experts"][0]) == pytest.approx(max(compute, memory) + 1e-6)
    # a token visits h = 2 * (1 - 2/4 * 1/3) = 5/3 ranks; each GPU sends its 256 tokens x h/2
    # to each of the 3 other GPUs (both GPUs of a rank need the token once): 3 * 256 * 5/6 tokens
    sent = 3 * 256 * (5 / 6) * d * 2
    assert float(c.components["dispatch"][0]) == pytest.approx(1e-6 + sent / 1e11)
    assert float(c.components["combine"][0]) == pytest.approx(1e-6 + sent / 1e11)


def test_a_routing_simulated_on_a_tp_layout_is_priced_as_real_tp() -> None:
    # the advisor's simulation splits each rank's copies over its tp GPUs like replicas;
    # priced with the layout, that routing gives exactly the layout's uniform-routing step
    from gps.cost.parallel import layout_inputs

    spec, cl = gqa_model(num_experts=4, top_k=2), cluster(1, 4)
    wl = Workload("prefill", 2, 512, alltoall="flat")
    layout = ParallelConfig("ep2_tp2", ep=2, tp=2, attention="dp")
    _, _, slots, _, _ = layout_inputs(spec, cl, wl, 2, 2)  # each GPU: its rank's copies
    simulated = slots / 2  # what a replica split over the rank's 2 GPUs gives
    uniform = batch_cost(spec, cl, wl, parallel=layout)
    routed = batch_cost(spec, cl, wl, StepRouting(simulated), parallel=layout)
    for name, value in uniform.components.items():
        np.testing.assert_allclose(routed.components[name], value, rtol=1e-12, err_msg=name)
