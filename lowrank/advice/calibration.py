"""Calibrating the sufficiency verdicts against retraining (pure; the sweeps of :mod:`lowrank.advice.sweep` give
the cases).

A case is one trained adapter: its task, rank and verdict statistic (the signal-to-noise of
:mod:`lowrank.advice.sufficiency`), and what retraining said about its rank: did
doubling ``r`` improve the held-out metric beyond 2 SE (``should_raise``), did halving keep it (``may_lower``).
Thresholds are chosen so that no calibration case that should be raised is called adequate or lower, with a
safety margin:

    RAISE_ABOVE = margin * min{statistic : should_raise}
    LOWER_BELOW = margin * min{statistic : not may_lower}

and checked task by task (leave one task out: thresholds from the other tasks, verdicts on the held-out one).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lowrank.advice.sufficiency import judge
from lowrank.errors import LowrankError

MARGIN = 0.8


@dataclass(frozen=True)
class Case:
    task: str
    rank: int
    seed: int
    statistic: float
    should_raise: bool | None  # None: 2r was not trained
    may_lower: bool | None  # None: r/2 was not trained


@dataclass(frozen=True)
class Thresholds:
    raise_above: float
    lower_below: float


def fit(cases: list[Case], margin: float = MARGIN) -> Thresholds:
    """Thresholds that call every ``should_raise`` case "raise r" and no ``not may_lower`` case "lower r"."""
    raise_values = [c.statistic for c in cases if c.should_raise]
    keep_values = [c.statistic for c in cases if c.may_lower is False]
    if not raise_values or not keep_values:
        raise LowrankError("calibration needs cases where doubling helped and cases where halving hurt")
    return Thresholds(margin * min(raise_values), margin * min(keep_values))


def verdict(case: Case, thresholds: Thresholds) -> str:
    return judge(case.statistic, thresholds.raise_above, thresholds.lower_below)


def confusion(cases: list[Case], thresholds: Thresholds) -> dict[str, Counter]:
    """``{truth: Counter(verdict)}`` with truth "doubling helps", "halving keeps" (doubling does not help) or
    "neither"; cases with no trained neighbour on the side that matters are left out."""
    table: dict[str, Counter] = {}
    for case in cases:
        if case.should_raise:
            truth = "doubling helps"
        elif case.may_lower:
            truth = "halving keeps"
        elif case.should_raise is False and case.may_lower is False:
            truth = "neither"
        else:
            continue
        table.setdefault(truth, Counter())[verdict(case, thresholds)] += 1
    return table


def leave_one_task_out(cases: list[Case], margin: float = MARGIN) -> dict[str, tuple[Thresholds, dict[str, Counter]]]:
    """For each task: thresholds fitted on the other tasks and the confusion on this one."""
    result = {}
    for task in sorted({c.task for c in cases}):
        others = [c for c in cases if c.task != task]
        try:
            thresholds = fit(others, margin)
        except LowrankError:
            continue
        result[task] = (thresholds, confusion([c for c in cases if c.task == task], thresholds))
    return result
