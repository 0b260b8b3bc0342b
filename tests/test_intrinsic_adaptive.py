"""The adaptive d search: which grid points are decided, and that skipping them leaves d90 and its interval."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowrank.intrinsic.adaptive import first_round, midpoint, pass_fractions, undecided
from lowrank.intrinsic.search import SearchConfig, measure_intrinsic_dimension
from lowrank.intrinsic.training import RunBudget

pytestmark = pytest.mark.usefixtures("one_thread")


def test_first_round_takes_every_other_point_from_the_top():
    assert first_round((50, 105, 219, 457, 956, 2000)) == [105, 457, 2000]
    assert first_round((4, 8, 16, 32, 64)) == [4, 16, 64]
    assert first_round((7,)) == [7] and first_round((3, 48)) == [48]


def test_pass_fractions_exact_cases():
    scores = {10: [0.1, 0.2, 0.3], 20: [0.95, 0.96, 0.97], 30: [0.5, 1.0, 1.0]}
    passes = pass_fractions(scores, [1.0, 1.0], 1.0, 0.9, 400, 0)
    assert passes[10] == 0.0 and passes[20] == 1.0
    assert 0.2 < passes[30] < 0.4  # passes only when the 0.5 is not drawn (8/27 of the time)
    assert pass_fractions({5: [0.8]}, [], 1.0, 0.9, 10, 0) == {5: 0.0}  # a global baseline is not resampled
    assert pass_fractions({5: [0.9]}, [], 1.0, 0.9, 10, 0) == {5: 1.0}


def test_undecided_points_lie_between_the_decided_ones():
    grid = (10, 20, 30, 40, 50, 60)
    assert undecided(grid, {20: 0.0, 40: 0.5, 60: 1.0}) == [30, 50]
    assert undecided(grid, {20: 0.0, 40: 1.0, 60: 1.0}) == [30]
    assert undecided(grid, {20: 1.0, 40: 1.0, 60: 1.0}) == [10]
    assert undecided(grid, {20: 0.0, 40: 0.0, 60: 0.0}) == []  # never reached: nothing above the top to train
    assert undecided(grid, {20: 0.0, 30: 0.0, 40: 1.0, 60: 1.0}) == []
    assert undecided(grid, {20: 0.3, 40: 0.6, 60: 0.9}) == [10, 30, 50]  # nothing decided: train everything
    assert midpoint(100, 400) == 200 and midpoint(4, 5) is None


class Step(nn.Module):
    """theta in R^D; the score it earns is a fixed function of the subspace dimension (read from theta's size)."""

    def __init__(self, D: int, seed: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(D))
        self.seed = seed

    def forward(self) -> torch.Tensor:
        return self.theta


class StepTask:
    """Score of a run: a logistic curve in log d plus seeded noise; the baseline (direct training) scores 1."""

    metric = "score"

    def train_and_score(self, module, config, seed, progress, label) -> float:
        d = getattr(module, "d", None)
        if d is None:
            return 1.0
        noise = torch.randn(1, generator=torch.Generator().manual_seed(seed * 7919 + d)).item()
        return float(1 / (1 + (60 / d) ** 3) + 0.03 * noise)


def test_adaptive_search_keeps_d90_and_interval_with_fewer_runs():
    grid = (10, 15, 22, 33, 50, 75, 110, 165, 250)
    results = {}
    for adaptive in (False, True):
        config = SearchConfig(dims=grid, train=RunBudget(steps=1), baseline_train=RunBudget(steps=1),
                              projection="sparse", seeds=3, bootstrap=500, adaptive=adaptive)
        results[adaptive] = measure_intrinsic_dimension(lambda s: Step(400, s), StepTask(), config)
    full, fast = results[False], results[True]
    assert len(fast.curve) < len(full.curve) == len(grid)
    assert (fast.d90, fast.d90_low, fast.d90_high) == (full.d90, full.d90_low, full.d90_high)
    assert full.d90 in (110, 165)
    assert {p.d: p.scores for p in fast.curve}.items() <= {p.d: p.scores for p in full.curve}.items()
    assert fast.search == "adaptive" and full.search == "grid" and fast.grid == full.grid == grid
