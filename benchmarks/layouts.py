"""Mixtral-8x7B on one 8x H100 node: EP8, TP8 and EP4xTP2 priced side by side (uniform routing).

    python benchmarks/layouts.py

Prints tokens/s per layout for the default prefill and decode workloads
(``conf/workload/``), from ``gps.cost.layouts.compare_layouts``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gps.cost.layouts import compare_layouts
from gps.cost.parallel import ParallelConfig
from gps.model import load_model_spec
from gps.profiles import load_cluster_config
from gps.workload import Workload

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    spec, cluster = load_model_spec("mixtral_8x7b"), load_cluster_config("h100_nvlink")
    for phase in ("prefill", "decode"):
        workload = Workload(**yaml.safe_load((CONF / "workload" / f"{phase}.yaml").read_text()))
        out = compare_layouts(ParallelConfig(), spec, cluster, workload)
        print(f"{phase}: {workload}")
        for row in out["compared"]:
            rate = "does not fit" if row["error"] else f"{row['tokens_per_s']:,.0f} tokens/s"
            print(f"  {row['name']:8s} EP{row['ep']} x TP{row['tp']}, {row['attention']} "
                  f"attention: {rate}")  # fmt: skip
        print(f"  fastest: {out['best']}")


if __name__ == "__main__":
    main()
