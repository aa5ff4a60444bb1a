"""Hardware description: GPU and link profiles (from ``hardware_profiles/``) and the cluster.

Units inside the code are SI base units: FLOP/s, bytes/s, bytes, seconds. The YAML files
carry every number as ``{value, unit, source}`` and the loader converts units; see
``docs/hardware_profiles.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def gemm_efficiency(k: float | np.ndarray, c: float, k0: float) -> np.ndarray:
    """``c * K / (K + k0)``: compute efficiency (fraction of dense peak) of a GEMM reducing over
    ``K`` elements, for the large-K efficiency ``c`` and the knee ``k0`` (elements of ``K``);
    the form ``gps.calibration`` and ``benchmarks/gpu/fit_fp8_gemm.py`` fit."""
    k = np.asarray(k, dtype=float)
    return c * k / (k + k0)


@dataclass(frozen=True)
class GPUProfile:
    """One accelerator.

    Attributes:
        name: Marketing name, e.g. ``"H100-SXM5-80GB"``.
        peak_flops: Dense (no sparsity) peak FLOP/s per dtype, e.g. ``{"bf16": 989e12}``.
        hbm_bandwidth: Peak HBM bandwidth, bytes/s.
        hbm_capacity: HBM capacity, bytes.
        sm_count: Streaming multiprocessors.
        launch_overhead_s: Fixed cost charged once per kernel (op), seconds.
        compute_efficiency: Achievable fraction of ``peak_flops`` on large GEMMs, in (0, 1].
        memory_efficiency: Achievable fraction of ``hbm_bandwidth`` on streaming copies, in (0, 1].
        efficiency_source: ``"assumption: ..."`` or ``"measured: <device> <date>"``.
        source: Datasheet/whitepaper the peaks come from.
        roofline_knee: p-norm exponent rounding the roofline's compute/memory corner
            (``gps.cost.roofline.knee_time``); 0 = sharp ``max``.
        eager_launch_overhead_s: seconds per kernel launched eagerly from the host (PyTorch
            dispatch, no CUDA graph); 0 = ``launch_overhead_s``. Engines that run a phase
            without CUDA graphs (``gps.engine``) pay this per kernel.
        host_launch_s: seconds the host needs to issue one kernel in the step being priced
            (an engine running the phase eagerly sets it to ``eager_launch_overhead_s``); an
            op then takes at least ``launches * host_launch_s`` (the GPU waits for the host
            when kernels are shorter than their launch). 0: CUDA graphs, no host bound.
        attention_efficiency: achievable fraction of peak of a fused (flash) attention core,
            in (0, 1]; 0 = ``compute_efficiency``.
        gemm_k_knee: ``k0``, elements: a GEMM reducing over ``K`` runs at
            ``compute_efficiency * K / (K + k0)`` (``gemm_efficiency``); 0 = no dependence on
            ``K`` (``compute_efficiency`` is then the large-GEMM efficiency of every GEMM).
        fp8_compute_efficiency, fp8_gemm_k_knee: ``c`` and ``k0`` of FP8 GEMMs when they run
            other kernels than the GEMMs ``compute_efficiency``/``gemm_k_knee`` were fitted on
            (block-scaled FP8 GEMMs, DeepGEMM); 0 = FP8 GEMMs use the common ``c`` and ``k0``.
    """

    name: str
    peak_flops: dict[str, float]
    hbm_bandwidth: float
    hbm_capacity: float
    sm_count: int
    launch_overhead_s: float
    compute_efficiency: float
    memory_efficiency: float
    efficiency_source: str = ""
    source: str = ""
    roofline_knee: float = 0.0
    gemm_k_knee: float = 0.0
    eager_launch_overhead_s: float = 0.0
    attention_efficiency: float = 0.0
    host_launch_s: float = 0.0
    fp8_compute_efficiency: float = 0.0
    fp8_gemm_k_knee: float = 0.0

    def launch_s(self, mode: str = "cuda_graph") -> float:
        """Seconds per kernel launch: the graph floor, or the eager host dispatch cost."""
        if mode == "eager" and self.eager_launch_overhead_s > 0:
            return self.eager_launch_overhead_s
        return self.launch_overhead_s

    def gemm_efficiency(self, k: float, dtype: str | None = None) -> float:
        """Compute efficiency of a GEMM reducing over ``k`` elements: ``c * k / (k + k0)``
        with ``c, k0 = compute_efficiency, gemm_k_knee`` (fit: ``gps.calibration``), or, for
        ``dtype == "fp8"`` on a profile that sets them, ``fp8_compute_efficiency,
        fp8_gemm_k_knee`` (``docs/calibration.md``)."""
        if k <= 0:
            raise ValueError(f"GEMM reduction length must be > 0, got {k}")
        if dtype == "fp8" and self.fp8_compute_efficiency > 0:
            return float(gemm_efficiency(k, self.fp8_compute_efficiency, self.fp8_gemm_k_knee))
        return float(gemm_efficiency(k, self.compute_efficiency, self.gemm_k_knee))

    def flops_for(self, dtype: str) -> float:
        """Peak dense FLOP/s for ``dtype``; raises ``KeyError`` naming the GPU if unsupported."""
        try:
            return self.peak_flops[dtype]
        except KeyError:
            raise KeyError(
                f"GPU {self.name!r} has no peak FLOP/s for dtype {dtype!r}; "
                f"known: {sorted(self.peak_flops)}"
            ) from None


@dataclass(frozen=True)
class LinkProfile:
    """One interconnect, priced with the alpha-beta model ``t = latency + bytes / bandwidth``.

    Attributes:
        name: e.g. ``"NVLink4"``, ``"InfiniBand-NDR"``.
        bandwidth: Per-direction bandwidth of one port (one NIC, or one GPU's NVLink set), bytes/s.
        latency_s: Alpha term: per-message/step latency, seconds.
        ports_per_gpu: NICs (or NVLink sets) each GPU drives; per-GPU bandwidth is
            ``bandwidth * ports_per_gpu``.
        efficiency: Achievable fraction of ``bandwidth`` for large all-to-all messages, in (0, 1].
        source: Datasheet/whitepaper the numbers come from.
        hop_latency_s: latency of one step inside a multi-step collective (a ring or tree hop
            between two GPUs), seconds; ``latency_s`` is paid once per collective (launch,
            synchronisation) and ``hop_latency_s`` once per step (NCCL's tuning model splits
            a collective's latency the same way: ``baseLat`` + steps x ``hwLat``).
    """

    name: str
    bandwidth: float
    latency_s: float
    ports_per_gpu: float = 1.0
    efficiency: float = 1.0
    source: str = ""
    hop_latency_s: float = 0.0

    @property
    def gpu_bandwidth(self) -> float:
        """Achievable per-GPU, per-direction bandwidth, bytes/s."""
        return self.bandwidth * self.ports_per_gpu * self.efficiency


@dataclass(frozen=True)
class Cluster:
    """``num_nodes`` x ``gpus_per_node`` identical GPUs; GPU ``g`` sits on node ``g // per_node``.

    ``inter_link`` may be ``None`` only for a single node. ``host_link``: each GPU's link to
    host memory (PCIe), ``None`` when not described (then replicas cannot be priced as copies
    from host memory).
    """

    name: str
    gpu: GPUProfile
    intra_link: LinkProfile
    inter_link: LinkProfile | None
    num_nodes: int
    gpus_per_node: int
    meta: dict[str, str] = field(default_factory=dict)
    host_link: LinkProfile | None = None

    @property
    def num_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node

    def node_of(self) -> np.ndarray:
        """Node index of every GPU, shape ``[G]`` int."""
        return np.arange(self.num_gpus) // self.gpus_per_node

    def same_node(self) -> np.ndarray:
        """Boolean ``[G, G]``: True where two GPUs share a node (diagonal included)."""
        n = self.node_of()
        return n[:, None] == n[None, :]
