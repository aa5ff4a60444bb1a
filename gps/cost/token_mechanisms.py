"""What a per-token (Token-to-Expert) prediction buys beyond its histogram, as priced formulas.

A Token-to-Expert predictor runs before attention and names every token's experts. Three
mechanisms turn that knowledge into time (formulas: ``docs/cost_model.md``, "Token-level
mechanisms"); each is switchable in ``strategy`` (``direct_dispatch``, ``replica_choice``,
``prefetch``):

* **direct dispatch**: the copies of correctly predicted (token, expert) pairs are sent while
  attention runs; only the mispredicted copies pay a corrective all-to-all after the real gate
  (``direct_dispatch_s``).
* **token-level replica choice**: a correctly predicted copy of a replicated expert goes to the
  replica on its own GPU, else its node (the locality split of ``gps.simulate``); the assignment
  is computed from the prediction ahead of the gate. Mispredicted copies use the run's
  ``strategy.split``. It acts through the traffic matrices passed to ``direct_dispatch_s``.
* **prefetch**: when only a fraction of every GPU's expert slots is resident in HBM
  (``strategy.resident_experts < 1``), the other experts' weights cross ``fetch link``; a
  Token-to-Expert strategy brings in only the non-resident experts it predicts busy (during
  attention) and fetches the busy ones it missed after the gate; every other strategy
  prefetches all non-resident experts of its plan (``fetch_bytes``, ``expert_fetch_s``).

Accuracy enters continuously: the hit fraction of the copies sets how much dispatch traffic
leaves the critical path and how many weights are fetched on demand.

Shapes: ``T`` tokens per batch, ``N`` batches, ``L`` MoE layers, ``k`` top-k, ``E`` experts,
``G`` GPUs, ``R`` slots per GPU. Units: bytes, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gps.cost.comm import alltoall_time
from gps.hardware import Cluster, LinkProfile


@dataclass(frozen=True)
class Mechanisms:
    """The ``strategy`` switches of the token-level mechanisms (``gps/config.py``).

    Attributes:
        direct_dispatch: price Token-to-Expert dispatch with ``direct_dispatch_s``.
        direct_dispatch_overlap: fraction of attention hiding the early dispatch, [0, 1].
        replica_choice: correctly predicted copies take the locality split.
        prefetch: Token-to-Expert prefetches only predicted-busy non-resident experts.
        resident_experts: fraction of each GPU's slots resident in HBM, [0, 1].
        fetch_link: link non-resident weights cross (needed when ``resident_experts < 1``).
    """

    direct_dispatch: bool = True
    direct_dispatch_overlap: float = 1.0
    replica_choice: bool = True
    prefetch: bool = True
    resident_experts: float = 1.0
    fetch_link: LinkProfile | None = None

    def __post_init__(self) -> None:
        for key in ("direct_dispatch_overlap", "resident_experts"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"strategy.{key}={getattr(self, key)}: must be in [0, 1]")
        if self.resident_experts < 1.0 and self.fetch_link is None:
            raise ValueError("strategy.resident_experts < 1 needs strategy.expert_fetch_link")


NONE = Mechanisms(direct_dispatch=False, replica_choice=False, prefetch=False)


class CopySplit(NamedTuple):
    """Token copies per (batch, layer, expert), split by how the prediction fared.

    Attributes:
        hit: ``[N, L, E]`` true copies whose expert the prediction named for that token.
        miss: ``[N, L, E]`` true copies it did not name (``hit + miss`` = the true load).
        guessed: ``[N, L, E]`` predicted copies (the histogram of the guesses; ``hit`` plus
            the wrong guesses, which are sent early and wasted under direct dispatch).
    """

    hit: np.ndarray
    miss: np.ndarray
    guessed: np.ndarray


def copy_hits(guess: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``[T, L, k]`` bool: true copy ``(t, l, j)`` is named anywhere in ``guess[t, l, :]``.

    Dropped copies (id ``< 0``) are never hits. ``guess`` and ``true`` are ``[T, L, k]`` ints.
    """
    g, t = np.asarray(guess), np.asarray(true)
    if g.shape != t.shape or g.ndim != 3:
        raise ValueError(f"guess {g.shape} / true {t.shape}: expected equal [T, L, k] shapes")
    return (t[..., :, None] == g[..., None, :]).any(axis=-1) & (t >= 0)


