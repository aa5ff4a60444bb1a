"""Hardware profiles: unit conversion, shipped profiles, clusters, and every bad-input case."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gps.profiles import (
    ClusterConfig,
    ProfileError,
    default_profiles_dir,
    list_profiles,
    load_cluster,
    load_cluster_config,
    load_gpu,
    load_link,
    write_measured,
)

CLUSTERS = ["a100_nvlink", "h100_nvlink", "h200_nvlink", "h100_2node_ib", "h100_4node_ib",
            "a100_2node_ib"]  # fmt: skip


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    """A private copy of the shipped profiles to break."""
    dst = tmp_path / "hardware_profiles"
    shutil.copytree(default_profiles_dir(), dst)
    return dst


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_h100_profile_in_si_units():
    gpu = load_gpu("h100_sxm5_80gb")
    assert gpu.peak_flops["bf16"] == pytest.approx(989e12)
    assert gpu.peak_flops["fp8"] == pytest.approx(1979e12)
    assert gpu.hbm_bandwidth == pytest.approx(3.35e12)
    assert gpu.hbm_capacity == pytest.approx(80e9)
    assert gpu.sm_count == 132
    assert 0 < gpu.compute_efficiency <= 1 and 0 < gpu.memory_efficiency <= 1


def test_ib_bit_rate_converted_to_bytes():
    ndr, hdr = load_link("ib_ndr"), load_link("ib_hdr")
    assert ndr.bandwidth == pytest.approx(50e9)  # 400 Gb/s
    assert hdr.bandwidth == pytest.approx(25e9)  # 200 Gb/s
    assert ndr.gpu_bandwidth == pytest.approx(50e9 * ndr.efficiency)


def test_every_shipped_profile_loads_with_sources():
    names = list_profiles()
    assert {"a100_sxm4_80gb", "h100_sxm5_80gb", "h200_sxm_141gb"} <= set(names["gpu"])
    assert {"nvlink3", "nvlink4", "ib_hdr", "ib_ndr", "pcie_gen4_x16",
            "pcie_gen5_x16"} <= set(names["link"])  # fmt: skip
    for stem in names["gpu"]:
        assert load_gpu(stem).source
    for stem in names["link"]:
        assert load_link(stem).source


@pytest.mark.parametrize("name", CLUSTERS)
def test_shipped_clusters(name):
    cluster = load_cluster_config(name)
    nodes = int(name.split("node")[0][-1]) if "node" in name else 1
    assert cluster.num_nodes == nodes and cluster.gpus_per_node == 8
    assert (cluster.inter_link is None) == (nodes == 1)


def test_cluster_node_layout():
    cluster = load_cluster(ClusterConfig("c", "h100_sxm5_80gb", "nvlink4", "ib_ndr", 2, 4))
    assert cluster.node_of().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert cluster.same_node()[0, 3] and not cluster.same_node()[3, 4]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(extra=1), "'extra'"),
        (lambda d: d.pop("hbm_bandwidth"), "'hbm_bandwidth'"),
        (lambda d: d["hbm_bandwidth"].update(value=-1), "'hbm_bandwidth.value'"),
        (lambda d: d["hbm_bandwidth"].update(value=0), "'hbm_bandwidth.value'"),
        (lambda d: d["hbm_bandwidth"].update(value="fast"), "'hbm_bandwidth.value'"),
        (lambda d: d["hbm_bandwidth"].update(unit="GB"), "'hbm_bandwidth.unit'"),
        (lambda d: d["hbm_bandwidth"].update(unit="furlongs/s"), "'hbm_bandwidth.unit'"),
        (lambda d: d["peak_flops"]["bf16"].update(unit="GB/s"), "'peak_flops.bf16.unit'"),
        (lambda d: d["efficiency"]["compute"].update(value=1.5), "'efficiency.compute.value'"),
        (lambda d: d["sm_count"].update(value=13.5), "'sm_count.value'"),
        (lambda d: d["hbm_capacity"].pop("source"), "'hbm_capacity.source'"),
        (lambda d: d["fp8_gemm"].update(compute=1.5), "'fp8_gemm.compute'"),
        (lambda d: d["fp8_gemm"].update(k_knee=-1), "'fp8_gemm.k_knee'"),
        (lambda d: d["fp8_gemm"].pop("source"), "'fp8_gemm.source'"),
        (lambda d: d.update(fp8_gemm=0.7), "'fp8_gemm'"),
        (lambda d: d.update(roofline_knee={"value": 0.5, "source": "x"}), "'roofline_knee.value'"),
        (lambda d: d.update(roofline_knee=4), "'roofline_knee'"),
        (lambda d: d.update(gemm_k_knee={"value": -1, "source": "x"}), "'gemm_k_knee.value'"),
        (lambda d: d.update(gemm_k_knee={"value": 100}), "'gemm_k_knee"),
        (lambda d: d.update(gemm_k_knee={"value": 100, "source": ""}), "'gemm_k_knee.source'"),
    ],
)
def test_bad_gpu_profile_names_file_and_field(profiles, change, field):
    path = profiles / "gpu" / "h100_sxm5_80gb.yaml"
    edit(path, change)
    with pytest.raises(ProfileError) as err:
        load_gpu(path)
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["bandwidth"].update(value=0), "'bandwidth.value'"),
        (lambda d: d["latency"].update(unit="GB/s"), "'latency.unit'"),
        (lambda d: d.update(efficiency={"value": 0, "source": "x"}), "'efficiency.value'"),
        (lambda d: d.pop("latency"), "'latency'"),
    ],
)
def test_bad_link_profile_names_file_and_field(profiles, change, field):
    path = profiles / "link" / "ib_ndr.yaml"
    edit(path, change)
    with pytest.raises(ProfileError) as err:
        load_link(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_not_yaml_mapping(profiles):
    path = profiles / "gpu" / "h100_sxm5_80gb.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ProfileError, match="top level"):
        load_gpu(path)


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"num_nodes": 2, "inter_node_link": None}, "inter_node_link"),
        ({"num_nodes": 0}, "num_nodes"),
        ({"gpus_per_node": -8}, "gpus_per_node"),
        ({"gpu": "h900"}, "gpu"),
        ({"intra_node_link": "nvlink9"}, "link"),
        ({"colour": "green"}, "colour"),
    ],
)
def test_bad_cluster(cfg, field):
    base = {"name": "x", "gpu": "h100_sxm5_80gb", "intra_node_link": "nvlink4",
            "inter_node_link": None, "num_nodes": 1, "gpus_per_node": 8}  # fmt: skip
    with pytest.raises(ProfileError, match=field):
        load_cluster({**base, **cfg})


def test_unknown_cluster_lists_known():
    with pytest.raises(ProfileError, match="h100_nvlink"):
        load_cluster_config("h999_nvlink")


MEASURED = {
    "device": "NVIDIA H100 80GB HBM3",
    "date": "2026-11-24",
    "method": "benchmarks/gpu/measure.py + fit.py",
    "compute_efficiency": 0.77,
    "memory_efficiency": 0.91,
    "launch_overhead_us": 6.5,
}


def test_write_measured_overrides_and_keeps_the_rest(profiles):
    path = profiles / "gpu" / "h100_sxm5_80gb.yaml"
    marker = "# Written by benchmarks/gpu/fit.py"
    before = path.read_text().split(marker)[0]  # the profile above any measured: block
    write_measured(path, MEASURED)
    write_measured(path, {**MEASURED, "compute_efficiency": 0.78})  # replaces, not appends
    text = path.read_text()
    assert text.startswith(before) and text.count("measured:") == 1 and text.count(marker) == 1
    gpu = load_gpu(path)
    assert gpu.compute_efficiency == 0.78 and gpu.memory_efficiency == 0.91
    assert gpu.launch_overhead_s == pytest.approx(6.5e-6)
    assert gpu.efficiency_source.startswith("measured: NVIDIA H100")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"compute_efficiency": 1.2}, "measured.compute_efficiency"),
        ({"date": "yesterday"}, "measured.date"),
        ({"device": ""}, "measured.device"),
        ({"sparkle": 1}, "measured.sparkle"),
        ({"launch_overhead_us": 0.0}, "measured.launch_overhead_us"),
        ({"eager_launch_us": -1.0}, "measured.eager_launch_us"),
        ({"knee_exponent": 0.5}, "measured.knee_exponent"),
        ({"gemm_k_knee": -1.0}, "measured.gemm_k_knee"),
    ],
)
def test_write_measured_rejects_bad_block_and_writes_nothing(profiles, change, field):
    path = profiles / "gpu" / "h100_sxm5_80gb.yaml"
    before = path.read_text()
    with pytest.raises(ProfileError, match=field):
        write_measured(path, {**MEASURED, **change})
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        p.name for p in (default_profiles_dir() / "gpu").iterdir()
    )
