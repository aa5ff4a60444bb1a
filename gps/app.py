"""The ``gps`` console script: a Hydra app (``conf/config.yaml``).

Prices one serving step of the configured model on the configured cluster and writes the
breakdown as JSON into the run's Hydra output directory.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gps.config import register_configs
from gps.cost.e2e import batch_cost
from gps.cost.memory import MemoryFitError, memory_breakdown
from gps.model import ModelSpecError, spec_from_dict
from gps.profiles import ProfileError, load_cluster
from gps.summary import format_breakdown
from gps.workload import Workload, WorkloadError

USER_ERRORS = (MemoryFitError, ModelSpecError, ProfileError, WorkloadError, KeyError)

log = logging.getLogger(__name__)

register_configs()

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def run(cfg: DictConfig, out_dir: Path) -> Path:
    """Price the configured step; write ``cost_breakdown.json`` to ``out_dir``; return it."""
    cluster = load_cluster(cfg.hardware)
    spec = spec_from_dict(OmegaConf.to_container(cfg.model, resolve=True), origin="model config")
    workload = Workload(**OmegaConf.to_container(cfg.workload, resolve=True))
    memory = memory_breakdown(spec, cluster, workload)
    cost = batch_cost(spec, cluster, workload)
    print(format_breakdown(spec, cluster, workload, cost, memory))
    result = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "memory_bytes_per_gpu": memory,
        "cost": cost.to_dict(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "cost_breakdown.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    return path


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> None:
    try:
        path = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except USER_ERRORS as exc:
        print(f"gps: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"breakdown: {path}")


def main() -> None:
    """Console-script entry point."""
    _main()
