"""The torch-free ``.pt`` reader and writer against real torch (skipped without torch).

``make test`` has no torch: these skip. With torch installed (``make test-record``'s
``.venv-record``: ``.venv-record/bin/python -m pytest tests/test_torch_pickle_torch.py``)
they check both directions: ``torch.load(weights_only=True)`` reads what
``save_torch_file`` / ``write_sglang_dump`` write, and the engine readers read what
``torch.save`` writes in SGLang's and vLLM's layouts.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (make test-record's .venv-record)")

from gps.traces.engine_stats import (  # noqa: E402
    read_engine_stats,
    sglang_stat_dump,
    write_sglang_dump,
)
from gps.traces.torch_pickle import save_torch_file  # noqa: E402


def test_torch_loads_what_we_write(tmp_path):
    counts = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    path = write_sglang_dump(sglang_stat_dump(counts), tmp_path / "stat.pt")
    data = torch.load(path, weights_only=True)
    assert data["logical_count"].dtype == torch.int32
    assert data["logical_count"].tolist() == counts.tolist() and data["rank"] == 0
    nested = save_torch_file(
        {"records": [{"forward_pass_id": 3, "x": np.ones((2, 6))}]}, tmp_path / "n.pt"
    )
    assert torch.load(nested, weights_only=True)["records"][0]["x"].sum().item() == 12


def test_we_read_what_torch_writes(tmp_path):
    mapping = torch.tensor([[0, 1, 2, 3, 0, 1]] * 2)
    torch.save(
        {
            "rank": 0,
            "logical_count": torch.arange(24, dtype=torch.int32).reshape(2, 3, 4),
            "average_utilization_rate_over_window": None,
        },
        tmp_path / "s.pt",
    )
    torch.save(
        {
            "records": [
                {
                    "forward_pass_id": 5,
                    "rank": 0,
                    "gatherer_key": "primary",
                    "global_physical_count": torch.ones(2, 6, dtype=torch.int32),
                }
            ],
            "last_physical_to_logical_map": mapping,
        },
        tmp_path / "p.pt",
    )
    torch.save(
        {
            "expert_load_pass": torch.ones(2, 6, dtype=torch.int32),
            "physical_to_logical_map": mapping,
        },
        tmp_path / "v.pt",
    )
    assert read_engine_stats(tmp_path / "s.pt").counts.sum() == 276
    assert read_engine_stats(tmp_path / "p.pt").counts[0].tolist() == [[2, 2, 1, 1]] * 2
    assert read_engine_stats(tmp_path / "v.pt").engine == "vllm"
