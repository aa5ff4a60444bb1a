"""All-to-all and all-reduce times, hand-computed on a 2-node x 2-GPU cluster."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_cost_helpers import INTER_BW, INTER_LAT, INTRA_BW, INTRA_LAT, cluster, intra_link

from gps.cost.comm import all_gather_time, allreduce_time, alltoall_time, reduce_scatter_time
from gps.hardware import Cluster

MB = 1e6
# GPUs 0,1 on node 0; 2,3 on node 1. Entry [i, j]: bytes GPU i sends to GPU j.
TRAFFIC = (
    np.array(
        [
            [5, 10, 20, 0],  # 5 to itself: local, free
            [30, 0, 0, 40],
            [0, 0, 0, 10],
            [0, 0, 50, 0],
        ],
        dtype=float,
    )
    * MB
)


def test_known_four_gpu_two_node_matrix():
    t = alltoall_time(TRAFFIC, cluster(2, 2))
    # intra send (10, 30, 10, 50), recv (30, 10, 50, 10) MB -> busiest 50 MB
    assert float(t.intra_s) == pytest.approx(INTRA_LAT + 50 * MB / INTRA_BW, rel=1e-12)
    # inter send (20, 40, 0, 0), recv (0, 0, 20, 40) MB -> busiest 40 MB
    assert float(t.inter_s) == pytest.approx(INTER_LAT + 40 * MB / INTER_BW, rel=1e-12)
    assert float(t.total_s) == pytest.approx(4.01e-3, rel=1e-12)  # max(5.01e-4, 4.01e-3)
    # balanced: intra 100 MB / 4 = 25 MB per GPU, inter 60 MB / 4 = 15 MB per GPU
    assert float(t.balanced_s) == pytest.approx(INTER_LAT + 15 * MB / INTER_BW, rel=1e-12)


def test_latency_only_where_class_carries_bytes():
    intra_only = np.zeros((4, 4))
    intra_only[0, 1] = 1e6
    t = alltoall_time(intra_only, cluster(2, 2))
    assert float(t.inter_s) == 0.0
    assert float(t.total_s) == pytest.approx(INTRA_LAT + 1e6 / INTRA_BW)
    local_only = np.diag([1e9, 1e9, 1e9, 1e9])
    assert float(alltoall_time(local_only, cluster(2, 2)).total_s) == 0.0


def test_vectorised_over_leading_dims_and_transpose_symmetric():
    stack = np.stack([TRAFFIC, 2 * TRAFFIC, TRAFFIC.T])[:, None]  # [3, 1, 4, 4]
    t = alltoall_time(stack, cluster(2, 2))
    assert t.total_s.shape == (3, 1)
    single = float(alltoall_time(TRAFFIC, cluster(2, 2)).total_s)
    assert t.total_s[2, 0] == pytest.approx(single)  # combine = transpose: same time
    assert t.total_s[1, 0] == pytest.approx(INTER_LAT + 80 * MB / INTER_BW)


@pytest.mark.parametrize("shape", [(4, 3), (3, 3), (4,), (2, 4, 5)])
def test_bad_shape_names_field(shape):
    with pytest.raises(ValueError, match=r"traffic_bytes: shape"):
        alltoall_time(np.zeros(shape), cluster(2, 2))


def test_negative_or_nan_traffic_rejected():
    bad = TRAFFIC.copy()
    bad[1, 2] = -1.0
    with pytest.raises(ValueError, match="traffic_bytes"):
        alltoall_time(bad, cluster(2, 2))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="traffic_bytes"):
        alltoall_time(bad, cluster(2, 2))


def test_allreduce_ring():
    # test links have no hop latency: one node, 2 GPUs, 1e8 bytes (large: the ring wins).
    # ring = RS + AG = 2*lat + 2*(G-1)/G * bytes/bw = 2e-6 + 1e-3; tree = lat + 2*bytes/bw
    assert float(allreduce_time(1e8, cluster(1, 2))) == pytest.approx(2e-6 + 1e8 / INTRA_BW)
    # two nodes, 4 GPUs: the ring crosses the inter-node link, 2*lat + 1.5 * bytes/bw
    expected = 2 * INTER_LAT + 1.5 * 1e8 / INTER_BW
    assert float(allreduce_time(1e8, cluster(2, 2))) == pytest.approx(expected)
    assert float(allreduce_time(0.0, cluster(2, 2))) == 0.0
    assert float(allreduce_time(1e8, cluster(1, 1))) == 0.0


def hop_cluster(gpus: int) -> Cluster:
    """One node of ``gpus`` GPUs on a link with latency 10 us, hop 0.5 us, 1e11 B/s."""
    link = replace(intra_link(), latency_s=10e-6, hop_latency_s=0.5e-6)
    return replace(cluster(1, gpus), intra_link=link)


def test_reduce_scatter_and_all_gather_by_hand():
    # 8 GPUs, 8e6 bytes: 10 us + 7 * 0.5 us + 7/8 * 8e6 / 1e11 s = 13.5 us + 70 us
    cl = hop_cluster(8)
    assert float(reduce_scatter_time(8e6, cl)) == pytest.approx(83.5e-6)
    assert float(all_gather_time(8e6, cl)) == pytest.approx(83.5e-6)
    assert float(reduce_scatter_time(8e6, hop_cluster(1))) == 0.0


def test_allreduce_is_reduce_scatter_plus_all_gather_when_large():
    cl = hop_cluster(8)
    big = 8e6  # ring 167 us; tree 10 + 6*0.5 + 2*80 = 173 us
    ring = float(reduce_scatter_time(big, cl) + all_gather_time(big, cl))
    assert ring == pytest.approx(167e-6)
    assert float(allreduce_time(big, cl)) == pytest.approx(ring)


def test_small_allreduce_takes_the_tree_and_pays_latency_once():
    # 8 KB on 8 GPUs (one token's hidden state in bf16, d = 4096): ring = 2*10 + 14*0.5 us
    # + 2*7/8*8192/1e11 s = 27.14 us; tree = 10 + 2*3*0.5 us + 2*8192/1e11 s = 13.16 us.
    # Before the fix the link latency was paid per ring step: 14 * 10 us = 140 us.
    cl = hop_cluster(8)
    tiny = 8192.0
    ring = float(reduce_scatter_time(tiny, cl) + all_gather_time(tiny, cl))
    assert ring == pytest.approx(27e-6 + 1.75 * tiny / 1e11)
    assert float(allreduce_time(tiny, cl)) == pytest.approx(13e-6 + 2 * tiny / 1e11)
    assert float(allreduce_time(tiny, cl)) <= ring


def test_shipped_nvlink_allreduce_of_one_decode_token():
    # the 7x overpricing of issue 25: tp8 batch-1 decode all-reduces 8 KB per attention block
    from gps.profiles import load_cluster

    cl = load_cluster({"name": "h100x8", "gpu": "h100_sxm5_80gb", "intra_node_link": "nvlink4",
                       "inter_node_link": None, "num_nodes": 1, "gpus_per_node": 8})  # fmt: skip
    t = float(allreduce_time(4096 * 2, cl))
    assert 10e-6 < t < 20e-6  # 10 us per collective + 6 hops of 0.6 us (NCCL Tree/LL)


def naive_alltoall(traffic: np.ndarray, num_nodes: int, gpus_per_node: int) -> float:
    """Reference: explicit loops over GPU pairs."""
    g = num_nodes * gpus_per_node
    send = {"intra": np.zeros(g), "inter": np.zeros(g)}
    recv = {"intra": np.zeros(g), "inter": np.zeros(g)}
    for i in range(g):
        for j in range(g):
            if i == j:
                continue
            cls = "intra" if i // gpus_per_node == j // gpus_per_node else "inter"
            send[cls][i] += traffic[i, j]
            recv[cls][j] += traffic[i, j]
    times = []
    for cls, lat, bw in (("intra", INTRA_LAT, INTRA_BW), ("inter", INTER_LAT, INTER_BW)):
        peak = max(send[cls].max(), recv[cls].max())
        times.append(lat + peak / bw if peak > 0 else 0.0)
    return max(times)


@pytest.mark.parametrize(("nodes", "per_node"), [(2, 2), (1, 8), (2, 8), (4, 8), (1, 20)])
def test_matches_naive_reference_small_and_large_g(nodes, per_node):
    # G <= 16 uses one BLAS product, larger G block sums: both must match the loops
    rng = np.random.default_rng(nodes * 100 + per_node)
    traffic = rng.uniform(0, 1e7, size=(3, nodes * per_node, nodes * per_node))
    traffic[1] *= rng.random(traffic[1].shape) < 0.1  # sparse: some classes may be empty
    traffic[2] = 0.0
    t = alltoall_time(traffic, cluster(nodes, per_node))
    for k in range(3):
        assert float(t.total_s[k]) == pytest.approx(naive_alltoall(traffic[k], nodes, per_node))
