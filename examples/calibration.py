"""Calibrating the probe verdict against retraining (pure; the cases come from rank grids x seeds, see
rank_verdict_calibration.py beside it, which imports this module).

A case is one trained adapter: its task, rank and seed, the probe's relative held-out differences (doubling gain
``g`` and its standard error, halving cost ``h``, quartering cost ``q`` where the probe had the quartered arm;
:mod:`lowrank.advice.sufficiency.verdict`), and what retraining said
(:mod:`lowrank.advice.ground_truth`): did doubling ``r`` improve the held-out metric beyond 2 SE, did halving keep
it (within ``max(SE, floor)``), did halving lose beyond 2 SE.

The rule has five thresholds: "raise r" when ``g`` is beyond 2 SE and above ``raise_gain`` (``first_gain`` at r = 1,
where there is no halved arm and the doubling gain is the only evidence), or ``h > raise_cost`` (the lower half of
the rank carries real held-out value, so the adapter uses all the rank it has); else "lower r" when ``h <
lower_cost`` and, where measured, ``q < lower_quarter`` (even the top quarter of the rank holds the held-out value,
a margin for a retrained r/2 that does not find the truncation's warm start); else "adequate". :func:`fit` picks
them from a grid to maximize

    score = P(raise | doubling helped) + P(no raise | doubling did not help) + P(lower | halving kept)
            - LOST_PENALTY * P(lower | halving lost beyond 2 SE)

and :func:`leave_one_task_out` checks each task with thresholds fitted on the others. :func:`nested_leave_one_task_out`
also chooses the probe's scoring point (the fraction of the run after which the arms are scored) on the other tasks,
so that neither the thresholds nor the scoring point has seen the task it judges.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np

from lowrank.errors import LowrankError

LOST_PENALTY = 4.0
RAISE_GAINS = (0.001, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02)
RAISE_COSTS = (0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, float("inf"))
LOWER_COSTS = (0.0, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03)
FIRST_GAINS = (0.0,) + RAISE_GAINS
LOWER_QUARTERS = (float("inf"), 0.05, 0.03, 0.02)  # no margin first: a tie keeps the simpler rule
RAISE_SE = 2.0


@dataclass(frozen=True)
class Case:
    task: str
    rank: int
    seed: int
    gain: float | None  # doubling gain, relative held-out loss (None: no doubled arm)
    gain_se: float | None
    cost: float | None  # halving cost, relative (None: r = 1)
    helped: bool | None  # doubling improved beyond 2 SE (None: 2r not retrained)
    kept: bool | None  # halving kept the metric (None: r/2 not retrained)
    lost: bool | None  # halving lost beyond 2 SE
    quarter: float | None = None  # quartering cost, relative (None: not measured, or r <= 2)


@dataclass(frozen=True)
class Thresholds:
    raise_gain: float
    raise_cost: float
    lower_cost: float
    first_gain: float | None = None  # the gain threshold at r = 1 [None: raise_gain]
    lower_quarter: float = float("inf")


def verdict(case: Case, t: Thresholds) -> str:
    raised, lowered = said([case], [t])
    return "raise r" if raised[0, 0] else "lower r" if lowered[0, 0] else "adequate"


@dataclass(frozen=True)
class Rates:
    """The four rates the issue asks for, with their counts."""

    raise_when_helped: tuple[int, int]
    no_raise_when_not: tuple[int, int]
    lower_when_kept: tuple[int, int]
    lower_when_lost: tuple[int, int]

    @staticmethod
    def _share(pair: tuple[int, int]) -> float:
        return pair[0] / pair[1] if pair[1] else 0.0

    def score(self) -> float:
        return (self._share(self.raise_when_helped) + self._share(self.no_raise_when_not)
                + self._share(self.lower_when_kept) - LOST_PENALTY * self._share(self.lower_when_lost))


def rates(cases: list[Case], t: Thresholds) -> Rates:
    judged = [(case, verdict(case, t)) for case in cases]

    def count(select, wanted) -> tuple[int, int]:
        chosen = [v for c, v in judged if select(c)]
        return sum(wanted(v) for v in chosen), len(chosen)

    return Rates(count(lambda c: c.helped is True, lambda v: v == "raise r"),
                 count(lambda c: c.helped is False, lambda v: v != "raise r"),
                 count(lambda c: c.kept is True, lambda v: v == "lower r"),
                 count(lambda c: c.lost is True, lambda v: v == "lower r"))


GRID = [Thresholds(*values) for values in itertools.product(RAISE_GAINS, RAISE_COSTS, LOWER_COSTS, FIRST_GAINS,
                                                            LOWER_QUARTERS)]


def _column(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def said(cases: list[Case], grid: list[Thresholds]) -> tuple[np.ndarray, np.ndarray]:
    """The rule for every threshold set in ``grid`` (rows) and every case (columns): ``(raised, lowered)``, two
    boolean arrays; "adequate" where neither."""
    gain, se = _column(c.gain for c in cases), _column(c.gain_se or 0.0 for c in cases)
    cost, quarter = _column(c.cost for c in cases), _column(c.quarter for c in cases)
    t = {name: _column(getattr(x, name) for x in grid)[:, None]
         for name in ("raise_gain", "raise_cost", "lower_cost", "first_gain", "lower_quarter")}
    bar = np.where(np.isnan(cost), np.where(np.isnan(t["first_gain"]), t["raise_gain"], t["first_gain"]),
                   t["raise_gain"])
    raised = ((gain > bar) & (gain > RAISE_SE * se)) | (cost > t["raise_cost"])
    lowered = ~raised & (cost < t["lower_cost"]) & (np.isnan(quarter) | (quarter < t["lower_quarter"]))
    return raised, lowered


def grid_scores(cases: list[Case], grid: list[Thresholds]) -> np.ndarray:
    """``rates(cases, t).score()`` for every ``t`` in ``grid`` at once."""
    raised, lowered = said(cases, grid)

    def share(truth: list[bool], verdicts: np.ndarray) -> np.ndarray:
        chosen = np.array(truth, dtype=bool)
        return verdicts[:, chosen].mean(axis=1) if chosen.any() else np.zeros(len(grid))

    return (share([c.helped is True for c in cases], raised) + share([c.helped is False for c in cases], ~raised)
            + share([c.kept is True for c in cases], lowered)
            - LOST_PENALTY * share([c.lost is True for c in cases], lowered))


def fit(cases: list[Case]) -> Thresholds:
    """The thresholds of the grid with the best score on ``cases`` (ties: the earliest in grid order)."""
    if not cases:
        raise LowrankError("calibration needs cases")
    return GRID[int(np.argmax(grid_scores(cases, GRID)))]


def confusion(cases: list[Case], t: Thresholds) -> dict[str, Counter]:
    """``{truth: Counter(verdict)}``, truth "doubling helps", "halving keeps" (doubling does not help), "halving
    loses" (beyond 2 SE; doubling does not help) or "neither"; cases with no retrained neighbour are left out."""
    table: dict[str, Counter] = {}
    for case in cases:
        if case.helped:
            truth = "doubling helps"
        elif case.kept:
            truth = "halving keeps"
        elif case.lost:
            truth = "halving loses"
        elif case.helped is False or case.kept is False:
            truth = "neither"
        else:
            continue
        table.setdefault(truth, Counter())[verdict(case, t)] += 1
    return table


def leave_one_task_out(cases: list[Case]) -> dict[str, tuple[Thresholds, list[Case]]]:
    """For each task: the thresholds fitted on the other tasks, and this task's cases (judge them with those)."""
    tasks = sorted({c.task for c in cases})
    return {task: (fit([c for c in cases if c.task != task]), [c for c in cases if c.task == task])
            for task in tasks if len(tasks) > 1}


def nested_leave_one_task_out(cases_at: dict[str, list[Case]]) -> dict[str, tuple[str, Thresholds, list[Case]]]:
    """``cases_at``: the same adapters' cases at each scoring point (``{fraction: cases}``). For each task: the
    scoring point and thresholds with the best score on the other tasks, and this task's cases at that point."""
    tasks = sorted({c.task for cases in cases_at.values() for c in cases})
    chosen = {}
    for task in tasks if len(tasks) > 1 else []:
        fitted = {f: fit([c for c in cases if c.task != task]) for f, cases in cases_at.items()}
        best = max(sorted(fitted), key=lambda f: rates([c for c in cases_at[f] if c.task != task], fitted[f]).score())
        chosen[task] = (best, fitted[best], [c for c in cases_at[best] if c.task == task])
    return chosen