def split_copies(
    guess: np.ndarray, true: np.ndarray, num_experts: int, tokens_per_batch: int
) -> CopySplit:
    """Per-batch ``CopySplit`` of a held-out trace cut into batches of ``tokens_per_batch``.

    Args:
        guess: ``[N*T, L, k]`` predicted expert ids.
        true: ``[N*T, L, k]`` true expert ids (``-1`` = dropped, counted nowhere).
        num_experts: ``E``.
        tokens_per_batch: ``T``.
    """
    t_all, nl, _ = np.shape(true)
    if tokens_per_batch < 1 or t_all % tokens_per_batch:
        raise ValueError(f"tokens_per_batch={tokens_per_batch}: must divide {t_all} tokens")
    n = t_all // tokens_per_batch
    hit = copy_hits(guess, true)
    batch = (np.arange(t_all) // tokens_per_batch)[:, None, None]
    layer = np.arange(nl)[None, :, None]

    def count(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        key = (batch * nl + layer) * num_experts + np.asarray(ids, dtype=np.int64)
        sel = mask & (np.asarray(ids) >= 0)
        out = np.bincount(key[sel], minlength=n * nl * num_experts).astype(float)
        return out.reshape(n, nl, num_experts)

    every = np.ones(np.shape(true), dtype=bool)
    hits = count(true, hit)
    return CopySplit(hits, count(true, every) - hits, count(guess, every))


def expected_split(true_loads: np.ndarray, wrong: np.ndarray, accuracy: float) -> CopySplit:
    """``CopySplit`` in expectation for a predictor of top-k hit rate ``accuracy`` that replaces
    each missed copy by a wrong guess: ``hit = a x``, ``miss = (1 - a) x``,
    ``guessed = a x + (1 - a) wrong``.

    Args:
        true_loads: ``[N, L, E]`` true copies per expert.
        wrong: ``[N, L, E]`` where the guesses go when every copy is missed (the histogram of an
            accuracy-0 what-if predictor); same total as ``true_loads``.
        accuracy: ``a`` in [0, 1].
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy={accuracy}: must be in [0, 1]")
    x, w = np.asarray(true_loads, dtype=float), np.asarray(wrong, dtype=float)
    return CopySplit(accuracy * x, (1.0 - accuracy) * x, accuracy * x + (1.0 - accuracy) * w)


def direct_dispatch_s(
    early_traffic: np.ndarray,
    late_traffic: np.ndarray,
    attention_s: float | np.ndarray,
    cluster: Cluster,
    overlap: float = 1.0,
) -> np.ndarray:
    """Exposed dispatch seconds ``[..., L]`` under direct dispatch.

    ``t = max(0, A2A(early) - overlap * attention) + A2A(late)``: the predicted copies
    (``early_traffic [..., L, G, G]`` bytes, wrong guesses included) are sent while attention
    runs and show only where they outlast ``overlap`` of it; the mispredicted copies
    (``late_traffic``) pay a corrective all-to-all after the gate. ``A2A`` is
    ``gps.cost.comm.alltoall_time(...).total_s``.
    """
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"strategy.direct_dispatch_overlap={overlap}: must be in [0, 1]")
    early = alltoall_time(early_traffic, cluster).total_s
    late = alltoall_time(late_traffic, cluster).total_s
    return np.maximum(early - overlap * np.asarray(attention_s, dtype=float), 0.0) + late


def resident_slots(num_slots: int, resident_fraction: float) -> np.ndarray:
    """``[R]`` bool: the first ``round(resident_fraction * R)`` slots of every GPU keep their
    expert's weights in HBM (home slots come first in a plan); the rest live in host memory."""
    if not 0.0 <= resident_fraction <= 1.0:
        raise ValueError(f"strategy.resident_experts={resident_fraction}: must be in [0, 1]")
    return np.arange(num_slots) < round(resident_fraction * num_slots)


def fetch_bytes(
    busy: np.ndarray,
    prefetched: np.ndarray,
    resident: np.ndarray,
    expert_bytes: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(early, on_demand)`` bytes ``[..., L, G]`` each GPU fetches for non-resident slots.

    Args:
        busy: ``[..., L, G, R]`` bool, the slot processes tokens in this batch (the truth).
        prefetched: ``[..., L, G, R]`` bool, the strategy brings the slot in during attention
            (Token-to-Expert: predicted busy; others: every slot its plan assigns).
        resident: ``[R]`` bool from ``resident_slots``.
        expert_bytes: bytes of one expert's weights.

    ``early`` counts prefetched non-resident slots, ``on_demand`` the busy non-resident slots
    not prefetched (fetched after the gate).
    """
    away = ~np.asarray(resident, dtype=bool)
    pre = np.asarray(prefetched, dtype=bool) & away
    late = np.asarray(busy, dtype=bool) & away & ~pre
    return pre.sum(axis=-1) * expert_bytes, late.sum(axis=-1) * expert_bytes


def expert_fetch_s(
    early_bytes: np.ndarray,
    on_demand_bytes: np.ndarray,
    attention_s: float | np.ndarray,
    link: LinkProfile,
    overlap: float = 1.0,
) -> np.ndarray:
    """Exposed weight-fetch seconds ``[..., L]``: the slowest GPU's
    ``max(0, t(early) - overlap * attention) + t(on_demand)`` with
    ``t(b) = latency + b / link.gpu_bandwidth`` (0 for no bytes); inputs ``[..., L, G]``."""
    early = np.asarray(early_bytes, dtype=float)
    late = np.asarray(on_demand_bytes, dtype=float)
    bw, lat = link.gpu_bandwidth, link.latency_s
    t_early = np.where(early > 0, lat + early / bw, 0.0)
    t_late = np.where(late > 0, lat + late / bw, 0.0)
    attn = np.asarray(attention_s, dtype=float)[..., None]
    return (np.maximum(t_early - overlap * attn, 0.0) + t_late).max(axis=-1)
