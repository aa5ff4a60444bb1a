"""Hydra structured configs: the schema every ``conf/`` file is checked against.

Registering the schema in Hydra's ConfigStore makes a typo in a YAML file or an override
(``workload.batch_sze=8``) fail at start-up with Hydra's own error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from gps.model import MoEModelSpec
from gps.profiles import ClusterConfig
from gps.workload import Workload


@dataclass
class GPSConfig:
    """Top-level config of the ``gps`` app (``conf/config.yaml``).

    Attributes:
        hardware: cluster composed from profiles (``conf/hardware/``).
        model: MoE architecture (``conf/model/``).
        workload: one serving step (``conf/workload/``).
        seed: seed of every random choice in the run.
    """

    hardware: ClusterConfig = MISSING
    model: MoEModelSpec = MISSING
    workload: Workload = field(default_factory=Workload)
    seed: int = 0


def register_configs() -> None:
    """Store the schema as ``gps_schema`` (named first in ``conf/config.yaml``'s defaults)."""
    ConfigStore.instance().store(name="gps_schema", node=GPSConfig)
