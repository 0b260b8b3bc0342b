"""What retraining says about rank: per-rank mean +- sd over seeds, the empirically sufficient rank r*, and whether
doubling or halving r changed the held-out metric beyond noise (pure statistics, no IO).

- ``r*`` = the smallest rank whose mean is within ``max(pooled SE, floor)`` of the best LoRA mean, where the pooled
  SE is ``sqrt(mean over ranks of sd^2 / n)`` and ``floor`` is 0.3 points of accuracy (0.003) or 0.3% of the best
  loss for language modelling.
- Doubling ``r -> 2r`` *improves* when ``mean(2r) - mean(r) > 2 SE``, ``SE = sqrt((sd_r^2 + sd_2r^2) / n)``
  (signs flipped for a loss). Halving ``r -> r/2`` *keeps* the metric when ``mean(r/2)`` is no worse than
  ``mean(r)`` by more than ``max(SE, floor)``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from lowrank.errors import LowrankError

ACCURACY_FLOOR = 0.003
LOSS_FLOOR_FRACTION = 0.003


@dataclass(frozen=True)
class RankScores:
    """Held-out metric of every seed at one rank (``rank`` 0 stands for full fine-tuning in tables only)."""

    rank: int
    scores: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0


@dataclass(frozen=True)
class Step:
    """The change from rank ``rank`` to ``other`` (double or half): difference of means in the 'better' direction
    (positive = ``other`` is better), its standard error, and the verdict of retraining."""

    rank: int
    other: int
    difference: float
    se: float
    beyond_noise: bool


def _better(metric: str) -> float:
    if metric not in ("accuracy", "loss"):
        raise LowrankError(f"metric must be accuracy or loss, got {metric!r}")
    return 1.0 if metric == "accuracy" else -1.0


def _by_rank(grid: list[RankScores]) -> dict[int, RankScores]:
    if not grid or any(not g.scores for g in grid):
        raise LowrankError("every rank of the grid needs at least one score")
    return {g.rank: g for g in grid}


def floor(metric: str, best: float) -> float:
    return ACCURACY_FLOOR if metric == "accuracy" else LOSS_FLOOR_FRACTION * abs(best)


def pooled_se(grid: list[RankScores]) -> float:
    return math.sqrt(statistics.fmean(g.sd ** 2 / len(g.scores) for g in grid))


def sufficient_rank(grid: list[RankScores], metric: str) -> int:
    """r*: the smallest rank within ``max(pooled SE, floor)`` of the best mean."""
    sign = _better(metric)
    ranks = _by_rank(grid)
    best = max(sign * g.mean for g in grid)
    tolerance = max(pooled_se(grid), floor(metric, best))
    return min(r for r, g in ranks.items() if sign * g.mean >= best - tolerance)


def _se(a: RankScores, b: RankScores) -> float:
    return math.sqrt(a.sd ** 2 / len(a.scores) + b.sd ** 2 / len(b.scores))


def doubling(grid: list[RankScores], metric: str) -> list[Step]:
    """For each rank whose double is in the grid: did doubling improve the metric by more than 2 SE?"""
    sign, ranks = _better(metric), _by_rank(grid)
    steps = []
    for r in sorted(ranks):
        if 2 * r in ranks:
            a, b = ranks[r], ranks[2 * r]
            difference, se = sign * (b.mean - a.mean), _se(a, b)
            steps.append(Step(r, 2 * r, difference, se, difference > 2 * se))
    return steps


def halving(grid: list[RankScores], metric: str) -> list[Step]:
    """For each rank whose half is in the grid: did halving keep the metric (within max(SE, floor))?"""
    sign, ranks = _better(metric), _by_rank(grid)
    best = max(sign * g.mean for g in grid)
    steps = []
    for r in sorted(ranks):
        if r % 2 == 0 and r // 2 in ranks:
            a, b = ranks[r], ranks[r // 2]
            difference, se = sign * (b.mean - a.mean), _se(a, b)
            steps.append(Step(r, r // 2, difference, se, difference >= -max(se, floor(metric, best))))
    return steps
