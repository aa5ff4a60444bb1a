"""Test-session setup and shared fixtures.

* The on-disk cache (``gps.cache``) goes to a fresh temporary folder, so tests neither read nor
  fill the repository's ``reports/cache`` (set before ``gps`` is imported).
* The real routing in ``../shared/traces``, converted on the fly; tests that need it skip with
  the missing path as the reason when ``../shared`` is absent.
"""

from __future__ import annotations

import os
import tempfile

os.environ["GPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="gps-test-cache-")

from pathlib import Path

import pytest

from gps.traces import TokenTrace, save_trace
from gps.traces.shared import mixtral_vllm_trace


@pytest.fixture(scope="session")
def mixtral_trace() -> TokenTrace:
    """Mixtral-8x7B vLLM routing (577 tokens) from ``../shared/traces/mixtral_8x7b_vllm``."""
    try:
        return mixtral_vllm_trace()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def mixtral_trace_path(mixtral_trace: TokenTrace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same trace written to a temporary ``.npz``."""
    return save_trace(tmp_path_factory.mktemp("shared") / "mixtral_vllm_routing.npz", mixtral_trace)
