"""The one-line machine description every benchmark prints beside its figures."""

from __future__ import annotations

import os
import platform

import numpy as np


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe(*extra: str) -> str:
    """``machine: <arch> <CPU>, <n> cores, Python <v>, numpy <v>[, extra...]``."""
    parts = [f"{platform.machine()} {cpu_model()}", f"{os.cpu_count()} cores",
             f"Python {platform.python_version()}", f"numpy {np.__version__}", *extra]  # fmt: skip
    return "machine: " + ", ".join(parts)
