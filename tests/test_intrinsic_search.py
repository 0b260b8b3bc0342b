"""The d90 search on planted problems with a known answer, its helpers, and the result JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lowrank.errors import LowrankError
from lowrank.intrinsic.results import SCHEMA, CurvePoint, IntrinsicResult
from lowrank.intrinsic.search import (SearchConfig, bootstrap_interval, first_reaching, interpolate_d90, log_grid,
                                      measure_intrinsic_dimension, parse_baseline, parse_dims)
from lowrank.intrinsic.subspace import SubspaceConfig, SubspaceModel
from lowrank.intrinsic.training import RunBudget


class PlantedModel(nn.Module):
    """theta in R^D, initialized from the seed; the forward returns theta itself."""

    def __init__(self, D: int, seed: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(D, generator=torch.Generator().manual_seed(seed)))

    def forward(self) -> torch.Tensor:
        return self.theta


class PlantedTask:
    """Loss ||U^T (theta - target)||^2 with U (D x k) orthonormal: only k directions matter.

    Score = fraction of the initial loss removed at the subspace's optimum. A random d-dimensional subspace can remove at best a fraction
    d / k in expectation when d < k, and everything when d >= k, so the 90% line is crossed at d ~ 0.9 k.
    """

    metric = "loss removed"

    def __init__(self, D: int, k: int) -> None:
        generator = torch.Generator().manual_seed(123)
        self.U = torch.linalg.qr(torch.randn(D, k, generator=generator, dtype=torch.float64))[0].float()
        self.target = torch.randn(D, generator=generator)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return (self.U.T @ (theta - self.target)).square().sum()

    def train_and_score(self, module, config, seed, progress, label) -> float:
        """Minimize to convergence (L-BFGS, the quadratic is exact), so the score is the subspace's best."""
        with torch.no_grad():
            start = self.loss(module()).item()
        return 1.0 - _fit_exactly(self, module, config.steps) / start


pytestmark = pytest.mark.usefixtures("one_thread")


