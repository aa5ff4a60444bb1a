"""Token-level mechanisms (direct dispatch, replica choice, prefetch): hand-computed formulas,
linearity of the copy split, and the what-if curve rising with accuracy on a skewed preset."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from test_cost_helpers import INTER_BW, INTER_LAT, INTRA_BW, INTRA_LAT, cluster, gqa_model

from gps.advisor import strategies as st
from gps.advisor.advise import build, eval_data, mechanisms, slots_per_gpu
from gps.advisor.pricing import price_routed
from gps.app import CONF_DIR
from gps.cost.e2e import batch_cost
from gps.cost.token_mechanisms import (
    NONE,
    Mechanisms,
    copy_hits,
    direct_dispatch_s,
    expert_fetch_s,
    fetch_bytes,
    resident_slots,
    split_copies,
)
from gps.hardware import LinkProfile
from gps.workload import Workload
from predictors.whatif import WhatIfTokenPredictor

MB = 1e6


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


def test_direct_dispatch_by_hand() -> None:
    c = cluster(2, 2)  # GPUs 0,1 on node 0; 2,3 on node 1
    early = np.zeros((1, 4, 4))
    early[0, 0, 1] = 50 * MB  # intra only: 1e-6 + 50e6/1e11 = 5.01e-4 s
    late = np.zeros((1, 4, 4))
    late[0, 0, 2] = 10 * MB  # inter: 1e-5 + 10e6/1e10 = 1.01e-3 s
    t_early, t_late = INTRA_LAT + 50 * MB / INTRA_BW, INTER_LAT + 10 * MB / INTER_BW
    # attention 2e-4 s hides 2e-4 of the early 5.01e-4 s; the late transfer shows fully
    got = direct_dispatch_s(early, late, 2e-4, c, overlap=1.0)
    assert float(got[0]) == pytest.approx(t_early - 2e-4 + t_late, rel=1e-12)
    assert float(direct_dispatch_s(early, late, 1e-3, c)[0]) == pytest.approx(t_late, rel=1e-12)
    assert float(direct_dispatch_s(early, late, 1e-3, c, overlap=0.0)[0]) == pytest.approx(
        t_early + t_late, rel=1e-12
    )
    with pytest.raises(ValueError, match="direct_dispatch_overlap"):
        direct_dispatch_s(early, late, 1e-3, c, overlap=1.5)


def test_prefetch_by_hand() -> None:
    np.testing.assert_array_equal(resident_slots(4, 0.5), [True, True, False, False])
    busy = np.array([[[True, True, True, False], [True, False, True, True]]])  # [L=1, G=2, R=4]
    pre = np.array([[[True, False, False, True], [False, False, True, False]]])
    early, late = fetch_bytes(busy, pre, resident_slots(4, 0.5), expert_bytes=100.0)
    np.testing.assert_array_equal(early, [[100.0, 100.0]])  # slot 3 of GPU 0, slot 2 of GPU 1
    np.testing.assert_array_equal(late, [[100.0, 100.0]])  # slot 2 of GPU 0, slot 3 of GPU 1
    link = LinkProfile("x", bandwidth=1e3, latency_s=0.01)
    # per GPU: max(0, 0.01 + 0.1 - 0.05) + 0.01 + 0.1 = 0.17 s
    assert float(expert_fetch_s(early, late, 0.05, link)[0]) == pytest.approx(0.17, rel=1e-12)
    with pytest.raises(ValueError, match="resident_experts"):
        Mechanisms(resident_experts=0.5)  # no fetch link


def test_batch_cost_dispatch_override() -> None:
    spec, c, w = gqa_model(), cluster(1, 4), Workload("decode", batch_size=8, context_len=1000)
    ref = batch_cost(spec, c, w)
    d = np.full(ref.components["dispatch"].shape, 1e-3)
    got = batch_cost(spec, c, w, dispatch_s=d, expert_fetch_s=2e-3)
    np.testing.assert_allclose(got.components["dispatch"], 1e-3)
    np.testing.assert_allclose(got.components["combine"], ref.components["combine"])
    np.testing.assert_allclose(got.components["expert_fetch"], 2e-3)
    delta = (1e-3 - ref.components["dispatch"] + 2e-3).sum()
    assert float(got.total_s) == pytest.approx(float(ref.total_s) + delta, rel=1e-12)
    assert np.all(got.balanced_total_s <= got.total_s + 1e-15)


@pytest.fixture(scope="module")
def skewed():
    """Mixtral on 8 H100s, eight 256-token prompts per step, the calibrated MMLU-like trace."""
    over = ["workload.batch_size=8", "workload.seq_len=256", "evaluation.train_batches=3",
            "evaluation.test_batches=2", "trace.dirichlet_alpha=1.0"]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=over)
    spec, c, w, tc = build(cfg)
    s = cfg.strategy
    ctx = st.Context(spec, c, w, eval_data(cfg, tc, spec, w),
                     slots_per_gpu(spec, c, s.replica_slots_per_gpu), s.split,
                     s.migration_overlap)  # fmt: skip
    return ctx, mechanisms(s)


def _speedup(ctx, base_s: float, r, mech) -> float:
    cost = price_routed(r, ctx.spec, ctx.cluster, ctx.workload, migration_overlap=1.0,
                        mechanisms=mech)  # fmt: skip
    return base_s / float(cost.total_s.mean())


def test_copy_split_is_linear_in_the_loads(skewed) -> None:
    ctx, _ = skewed
    r = st.token(ctx, "w", {}, model=WhatIfTokenPredictor(accuracy=0.7, seed=1))
    tr = r.token_routing
    np.testing.assert_allclose(tr.hit_split.slot_tokens + tr.miss.slot_tokens, r.sim.slot_tokens)
    np.testing.assert_allclose(tr.hit_split.traffic_bytes + tr.miss.traffic_bytes,
                               r.sim.traffic_bytes, rtol=1e-12, atol=1e-3)  # fmt: skip
    # replica choice never adds cross-GPU bytes
    assert tr.hit_local.traffic_bytes.sum() <= tr.hit_split.traffic_bytes.sum() + 1e-3


def test_whatif_speedup_rises_with_accuracy(skewed) -> None:
    """Wherever the oracle beats no balancing, perfect per-token prediction at zero overhead is
    visibly faster than a coin-flip one, and the curve never falls with accuracy."""
    ctx, mech = skewed
    base = price_routed(st.no_balancing(ctx), ctx.spec, ctx.cluster, ctx.workload,
                        migration_overlap=1.0).total_s.mean()  # fmt: skip
    assert _speedup(ctx, base, st.oracle(ctx), mech) > 1.01
    accs = [0.5, 0.75, 1.0]
    sp = [_speedup(ctx, base, st.token(ctx, "w", {}, model=WhatIfTokenPredictor(accuracy=a)),
                   mech) for a in accs]  # fmt: skip
    assert sp[-1] > sp[0] * 1.02, sp
    assert sp == sorted(sp), sp
    # the mechanisms are what moves it: switched off, accuracy buys (almost) nothing more
    off = [_speedup(ctx, base, st.token(ctx, "w", {}, model=WhatIfTokenPredictor(accuracy=a)),
                    NONE) for a in (0.5, 1.0)]  # fmt: skip
    assert sp[-1] - sp[0] > off[1] - off[0] + 0.01
