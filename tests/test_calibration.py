"""The probe verdict's calibration against retraining (examples/calibration.py, which only
examples/rank_verdict_calibration.py uses): the rule's thresholds, the rates, the fit and leave one task out."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _example(name: str):
    """``examples/<name>.py`` imported by its path (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


calibration = _example("calibration")


def _case(task: str, rank: int, gain: float | None, cost: float | None, helped=None, kept=None, lost=None):
    return calibration.Case(task, rank, 0, gain, 0.0 if gain is not None else None, cost, helped, kept, lost)


def test_calibration_rule_and_rates():
    """The rule's three thresholds each decide their cases, and the four rates count what they should."""
    t = calibration.Thresholds(raise_gain=0.01, raise_cost=0.1, lower_cost=0.01)
    assert calibration.verdict(_case("a", 1, 0.02, None), t) == "raise r"
    assert calibration.verdict(_case("a", 4, 0.0, 0.2), t) == "raise r"  # the lower half is worth a lot
    assert calibration.verdict(_case("a", 4, 0.0, 0.005), t) == "lower r"
    assert calibration.verdict(_case("a", 4, 0.0, 0.05), t) == "adequate"
    cases = [_case("a", 1, 0.02, None, helped=True), _case("a", 2, 0.0, 0.005, helped=False, kept=True),
             _case("a", 4, 0.0, 0.005, helped=False, lost=True), _case("a", 8, 0.0, 0.05, helped=False, lost=True)]
    rates = calibration.rates(cases, t)
    assert rates.raise_when_helped == (1, 1) and rates.no_raise_when_not == (3, 3)
    assert rates.lower_when_kept == (1, 1) and rates.lower_when_lost == (1, 2)


def test_fit_separates_cases_that_a_threshold_can_separate_and_leave_one_out_refits():
    """On cases a grid point separates perfectly, the fit scores 3 (every rate right); each task left out is
    judged with thresholds fitted on the others alone."""
    cases = [_case("a", 1, 0.05, None, helped=True), _case("a", 2, 0.0, 0.5, helped=True, kept=False, lost=True),
             _case("a", 8, 0.0, 0.001, helped=False, kept=True), _case("b", 1, 0.03, None, helped=True),
             _case("b", 16, 0.0, 0.0, helped=False, kept=True), _case("b", 4, 0.0, 0.04, helped=False, lost=True)]
    fitted = calibration.fit(cases)
    assert calibration.rates(cases, fitted).score() == pytest.approx(3.0)
    held = calibration.leave_one_task_out(cases)
    assert set(held) == {"a", "b"} and [c.task for c in held["a"][1]] == ["a"] * 3
    assert held["a"][0] == calibration.fit([c for c in cases if c.task == "b"])


def test_first_gain_and_quartered_margin_and_the_grid_scores_agree_with_the_rule():
    """At r = 1 (no halved arm) the gain bar is ``first_gain``; "lower r" needs the quartering cost below
    ``lower_quarter`` where it was measured; the vectorized scores over the grid equal the rule's one by one."""
    t = calibration.Thresholds(raise_gain=0.01, raise_cost=0.1, lower_cost=0.01, first_gain=0.0, lower_quarter=0.03)
    assert calibration.verdict(_case("a", 1, 0.002, None), t) == "raise r"
    assert calibration.verdict(_case("a", 4, 0.002, 0.05), t) == "adequate"
    kept = calibration.Case("a", 8, 0, 0.0, 0.0, 0.005, False, True, False, quarter=0.01)
    lost = calibration.Case("a", 8, 1, 0.0, 0.0, 0.005, False, False, True, quarter=0.2)
    assert calibration.verdict(kept, t) == "lower r" and calibration.verdict(lost, t) == "adequate"
    cases = [kept, lost, _case("a", 1, 0.002, None, helped=True), _case("b", 2, 0.02, 0.2, helped=False, kept=False),
             _case("b", 4, -0.01, 0.004, helped=False, kept=True), _case("b", 16, 0.005, 0.03, helped=True)]
    grid = calibration.GRID[::97]
    scores = calibration.grid_scores(cases, grid)
    assert scores == pytest.approx([calibration.rates(cases, g).score() for g in grid])
    assert calibration.rates(cases, calibration.fit(cases)).score() == pytest.approx(max(
        calibration.grid_scores(cases, calibration.GRID)))
