"""Rank allocation under a parameter budget (lowrank.advice.planning.allocate) and the ground-truth statistics of
sweeps."""

import itertools

import pytest

from lowrank.advice.planning.allocate import ModuleSignal, allocate, uniform_cost
from lowrank.errors import LowrankError
from lowrank.advice.ground_truth import RankScores, doubling, halving, sufficient_rank


def _value(modules, ranks):
    return sum(sum(s * s for s in m.spectrum[: ranks[m.name]]) for m in modules)


def test_greedy_allocation_is_optimal_on_a_small_case():
    modules = [ModuleSignal("a", (4, 4), (3.0, 2.0, 1.0, 0.5)), ModuleSignal("b", (8, 8), (4.0, 3.5, 0.1, 0.1)),
               ModuleSignal("c", (4, 12), (1.0, 0.9, 0.8, 0.7))]
    budget = 8 * 6
    ranks = allocate(modules, budget, max_rank=4)
    assert sum(ranks[m.name] * m.cost for m in modules) <= budget
    best = max(_value(modules, dict(zip("abc", choice))) for choice in itertools.product(range(1, 5), repeat=3)
               if sum(k * m.cost for k, m in zip(choice, modules)) <= budget)
    assert _value(modules, ranks) == pytest.approx(best)


def test_equal_spectra_and_costs_give_uniform_ranks():
    modules = [ModuleSignal(name, (6, 6), (1.0, 0.5, 0.25, 0.1)) for name in "abc"]
    assert allocate(modules, uniform_cost(modules, 3), max_rank=8) == {"a": 3, "b": 3, "c": 3}


def test_budget_below_one_rank_per_module_is_refused():
    modules = [ModuleSignal("a", (4, 4), (1.0,)), ModuleSignal("b", (4, 4), (1.0,))]
    with pytest.raises(LowrankError, match="below one rank per module"):
        allocate(modules, 15, max_rank=4)


def test_sufficient_rank_is_the_smallest_rank_within_noise_of_the_best():
    grid = [RankScores(1, (0.90, 0.91, 0.89)), RankScores(2, (0.9505, 0.951, 0.950)),
            RankScores(4, (0.952, 0.953, 0.951)), RankScores(8, (0.953, 0.952, 0.954))]
    assert sufficient_rank(grid, "accuracy") == 2
    steps = {s.rank: s.beyond_noise for s in doubling(grid, "accuracy")}
    assert steps == {1: True, 2: True, 4: False}  # 2 -> 4: +0.15 points, 2 SE = 0.13
    keeps = {s.rank: s.beyond_noise for s in halving(grid, "accuracy")}
    assert keeps == {2: False, 4: True, 8: True}


def test_loss_metric_prefers_lower_values():
    grid = [RankScores(1, (3.0, 3.1, 2.9)), RankScores(2, (2.5, 2.6, 2.4)), RankScores(4, (2.5, 2.51, 2.49))]
    assert sufficient_rank(grid, "loss") == 2
    assert doubling(grid, "loss")[0].beyond_noise
