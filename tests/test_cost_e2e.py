"""End-to-end batch cost: hand-computed straggler, migration, predictor, non-MoE, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cost_helpers import HBM, INTRA_BW, INTRA_LAT, LAUNCH, cluster, gqa_model, mla_model

from gps.cost.attention import attention_time
from gps.cost.e2e import LAYER_COMPONENTS, batch_cost
from gps.cost.experts import expert_time_per_gpu, swiglu_op
from gps.cost.roofline import ops_time
from gps.cost.routing import traffic_from_slot_tokens
from gps.cost.step import StepExtras, StepRouting, transfer_seconds
from gps.workload import Workload

# Decode, 8 sequences on 4 GPUs (2 per GPU), context 1000: the attention block is the one of
# test_cost_attention.test_gqa_decode_kv_read_dominates, all memory bound:
# (3,155,968 + 2,056,192 + 2,105,344) / 1e12 + 3 launches.
DECODE = Workload("decode", batch_size=8, context_len=1000)
ATTN = 7.317504e-6 + 3 * LAUNCH
W = 3 * 1024 * 2048 * 2  # one expert's weight bytes
ACT = 2 * (1024 + 2048) * 2  # activation bytes per token through one expert


def straggler_inputs():
    slots = np.zeros((2, 4, 1))  # 2 MoE layers, 4 GPUs, 1 slot (E = G = 4)
    slots[:, 0, 0] = 16.0  # all 8 tokens * top-2 copies go to expert 0 on GPU 0
    return slots, traffic_from_slot_tokens(slots, gqa_model())


def test_single_expert_straggler_hand_computed():
    slots, traffic = straggler_inputs()
    c = batch_cost(gqa_model(), cluster(1, 4), DECODE, StepRouting(slots, traffic))
    np.testing.assert_allclose(c.components["attention"], ATTN, rtol=1e-12)
    # the layer waits for GPU 0: one expert's weights + 16 tokens, memory bound
    gpu0 = (W + 16 * ACT) / HBM + LAUNCH
    np.testing.assert_allclose(c.components["experts"], gpu0, rtol=1e-12)
    assert gpu0 == pytest.approx(expert_time_per_gpu(slots, gqa_model(), cluster(1, 4).gpu).max())
    # dispatch: GPUs 1..3 each send 16/4 copies * 2048 B to GPU 0, which receives 3 * 8192 B
    a2a = INTRA_LAT + 3 * 8192 / INTRA_BW
    np.testing.assert_allclose(c.components["dispatch"], a2a, rtol=1e-12)
    np.testing.assert_allclose(c.components["combine"], a2a, rtol=1e-12)
    assert np.all(c.components["shared"] == 0.0)
    parts = sum(c.components[k] for k in LAYER_COMPONENTS)
    np.testing.assert_allclose(c.per_layer_s, parts, rtol=1e-12)
    assert float(c.total_s) == pytest.approx(c.per_layer_s.sum() + float(c.non_moe_s), rel=1e-12)
    assert float(c.tokens_per_s) == pytest.approx(8 / float(c.total_s))
    assert float(c.imbalance_overhead()) > 0.0


def test_non_moe_hand_computed():
    c = batch_cost(gqa_model(), cluster(1, 4), DECODE)
    # LM head on the last token of 8/4 = 2 sequences: 2*2*1024*1000 FLOPs (compute 8.192e-9 s),
    # bytes 2*(1000*1024 + 2*1024 + 2*1000) = 2,056,096 -> memory bound
    assert c.non_moe["lm_head"] == pytest.approx(2.056096e-6 + LAUNCH, rel=1e-12)
    # embedding: 2 tokens, read + write 1024 bf16 each
    assert c.non_moe["embedding"] == pytest.approx(8192 / HBM + LAUNCH, rel=1e-12)
    assert c.non_moe["dense_layers"] == 0.0


def test_dense_layers_priced_as_attention_plus_dense_ffn():
    spec, cl = mla_model(), cluster(2, 2)
    c = batch_cost(spec, cl, DECODE)
    ffn = float(ops_time([swiglu_op("ffn", 2.0, 2048, spec)], cl.gpu, "bf16"))
    assert c.non_moe["dense_layers"] == pytest.approx(attention_time(spec, cl, DECODE) + ffn)
    assert c.per_layer_s.shape == (2,)  # 3 layers, first dense
    assert np.all(c.components["shared"] > 0.0)


def test_uniform_routing_is_balanced():
    c = batch_cost(gqa_model(), cluster(1, 4), DECODE)
    assert float(c.imbalance_overhead()) == pytest.approx(0.0, abs=1e-12)


def intra_copy(nbytes: float, cl=None) -> dict:
    """``migration_s`` of ``nbytes`` received by GPU 0 of every layer over NVLink."""
    cl = cl or cluster(1, 4)
    secs = np.zeros((2, cl.num_gpus))
    secs[:, 0] = transfer_seconds(nbytes, cl.intra_link)
    return {"intra": secs}


@pytest.mark.parametrize(
    ("overlap", "exposed"),
    [(0.0, 1.1e-5), (0.5, 1.1e-5 - 0.5 * ATTN), (1.0, 1.1e-5 - ATTN)],
)
def test_migration_overlap(overlap, exposed):
    # 1 MB of expert weights per layer over the intra link: 1 us + 1e6 / 1e11 = 11 us
    c = batch_cost(gqa_model(), cluster(1, 4), DECODE,
                   extras=StepExtras(migration_s=intra_copy(1e6), window=overlap))  # fmt: skip
    np.testing.assert_allclose(c.components["migration"], exposed, rtol=1e-9)
    base = batch_cost(gqa_model(), cluster(1, 4), DECODE)
    assert float(c.total_s - base.total_s) == pytest.approx(2 * exposed, rel=1e-9)
    assert float(c.balanced_total_s) == pytest.approx(float(base.balanced_total_s))


def test_migration_fully_hidden_and_inter_link():
    # 2 us < attention
    c = batch_cost(gqa_model(), cluster(1, 4), DECODE,
                   extras=StepExtras(migration_s=intra_copy(1e5)))  # fmt: skip
    assert np.all(c.components["migration"] == 0.0)
    cl = cluster(2, 2)
    inter = np.zeros((2, 4))
    inter[:, 3] = transfer_seconds(1e6, cl.inter_link)  # GPU 3 over its NIC, GPU 0 over NVLink
    both = {"intra": intra_copy(5e5, cl)["intra"], "inter": inter}
    c = batch_cost(gqa_model(), cl, DECODE, extras=StepExtras(migration_s=both, window=0.0))
    np.testing.assert_allclose(c.components["migration"], 1e-5 + 1e6 / 1e10)  # the slowest


def test_predictor_on_and_off_critical_path():
    on = batch_cost(gqa_model(), cluster(1, 4), DECODE,
                    extras=StepExtras(predictor_s=np.array([2e-5, 0.0])))  # fmt: skip
    np.testing.assert_allclose(on.components["predictor"], [2e-5, 0.0])
    off = batch_cost(
        gqa_model(), cluster(1, 4), DECODE,
        extras=StepExtras(predictor_s=np.array([2e-5, 0.0]), predictor_on_critical_path=False),
    )  # fmt: skip
    np.testing.assert_allclose(off.components["predictor"], [2e-5 - ATTN, 0.0], rtol=1e-9)


def test_sweep_matches_per_point_and_to_dict_is_json():
    rng = np.random.default_rng(0)
    slots = rng.integers(0, 50, size=(5, 2, 4, 2)).astype(float)
    traffic = rng.uniform(0, 1e6, size=(5, 2, 4, 4))
    sweep = batch_cost(gqa_model(), cluster(2, 2), DECODE,
                       StepRouting(slots, traffic, dropped_tokens=3))  # fmt: skip
    assert sweep.total_s.shape == (5,)
    for i in range(5):
        one = batch_cost(gqa_model(), cluster(2, 2), DECODE, StepRouting(slots[i], traffic[i]))
        assert float(one.total_s) == pytest.approx(sweep.total_s[i], rel=1e-12)
        assert float(one.balanced_total_s) == pytest.approx(sweep.balanced_total_s[i], rel=1e-12)
    d = json.loads(json.dumps(sweep.to_dict()))
    assert d["dropped_tokens"] == [3.0] * 5
    assert set(d["components_s"]) == set(LAYER_COMPONENTS)


def test_bad_inputs_name_the_field():
    spec, cl = gqa_model(), cluster(1, 4)
    slots, traffic = straggler_inputs()
    neg = slots.copy()
    neg[0, 1, 0] = -1

    def cost(st, tb=None, **extras):
        return batch_cost(spec, cl, DECODE, StepRouting(st, tb), StepExtras(**extras))

    with pytest.raises(ValueError, match="slot_tokens: token counts"):
        cost(neg, traffic)
    with pytest.raises(ValueError, match=r"slot_tokens: shape \(2, 3, 1\)"):
        cost(slots[:, :3], traffic)
    with pytest.raises(ValueError, match=r"slot_tokens: shape \(1, 4, 1\)"):
        cost(slots[:1], traffic)
    with pytest.raises(ValueError, match=r"traffic_bytes: shape \(2, 4, 3\)"):
        cost(slots, traffic[..., :3])
    with pytest.raises(ValueError, match=r"traffic_bytes: shape \(4, 4\)"):
        cost(slots, traffic[0])
    with pytest.raises(ValueError, match="do not broadcast"):
        cost(np.stack([slots] * 3), np.stack([traffic] * 2))
    with pytest.raises(ValueError, match="migration_overlap"):
        cost(slots, traffic, window=1.5)
    with pytest.raises(ValueError, match="predictor_s"):
        cost(slots, traffic, predictor_s=-1.0)
    with pytest.raises(ValueError, match="migration_s"):
        cost(slots, traffic, migration_s={"intra": np.full((2, 4), np.nan)})
    with pytest.raises(ValueError, match="migration_s port='pcie'"):
        cost(slots, traffic, migration_s={"pcie": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="predictor_s"):
        cost(slots, traffic, predictor_s=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="dispatch_chunks"):
        cost(slots, traffic, dispatch_chunks=0)
    with pytest.raises(ValueError, match="dropped_tokens"):
        batch_cost(spec, cl, DECODE, StepRouting(slots, traffic, dropped_tokens=np.array([1, 2])))
    with pytest.raises(ValueError, match="dtype='int3'"):
        batch_cost(gqa_model(dtype="int3"), cl, DECODE, StepRouting(slots, traffic))


def test_default_traffic_follows_given_slot_tokens():
    slots, traffic = straggler_inputs()
    given = batch_cost(gqa_model(), cluster(1, 4), DECODE, StepRouting(slots, traffic))
    derived = batch_cost(gqa_model(), cluster(1, 4), DECODE, StepRouting(slots))
    assert float(derived.total_s) == pytest.approx(float(given.total_s), rel=1e-12)
    with pytest.raises(ValueError, match="slot_tokens: token counts"):
        batch_cost(gqa_model(), cluster(1, 4), DECODE, StepRouting(-slots))
