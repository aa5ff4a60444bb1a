"""Phase timings (``results.json`` ``timings_s``) and the console progress display.

Progress goes to stderr through ``tqdm``. ``progress=None`` (the config default) shows it only
on a terminal and never inside a Hydra multirun job (a sweep's jobs would interleave their
bars); ``True`` forces it on, ``False`` off.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from tqdm import tqdm

T = TypeVar("T")


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def show_progress(setting: bool | None) -> bool:
    """``setting`` resolved: ``None`` -> on a terminal and not in a multirun job."""
    if setting is not None:
        return bool(setting)
    return sys.stderr.isatty() and not in_multirun()


class Phases:
    """Wall seconds per phase, and a progress display of each.

    ``timings`` maps phase names to seconds; nested dicts group items of one phase
    (``phases.timings["strategies"]["eplb_every_4"]``).
    """

    def __init__(self, show: bool) -> None:
        self.show = show
        self.timings: dict = {}
        self._start = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as ``timings[name]`` (seconds, added to any earlier time)."""
        if self.show:
            tqdm.write(f"gps: {name} ...", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def items(self, phase: str, items: Iterable[tuple[str, T]], total: int) -> Iterator[T]:
        """Yield each ``(label, item)``'s item under a progress bar; record the wall seconds
        from one item to the next as ``timings[phase][label]``."""
        group = self.timings.setdefault(phase, {})
        bar = tqdm(total=total, desc=phase, unit="step", file=sys.stderr, leave=False,
                   disable=not self.show)  # fmt: skip
        try:
            for label, item in items:
                bar.set_postfix_str(label, refresh=False)
                t0 = time.perf_counter()
                yield item
                group[label] = group.get(label, 0.0) + time.perf_counter() - t0
                bar.update()
        finally:
            bar.close()

    def total(self) -> float:
        """Seconds since this object was made."""
        return time.perf_counter() - self._start
