"""Sparse constraint rows for ``scipy.optimize.milp``, built block by block, and its solve call.

Shared by the placement ILPs (``ilp.py``, ``ilp_two_stage.py``). ``ConstraintRows.add`` appends
``count`` rows ``low <= sum v * x[c_idx] <= high``; ``r_idx`` (same shape as ``c_idx``) numbers
each coefficient's row within the block, from 0.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp


class ConstraintRows:
    """Rows of a sparse constraint matrix, appended block by block."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._lo: list[np.ndarray] = []
        self._hi: list[np.ndarray] = []
        self.count = 0

    def add(self, r_idx, c_idx, v, low, high, count: int) -> None:
        """``count`` rows: coefficient ``v`` (broadcast to ``c_idx``) on variable ``c_idx`` in
        block row ``r_idx``; bounds ``low`` / ``high`` (scalars or ``[count]``)."""
        self._rows.append(np.asarray(r_idx).ravel() + self.count)
        self._cols.append(np.asarray(c_idx).ravel())
        self._vals.append(np.broadcast_to(np.asarray(v, dtype=float), np.shape(c_idx)).ravel())
        self._lo.append(np.broadcast_to(np.asarray(low, dtype=float), (count,)).ravel())
        self._hi.append(np.broadcast_to(np.asarray(high, dtype=float), (count,)).ravel())
        self.count += count

    def constraint(self, num_vars: int) -> LinearConstraint:
        """The rows as one ``LinearConstraint`` over ``num_vars`` variables."""
        a = sparse.csr_array(
            (np.concatenate(self._vals), (np.concatenate(self._rows), np.concatenate(self._cols))),
            shape=(self.count, num_vars),
        )
        return LinearConstraint(a, np.concatenate(self._lo), np.concatenate(self._hi))


def solve(
    cost: np.ndarray,
    rows: ConstraintRows,
    integrality: np.ndarray,
    lb: np.ndarray,
    ub: np.ndarray,
    time_limit_s: float,
    mip_gap: float,
) -> OptimizeResult:
    """``milp`` (HiGHS) stopped at ``time_limit_s`` seconds or relative gap ``mip_gap``."""
    return milp(
        cost,
        constraints=rows.constraint(cost.size),
        integrality=integrality,
        bounds=Bounds(lb, ub),
        options={"time_limit": float(time_limit_s), "mip_rel_gap": float(mip_gap), "disp": False},
    )


def dual_bound(res: OptimizeResult, scale: float, offset: float = 0.0) -> float | None:
    """HiGHS's dual bound in the caller's units (``bound * scale + offset``); ``None`` if
    there is none."""
    bound = getattr(res, "mip_dual_bound", None)
    return None if bound is None or not np.isfinite(bound) else float(bound) * scale + offset


def assignment(res: OptimizeResult, count: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """The one-hot block of the first ``count`` variables, reshaped to ``shape``, as indices
    (argmax over the last axis); ``None`` when HiGHS returned no solution."""
    if res.x is None:
        return None
    return np.argmax(res.x[:count].reshape(shape), axis=-1)


def better_of(milp_obj: float, heuristic_obj: float) -> tuple[str, str, bool]:
    """``(method, message suffix, take the heuristic)`` when the MILP stopped at its time
    limit: its incumbent (``inf`` if none) is kept unless the heuristic's objective is lower."""
    if milp_obj <= heuristic_obj:
        return (
            "milp-timelimit",
            f"; MILP incumbent {milp_obj:.6g} <= heuristic {heuristic_obj:.6g}",
            False,
        )
    return (
        "heuristic-fallback",
        f"; heuristic {heuristic_obj:.6g} < MILP incumbent {milp_obj:.6g}",
        True,
    )
