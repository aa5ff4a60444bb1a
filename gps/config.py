"""Hydra structured configs: the schema every ``conf/`` file is checked against.

Registering the schema in Hydra's ConfigStore makes a typo in a YAML file or an override
(``workload.batch_sze=8``, ``strategy.replan_intervall=4``) fail at start-up with Hydra's own
error. Config groups (``conf/<group>/*.yaml``): ``hardware``, ``model``, ``workload``,
``trace``, ``predictor``, ``strategy``, ``report``, ``experiment``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from gps.model import MoEModelSpec
from gps.profiles import ClusterConfig
from gps.workload import Workload


@dataclass
class EvaluationConfig:
    """How the trace becomes training history and held-out batches.

    Attributes:
        trace_path: a token-trace ``.npz`` to use instead of the ``trace`` preset (``None``:
            generate the preset). Its ``L``/``E``/``k`` must match the model.
        train_batches: batches of training history (predictor fitting, EPLB's first window).
        test_batches: held-out batches every strategy is priced on.
        horizons: load-series runs: forecast horizons in steps.
        train_fraction: load-series runs: leading fraction of the steps the predictors fit on.
    """

    trace_path: str | None = None
    train_batches: int = 16
    test_batches: int = 8
    horizons: list[int] = field(default_factory=lambda: [1, 10, 100, 1000, 2000])
    train_fraction: float = 0.5


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
        replan_interval: EPLB-style periodic rebalancing re-plans every this many batches.
        history_window: batches of history EPLB plans from.
        capacity_factors: capacity-aware drop/reroute at these factors ``gamma``.
        ilp: include the MoETuner ILP placement.
        ilp_time_limit_s: seconds HiGHS may spend on the ILP.
        ilp_mip_gap: relative MIP gap at which HiGHS stops.
        migration_overlap: fraction of attention time that hides replica migration, [0, 1].
        split: how a duplicated expert's tokens split over its replicas: ``even``/``locality``.
    """

    replica_slots_per_gpu: int = 1
    replan_interval: int = 4
    history_window: int = 4
    capacity_factors: list[float] = field(default_factory=lambda: [1.0, 1.25])
    ilp: bool = True
    ilp_time_limit_s: float = 10.0
    ilp_mip_gap: float = 1e-4
    migration_overlap: float = 1.0
    split: str = "even"


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
    """

    name: str = ""
    claim: str = ""
    metric: str = ""
    why: str = ""


@dataclass
class GPSConfig:
    """Top-level config of the ``gps`` app (``conf/config.yaml``).

    Attributes:
        hardware: cluster composed from profiles (``conf/hardware/``).
        model: MoE architecture (``conf/model/``).
        workload: one serving step (``conf/workload/``).
        trace: synthetic trace preset (``conf/trace/``): a ``_target_`` config dataclass
            (``SyntheticTraceConfig`` or ``LoadSeriesConfig``) checked when instantiated at the
            start of the run (an unknown field fails there, before any work).
        predictor: predictors to compare (``conf/predictor/``).
        strategy: balancing knobs (``conf/strategy/``).
        report: report contents (``conf/report/``).
        evaluation: train/test batches of the trace.
        paper: set by ``experiment`` presets; empty otherwise.
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
    trace: Any = MISSING
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)
    seed: int = 0
    cache: bool = True
    cache_dir: str = "reports/cache"
    progress: bool | None = None


def register_configs() -> None:
    """Store the schema as ``gps_schema`` (named first in ``conf/config.yaml``'s defaults)."""
    ConfigStore.instance().store(name="gps_schema", node=GPSConfig)
