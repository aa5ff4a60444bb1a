"""Hydra structured configs: the schema every ``conf/`` file is checked against.

Registering the schema in Hydra's ConfigStore makes a typo in a YAML file or an override
(``workload.batch_sze=8``, ``strategy.replan_intervall=4``) fail at start-up with Hydra's own
error. Config groups (``conf/<group>/*.yaml``): ``hardware``, ``model``, ``workload``,
``engine``, ``trace``, ``predictor``, ``strategy``, ``report``, ``parallel``, ``assumptions``,
``experiment``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from gps.cost.parallel import ParallelConfig
from gps.engine import EngineConfig
from gps.model import MoEModelSpec
from gps.profiles import ClusterConfig
from gps.serving import ServingWorkload
from gps.workload import Workload


@dataclass
class EvaluationConfig:
    """How the trace becomes training history and held-out batches.

    Attributes:
        trace_path: a token-trace ``.npz`` to use instead of the ``trace`` preset (``None``:
            generate the preset). Its ``L``/``E``/``k`` must match the model.
        train_batches: batches of training history (predictor fitting, EPLB's first window).
        test_batches: held-out batches every strategy is priced on.
        horizons: load-series runs: forecast horizons in training steps, each a multiple of
            the series' record interval (``LoadSeriesConfig.step_interval``).
        train_fraction: load-series runs: leading fraction of the records the predictors fit
            on.
        stable_window_steps: load-series runs: when set, detect the stable state with windows
            of this many training steps (``gps.advisor.stable_state``) and also report each
            predictor's absolute and relative error inside it (``forecast.stable_state``,
            ``forecast.rows[i].stable``); ``None``: off.
        stable_factor: a window is stable when its variance and range are at most this
            factor times their settled level (``> 1``).
        sample_tokens_per_step: synthetic prefill runs whose step holds more tokens simulate
            routing on whole prompts totalling at most this many tokens per step and scale
            every token count to the step (``gps.advisor.data.prepare``); ``None``: off.
        seeds: run every strategy once per seed (synthetic traces regenerated) and pool the
            held-out batches; ``speedup_ci95`` then resamples seeds and batches
            (``gps.advisor.uncertainty``). ``None``: the run's ``seed`` only.
    """

    trace_path: str | None = None
    train_batches: int = 16
    test_batches: int = 8
    horizons: list[int] = field(default_factory=lambda: [10, 100, 1000, 2000])
    train_fraction: float = 0.5
    stable_window_steps: int | None = None
    stable_factor: float = 2.0
    sample_tokens_per_step: int | None = None
    seeds: list[int] | None = None


@dataclass
class PredictorConfig:
    """Which predictors the advisor trains and compares (names from ``predictors.PREDICTORS``).

    Attributes:
        distribution: Distribution-Only predictors.
        token: Token-to-Expert predictors.
        params: per-predictor constructor overrides, e.g. ``{lightgbm_token: {n_estimators: 20}}``.
    """

    distribution: list[str] = field(default_factory=list)
    token: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StrategyConfig:
    """Knobs of the balancing strategies (what ``gps-tune`` searches).

    Attributes:
        replica_slots_per_gpu: extra expert slots per GPU for replicas (beyond ``ceil(E/G)``).
        periodic: the periodic strategies priced: ``eplb`` (the default: EPLB as the engines
            deploy it, ``strategies.engine_eplb``, at ``eplb_window``/``eplb_interval``, with
            the engine profile's rebalance stall amortised over the interval) and/or
            ``every_n`` (``eplb_every_<replan_interval>``: a full re-pack every
            ``replan_interval`` batches from the last ``history_window``, its copies priced
            per batch on the ports).
        eplb_window: statistics window (steps) of ``eplb``; ``None``: the engine profile's
            (``engine.eplb_window_steps``).
        eplb_interval: rebalance interval (steps) of ``eplb``; ``None``: the engine's.
        eplb_async: ``eplb`` rebalances asynchronously (``true``) or synchronously
            (``false``); ``None`` (the default): the engine profile's own mode
            (``engine.eplb_async``: vLLM asynchronous, SGLang synchronous, its rebalances stop
            serving), so no engine is priced with a transfer mode it lacks.
        static_eplb: price static placement from the history's statistics
            (``static_eplb_r<R>``: SGLang ``--init-expert-location``) with the fewest redundant
            experts the engines accept and with every slot filled.
        replan_interval: ``every_n`` re-plans every this many batches.
        history_window: batches of history ``every_n`` plans from.
        capacity_factors: capacity-aware drop/reroute at these factors ``gamma``.
        ilp: include the MoETuner ILP placement.
        ilp_stages: ``1``: one joint ILP over load and cross-layer traffic (``gps.plans.ilp``);
            ``2``: MoETuner's two-stage ILP, group each layer's experts, then map the groups to
            GPUs by bandwidth-weighted traffic (``gps.plans.ilp_two_stage``).
        ilp_time_limit_s: seconds HiGHS may spend on the ILP.
        ilp_mip_gap: relative MIP gap at which HiGHS stops.
        migration_overlap: fraction of each layer's attention during which a GPU's ports carry
            the coming MoE block's work (replica copies, prefetch, chunked dispatch; one budget
            per port), [0, 1].
        split: how a duplicated expert's tokens split over its replicas when
            ``replica_choice`` is off: ``even``/``locality``.
        replica_choice: post-gate nearest-replica dispatch for every strategy: a copy of a
            replicated expert goes to the replica on its own GPU, else its node (the mechanism
            ledger, ``docs/cost_model.md``).
        dispatch_chunks: post-gate chunked dispatch for every strategy: attention and gate run
            in this many chunks, each chunk's dispatch starting when its gate is done (1: off).
        prefetch: non-resident expert weights are fetched during attention in the order of each
            strategy's belief (forecast, guesses, the truth for the oracle; evenly without
            one); ``False``: only after the gate.
        resident_experts: fraction of every GPU's expert slots whose weights stay in HBM, [0, 1];
            the others cross ``expert_fetch_link`` when used (1.0: all resident, no fetch).
        expert_fetch_link: link profile (``hardware_profiles/link/``) non-resident experts cross.
        replicas: ``spare`` (home copies stay; dynamic duplication rewrites the spare slots
            only) or ``repack`` (every re-plan re-packs all slots, as periodic re-layout does).
        migration_source: where new replicas' weights come from: ``peer`` (nearest GPU that
            holds the expert: NVLink in the node, InfiniBand across nodes) or ``host`` (host
            memory over PCIe, ``hardware.host_link``).
        horizon: steps a new plan is expected to serve; keep-or-switch weighs the exposed
            migration divided by this against the per-step gain (>= 1; 1 = myopic).
    """

    replica_slots_per_gpu: int = 1
    periodic: list[str] = field(default_factory=lambda: ["eplb"])
    eplb_window: int | None = None
    eplb_interval: int | None = None
    eplb_async: bool | None = None
    static_eplb: bool = True
    replan_interval: int = 4
    history_window: int = 4
    capacity_factors: list[float] = field(default_factory=lambda: [1.0, 1.25])
    ilp: bool = True
    ilp_stages: int = 1
    ilp_time_limit_s: float = 10.0
    ilp_mip_gap: float = 1e-4
    migration_overlap: float = 1.0
    split: str = "even"
    replica_choice: bool = True
    dispatch_chunks: int = 1
    prefetch: bool = True
    resident_experts: float = 1.0
    expert_fetch_link: str = "pcie_gen5_x16"
    replicas: str = "spare"
    migration_source: str = "peer"
    horizon: float = 4.0


@dataclass
class ReportConfig:
    """What the report holds.

    Attributes:
        guidelines: sweep the what-if predictors for the accuracy x overhead frontier.
        accuracy_grid: what-if Token-to-Expert top-k accuracies.
        overhead_grid_us: what-if Token-to-Expert overheads, microseconds per MoE layer.
        plots: write PNG plots (and embed them in the HTML page).
    """

    guidelines: bool = True
    accuracy_grid: list[float] = field(
        default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0]
    )
    overhead_grid_us: list[float] = field(default_factory=lambda: [0.0, 10.0, 50.0, 200.0])
    plots: bool = True


@dataclass
class PaperConfig:
    """A paper's headline figure that an ``experiment`` preset is compared with.

    Attributes:
        name: paper title and arXiv id.
        claim: the paper's figure, in words.
        metric: which of our numbers to set beside it (see ``gps.advisor.paper``).
        why: what differs between the paper's setting and ours.
        figures: the paper's headline figures as numbers, in the unit of ``metric`` (fractions
            for gains and errors, e.g. ``[0.013, 0.018]``; ratios for speed-ups, ``[1.94]``);
            empty: not compared numerically.
        setting: the paper's setting, one line per item; ``"(assumed)"`` marks a value the
            paper does not state.
    """

    name: str = ""
    claim: str = ""
    metric: str = ""
    why: str = ""
    figures: list[float] = field(default_factory=list)
    setting: list[str] = field(default_factory=list)


@dataclass
class GuidelineMapConfig:
    """The guideline map (``gps +experiment=guideline_map``; ``gps.advisor.guideline_map``).

    Attributes:
        enabled: run the map instead of the strategy comparison.
        skews: busiest-expert / mean tokens targets (the trace's Zipf exponent is set per target).
        link_gbps: intra-node link bandwidths, GB/s per GPU and direction.
        tokens: tokens per prefill step (prompts of ``min(T, 2048)`` tokens).
        resident_experts: fractions of every GPU's expert slots whose weights stay in HBM (the
            memory axis; the others are fetched over ``strategy.expert_fetch_link``).
        accuracies: what-if Token-to-Expert top-k accuracies.
        overheads_us: Token-to-Expert overheads, microseconds per MoE layer (critical path).
        distribution: the Distribution-Only predictor the map compares against.
        train_batches: history batches per cell.
        test_batches: held-out batches per cell.
    """

    enabled: bool = False
    skews: list[float] = field(default_factory=lambda: [1.2, 1.4, 1.6, 1.8, 2.0])
    link_gbps: list[float] = field(default_factory=lambda: [600.0, 200.0, 64.0, 32.0])
    tokens: list[int] = field(default_factory=lambda: [512, 2048, 8192, 16384])
    resident_experts: list[float] = field(default_factory=lambda: [1.0])
    accuracies: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.8, 0.9, 0.95, 1.0])
    overheads_us: list[float] = field(default_factory=lambda: [0.0, 10.0, 50.0])
    distribution: str = "window_mean"
    train_batches: int = 2
    test_batches: int = 2


@dataclass
class AssumptionsConfig:
    """How routed strategies are priced: ours (``roofline``) or the MoE-GPS paper's model
    (``moe_gps_paper``); every switch is documented in ``gps.advisor.assumptions``.

    Attributes:
        name: the member's name (reports).
        load_model: ``simulated`` or ``epsilon`` (busiest GPU at ``(1 + eps) x`` mean tokens).
        skew: no balancing's busiest-expert / mean under ``epsilon``; ``None``: measured.
        do_error: Distribution-Only ``|p_hat - p|`` under ``epsilon``; ``None``: measured.
        weight_copies: ``priced`` or ``hidden`` (behind attention).
        predictor: ``as_priced`` or ``before_attention`` (every predictor on the critical path).
        t2e_dispatch: ``mechanisms`` or ``skip_scatter`` (Token-to-Expert skips the dispatch).
        provenance: switch -> whether the value is the paper's or our reading (reports).
    """

    name: str = "roofline"
    load_model: str = "simulated"
    skew: float | None = None
    do_error: float | None = None
    weight_copies: str = "priced"
    predictor: str = "as_priced"
    t2e_dispatch: str = "mechanisms"
    provenance: dict[str, str] = field(default_factory=dict)


@dataclass
class EplbConfig:
    """``gps-eplb``: from engine load statistics to EPLB settings (``docs/eplb.md``).

    Attributes:
        pools: serving pools priced: ``prefill`` and/or ``decode`` (``workload`` is the pool
            of its phase; the other comes from ``conf/workload/<pool>.yaml``).
        prefill_batch_size, prefill_seq_len, decode_batch_size, decode_context_len: the
            pools' step shape (``None``: the pool's workload as composed).
        windows: history windows (recorded steps) the interval curve prices.
        intervals: rebalance intervals (steps) the curve prices (the engine default added).
        max_redundant_per_gpu: the redundancy curve covers every valid ``R`` up to this many
            redundant experts per GPU.
        num_redundant: price only this ``R`` (``None``: the curve chooses).
        synchronous: rebalance synchronously (``None``: the engine's default: vLLM async,
            SGLang sync).
        layers_per_chunk: SGLang ``--eplb-rebalance-layers-per-chunk`` (``None``: all layers
            in one pass).
        predictor: Distribution-Only predictor of predictive re-planning (``predictors``);
            empty: not priced.
        predictor_params: its constructor parameters.
        fluctuation: per-batch fluctuation model: ``auto`` (the fit of the model's family),
            ``esft``, ``mixtral``, ``independent``, or a number (``rho`` for every layer).
        history_fraction: leading share of the recorded steps used as history.
        recorded_tolerance: price the recorded counts directly when a recorded step holds
            within this relative margin of the pool step's token copies.
        memory_fraction: HBM share the engine reserves for weights and KV cache (vLLM
            ``--gpu-memory-utilization``, default 0.9).
        bootstrap: bootstrap resamples of each speed-up's 95% interval
            (``gps.advisor.uncertainty.speedup_interval``, as ``gps``'s; a tie is an interval
            overlapping the fastest one's, the simplest of the tied is the verdict).
        block_steps: the bootstrap's moving-block length (consecutive evaluation steps drawn
            together: they are correlated).
        anchors: plans per window the interval curve ages.
    """

    pools: list[str] = field(default_factory=lambda: ["prefill", "decode"])
    prefill_batch_size: int | None = None
    prefill_seq_len: int | None = None
    decode_batch_size: int | None = None
    decode_context_len: int | None = None
    windows: list[int] = field(default_factory=lambda: [100, 250, 500, 1000])
    intervals: list[int] = field(default_factory=lambda: [50, 100, 250, 500, 1000, 3000])
    max_redundant_per_gpu: int = 2
    num_redundant: int | None = None
    synchronous: bool | None = None
    layers_per_chunk: int | None = None
    predictor: str = "ewma"
    predictor_params: dict[str, Any] = field(default_factory=dict)
    fluctuation: str = "auto"
    history_fraction: float = 0.5
    recorded_tolerance: float = 0.25
    memory_fraction: float = 0.9
    bootstrap: int = 400
    block_steps: int = 10
    anchors: int = 8


@dataclass
class GPSConfig:
    """Top-level config of the ``gps`` app (``conf/config.yaml``).

    Attributes:
        hardware: cluster composed from profiles (``conf/hardware/``).
        model: MoE architecture (``conf/model/``): a preset, or ``model=hf
            model.config_json=<config.json>`` to read any Hugging Face MoE config
            (``MoEModelSpec.config_json``, ``gps.model.spec_from_hf_config``).
        workload: one serving step (``conf/workload/``).
        engine: the serving engine whose per-step costs and communication modes the steps
            are priced with (``conf/engine/``: ``ideal``, ``sglang``, ``vllm``, ``trtllm``;
            ``gps.engine``).
        serving: the load in a user's terms (concurrency, prompt and output lengths;
            ``gps.serving``); with ``serving.concurrency`` set, the step priced is the one the
            engine runs for it in ``workload.phase``; unset: ``workload`` gives the step.
        parallel: parallel layout priced beside the strategies (``conf/parallel/``:
            ``ep``, ``ep8``, ``tp8``, ``ep4_tp2``; ``gps.cost.parallel``).
        trace: synthetic trace preset (``conf/trace/``): a ``_target_`` config dataclass
            (``SyntheticTraceConfig`` or ``LoadSeriesConfig``) checked when instantiated at the
            start of the run (an unknown field fails there, before any work).
        predictor: predictors to compare (``conf/predictor/``).
        strategy: balancing knobs (``conf/strategy/``).
        report: report contents (``conf/report/``).
        evaluation: train/test batches of the trace.
        assumptions: pricing assumptions (``conf/assumptions/``): ``roofline`` (ours, default)
            or ``moe_gps_paper``.
        guideline_map: the guideline map's axes (``enabled`` by ``+experiment=guideline_map``).
        paper: set by ``experiment`` presets; empty otherwise.
        eplb: ``gps-eplb`` settings (``docs/eplb.md``).
        seed: seed of every random choice in the run.
        cache: keep generated traces, fitted predictors with their held-out predictions and ILP
            placements on disk and reuse them (``gps.cache``); ``cache=off`` recomputes all.
        cache_dir: where (shared by every job of a sweep and by ``gps-tune`` workers).
        progress: show per-phase progress bars on stderr; ``null``: only outside multirun jobs
            and only on a terminal.
    """

    hardware: ClusterConfig = MISSING
    model: MoEModelSpec = MISSING
    workload: Workload = field(default_factory=Workload)
    engine: EngineConfig = field(default_factory=EngineConfig)
    serving: ServingWorkload = field(default_factory=ServingWorkload)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    trace: Any = MISSING
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    assumptions: AssumptionsConfig = field(default_factory=AssumptionsConfig)
    guideline_map: GuidelineMapConfig = field(default_factory=GuidelineMapConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    eplb: EplbConfig = field(default_factory=EplbConfig)
    seed: int = 0
    cache: bool = True
    cache_dir: str = "reports/cache"
    progress: bool | None = None


def register_configs() -> None:
    """Store the schema as ``gps_schema`` (named first in ``conf/config.yaml``'s defaults)."""
    ConfigStore.instance().store(name="gps_schema", node=GPSConfig)
