"""Sparse constraint rows of a MILP, built block by block, and its solve call (HiGHS).

Shared by the placement ILPs (``ilp.py``, ``ilp_two_stage.py``). ``ConstraintRows.add`` appends
``count`` rows ``low <= sum v * x[c_idx] <= high``; ``r_idx`` (same shape as ``c_idx``) numbers
each coefficient's row within the block, from 0. ``solve`` calls HiGHS through ``highspy``
(its official binding) rather than ``scipy.optimize.milp``, which bundles the same solver but
takes no initial solution: the placement ILPs warm-start it from their heuristic.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import highspy
import numpy as np
from scipy import sparse


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

    def matrix(self, num_vars: int) -> sparse.csr_array:
        """``[rows, num_vars]`` coefficients (duplicates summed)."""
        return sparse.csr_array(
            (np.concatenate(self._vals), (np.concatenate(self._rows), np.concatenate(self._cols))),
            shape=(self.count, num_vars),
        )

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``([rows], [rows])`` lower and upper bounds of the rows."""
        return np.concatenate(self._lo), np.concatenate(self._hi)


@dataclass(frozen=True)
class MilpResult:
    """What ``solve`` returns (the fields of ``scipy.optimize.milp``'s result that we read).

    Attributes:
        x: best solution found, or ``None``.
        status: ``0`` optimal (within ``mip_gap``), ``1`` time limit, ``2`` infeasible,
            ``3`` unbounded, ``4`` other (scipy's codes).
        message: HiGHS's model status, in words.
        mip_gap: HiGHS's relative gap of ``x`` (``inf`` without a solution).
        mip_dual_bound: HiGHS's dual bound on the objective (``-inf`` if none).
        start_passed: whether HiGHS took ``start`` (``setSolution``); it checks the point's
            feasibility itself and ignores an infeasible one.
    """

    x: np.ndarray | None
    status: int
    message: str
    mip_gap: float
    mip_dual_bound: float
    start_passed: bool = False


_STATUS = {"kOptimal": 0, "kTimeLimit": 1, "kInfeasible": 2, "kUnbounded": 3,
           "kUnboundedOrInfeasible": 3}  # fmt: skip


def _highs() -> highspy.Highs:
    """A silent ``Highs`` instance (the library prints a banner at its first construction, on
    the C side: ``_quiet_banner`` swallows it once, at import)."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


def _quiet_banner() -> None:
    """Construct one ``Highs`` with file descriptor 1 pointed at ``/dev/null``: HiGHS prints its
    banner once per process, from C++, where ``contextlib.redirect_stdout`` cannot reach."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no standard output to protect
        highspy.Highs()
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_quiet_banner()


def solve(
    cost: np.ndarray,
    rows: ConstraintRows,
    integrality: np.ndarray,
    lb: np.ndarray,
    ub: np.ndarray,
    time_limit_s: float,
    mip_gap: float,
    start: np.ndarray | None = None,
) -> MilpResult:
    """Minimise ``cost @ x`` over the rows (HiGHS through ``highspy``), stopped at
    ``time_limit_s`` seconds or relative gap ``mip_gap``.

    ``start`` (``[num_vars]``, a feasible point, e.g. a heuristic's placement) is handed to
    HiGHS as its first incumbent (a warm start): its branch and bound prunes against it from
    the first node, and the answer is never worse than a feasible ``start``.
    """
    n = cost.size
    a = rows.matrix(n).tocsc()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, a.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, lb, ub
    lp.row_lower_, lp.row_upper_ = rows.bounds()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = a.indptr, a.indices, a.data
    kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
    lp.integrality_ = [kinds[int(v)] for v in integrality]
    h = _highs()
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", float(mip_gap))
    h.passModel(lp)
    passed = False
    if start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = np.asarray(start, dtype=float).tolist()
        sol.value_valid = True
        passed = h.setSolution(sol) == highspy.HighsStatus.kOk
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    has_x = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    return MilpResult(
        x=np.asarray(h.getSolution().col_value) if has_x else None,
        status=_STATUS.get(status.name, 4),
        message=h.modelStatusToString(status),
        mip_gap=float(info.mip_gap) if has_x else float("inf"),
        mip_dual_bound=float(info.mip_dual_bound),
        start_passed=passed,
    )


def dual_bound(res: MilpResult, scale: float, offset: float = 0.0) -> float | None:
    """HiGHS's dual bound in the caller's units (``bound * scale + offset``); ``None`` if
    there is none."""
    bound = res.mip_dual_bound
    return float(bound) * scale + offset if np.isfinite(bound) else None


def assignment(res: MilpResult, count: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """The one-hot block of the first ``count`` variables, reshaped to ``shape``, as indices
    (argmax over the last axis); ``None`` when HiGHS returned no solution."""
    if res.x is None:
        return None
    return np.argmax(res.x[:count].reshape(shape), axis=-1)


def relative_gap(objective: float, bound: float | None) -> float:
    """``(objective - bound) / objective`` (0 for a zero objective, ``nan`` without a bound)."""
    if bound is None:
        return float("nan")
    return max(objective - bound, 0.0) / objective if objective > 0 else 0.0


def better_of(milp_obj: float, heuristic_obj: float) -> tuple[str, str, bool]:
    """``(method, message suffix, take the heuristic)`` when the MILP stopped at its time
    limit: its incumbent (``inf`` if none) is kept only if strictly better than the heuristic's
    (a warm-started MILP that found nothing better returns the heuristic, labelled so)."""
    if milp_obj < heuristic_obj:
        return (
            "milp-timelimit",
            f"; MILP incumbent {milp_obj:.6g} < heuristic {heuristic_obj:.6g}",
            False,
        )
    return (
        "heuristic-fallback",
        f"; heuristic {heuristic_obj:.6g} <= MILP incumbent {milp_obj:.6g}",
        True,
    )