def _fit_exactly(task: PlantedTask, module: nn.Module, iterations: int = 500) -> float:
    """Minimize the quadratic with L-BFGS to convergence; return the final loss."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, tolerance_grad=1e-12, tolerance_change=1e-15,
                                  history_size=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = task.loss(module())
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return task.loss(module()).item()


def _config(dims, projection="fastfood", bisect_steps=0, steps=250):
    train = RunBudget(steps=steps)
    return SearchConfig(dims=dims, train=train, baseline_train=train, projection=projection, cache=True, seeds=3,
                        bisect_steps=bisect_steps, bootstrap=200, adaptive=False, model_name="planted",
                        data_name="planted")


@pytest.mark.parametrize("projection", ["fastfood", "dense"])
def test_planted_k_directions_reach_the_line_at_about_k(projection):
    D, k = 128, 16
    task = PlantedTask(D, k)
    result = measure_intrinsic_dimension(lambda s: PlantedModel(D, s), task, _config((4, 8, 14, 16, 24), projection))
    means = {p.d: p.mean for p in result.curve}
    assert result.baseline > 0.999 and result.baseline_kind == "direct"
    assert abs(means[8] - 8 / k) < 0.25 and abs(means[4] - 4 / k) < 0.2  # d / k below k
    assert means[16] > 0.999 and means[24] > 0.999 and means[14] < 0.97
    assert result.d90 in (14, 16)
    assert result.d90_low <= result.d90 <= (result.d90_high or math.inf)
    assert result.D == D and result.metric == "loss removed" and result.projected_tensors == 1


def test_full_rank_subspace_matches_direct_training():
    D = 64
    task = PlantedTask(D, D)  # every direction matters
    direct = PlantedModel(D, 0)
    wrapped = SubspaceModel(PlantedModel(D, 0), SubspaceConfig(d=D, projection="dense", cache=True))
    start = task.loss(direct()).item()
    assert _fit_exactly(task, direct) < 1e-6 * start
    assert _fit_exactly(task, wrapped) < 1e-6 * start
    torch.testing.assert_close(wrapped().detach(), direct().detach(), rtol=0, atol=1e-3)
    half = SubspaceModel(PlantedModel(D, 0), SubspaceConfig(d=D // 2, projection="dense", cache=True))
    assert _fit_exactly(task, half) > 0.25 * start  # a half-dimensional subspace leaves ~half the loss


def test_bisection_refines_between_grid_points():
    D, k = 128, 12
    result = measure_intrinsic_dimension(lambda s: PlantedModel(D, s), PlantedTask(D, k),
                                         _config((3, 48), bisect_steps=3))
    dims = [p.d for p in result.curve]
    assert dims[0] == 3 and dims[-1] == 48 and len(dims) == 5  # 12, then two more midpoints
    assert 8 <= result.d90 <= 24


def test_global_baseline_and_d_larger_than_D():
    D, k = 64, 4
    config = SearchConfig(dims=(2, 8), train=RunBudget(steps=300, lr=0.05), baseline_train=RunBudget(steps=1),
                          global_baseline=1.0, seeds=2, bootstrap=50)
    result = measure_intrinsic_dimension(lambda s: PlantedModel(D, s), PlantedTask(D, k), config)
    assert result.baseline == 1.0 and result.baseline_kind == "global" and result.baseline_scores == ()
    assert result.d90 == 8
    too_big = SearchConfig(dims=(8, 65), train=RunBudget(steps=1), baseline_train=RunBudget(steps=1))
    with pytest.raises(LowrankError, match="d=65 is larger than the number of parameters D=64"):
        measure_intrinsic_dimension(lambda s: PlantedModel(D, s), PlantedTask(D, k), too_big)


def test_helpers_exact_cases():
    assert log_grid(10, 1000, 5) == (10, 32, 100, 316, 1000)
    assert log_grid(7, 7, 3) == (7,)
    assert parse_dims("log:10:1000:5") == (10, 32, 100, 316, 1000) and parse_dims("400,100,100") == (100, 400)
    assert parse_baseline("direct") is None and parse_baseline("1.0") == 1.0
    for bad in ("log:10:1000", "10,x", "0,5"):
        with pytest.raises(LowrankError, match="--dims"):
            parse_dims(bad)
    assert first_reaching([1, 2, 3], torch.tensor([0.1, 0.95, 0.5]).numpy(), 0.9) == 2
    assert first_reaching([1, 2], torch.tensor([0.1, 0.2]).numpy(), 0.9) is None
    curve = [CurvePoint.of(10, [0.5]), CurvePoint.of(100, [1.0])]
    assert math.isclose(interpolate_d90(curve, 0.75), math.sqrt(1000))
    assert interpolate_d90(curve, 0.4) == 10.0 and interpolate_d90(curve, 1.1) is None
    steady = [CurvePoint.of(10, [0.5, 0.5]), CurvePoint.of(20, [0.95, 0.95])]
    assert bootstrap_interval(steady, [1.0, 1.0], 1.0, 0.9, 100, 0) == (20, 20)
    shaky = [CurvePoint.of(10, [0.5, 0.5]), CurvePoint.of(20, [0.0, 1.0])]
    assert bootstrap_interval(shaky, None, 1.0, 0.9, 200, 0) == (20, None)


def test_config_validation():
    train = RunBudget(steps=1)
    for bad in ({"dims": (5, 3)}, {"dims": ()}, {"dims": (0, 2)}, {"threshold": 0.0}, {"seeds": 0},
                {"global_baseline": -1.0}, {"projection": "gauss"}):
        options = {"dims": (2, 4), "train": train, "baseline_train": train} | bad
        with pytest.raises(LowrankError):
            SearchConfig(**options)
    with pytest.raises(LowrankError, match="learning rate"):
        RunBudget(lr=0.0)


def test_result_json_round_trip_and_contract_fields():
    D, k = 64, 4
    config = SearchConfig(dims=(2, 8), train=RunBudget(steps=100, lr=0.05), baseline_train=RunBudget(steps=100),
                          seeds=2, bootstrap=20, model_name="planted", data_name="planted")
    result = measure_intrinsic_dimension(lambda s: PlantedModel(D, s), PlantedTask(D, k), config)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["schema"] == SCHEMA == "lowrank.intrinsic/1"
    for key in ("D", "projection", "said", "metric", "baseline", "threshold", "d90", "curve"):
        assert key in data
    assert set(data["curve"][0]) == {"d", "scores", "mean"} and len(data["curve"][0]["scores"]) == 2
    assert IntrinsicResult.from_dict(data) == result
    with pytest.raises(LowrankError, match="schema"):
        IntrinsicResult.from_dict(data | {"schema": "other/1"})
    with pytest.raises(LowrankError, match="not the mean"):
        CurvePoint(5, (0.1, 0.2), 0.9)
