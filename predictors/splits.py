"""How a Token-to-Expert prediction fared, per expert: the true copies it named (hits), the ones
it missed, and the histogram of its guesses.

Pricing takes these per-expert loads through each strategy's plans (``gps.advisor.strategies``):
the guesses' histogram is what the strategy plans and prefetches from, the hits and misses what
the MoE-GPS paper's skip-the-scatter assumption prices (``gps.advisor.assumptions``).

Shapes: ``T`` tokens per batch, ``N`` batches, ``L`` MoE layers, ``k`` top-k, ``E`` experts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class CopySplit(NamedTuple):
    """Token copies per (batch, layer, expert), split by how the prediction fared.

    Attributes:
        hit: ``[N, L, E]`` true copies whose expert the prediction named for that token.
        miss: ``[N, L, E]`` true copies it did not name (``hit + miss`` = the true load).
        guessed: ``[N, L, E]`` predicted copies (the histogram of the guesses; ``hit`` plus
            the wrong guesses, which the plan duplicates and prefetches for in vain).
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
