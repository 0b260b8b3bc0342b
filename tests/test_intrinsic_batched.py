"""Runs trained together (one batched MLP over seeds and dimensions) give what each run gives alone."""

from __future__ import annotations

import pytest
import torch

from lowrank.errors import LowrankError
from lowrank.intrinsic.batched import BatchedMLP, BatchedSubspaceMLP, StackedFastfood, batchable
from lowrank.intrinsic.problems import image_problem
from lowrank.intrinsic.projections import FastfoodProjection
from lowrank.intrinsic.search import SearchConfig, measure_intrinsic_dimension
from lowrank.intrinsic.subspace import SubspaceConfig, SubspaceModel
from lowrank.intrinsic.training import RunBudget
from lowrank.mlp import build_mlp
from lowrank.tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")
MODEL = "mlp:64,16,10"


@pytest.fixture(scope="module")
def problem():
    return image_problem(MODEL, "digits")


def _wrapped(problem, runs, projection, said):
    return [SubspaceModel(problem.build_model(s), SubspaceConfig(d, projection, 1000 + s, said)) for d, s in runs]


def test_stacked_fastfood_equals_each_projection():
    projections = [FastfoodProjection(1000, d, seed) for d, seed in ((5, 0), (300, 1), (1000, 2))]
    stacked = StackedFastfood(projections)
    thetas = [torch.randn(p.d, generator=torch.Generator().manual_seed(p.d)) for p in projections]
    padded = torch.stack([torch.nn.functional.pad(t, (0, stacked.width - t.numel())) for t in thetas])
    expected = torch.stack([p(t) for p, t in zip(projections, thetas)])
    torch.testing.assert_close(stacked(padded), expected, rtol=1e-5, atol=1e-6)
    stacked.double()
    assert torch.autograd.gradcheck(stacked, (padded.double().requires_grad_(),))


@pytest.mark.parametrize(("projection", "said"), [("fastfood", False), ("fastfood", True), ("dense", False),
                                                  ("sparse", True)])
def test_batched_subspace_runs_match_one_at_a_time(problem, projection, said):
    runs = [(12, 0), (12, 1), (40, 0), (40, 2)]
    config = RunBudget(steps=40, lr=2e-2, batch_size=128)
    alone = _wrapped(problem, runs, projection, said)
    scores = [problem.task.train_and_score(w, config, s) for w, (_, s) in zip(alone, runs)]
    batched = BatchedSubspaceMLP(_wrapped(problem, runs, projection, said))
    together = problem.task.train_and_score_runs(batched, config, [s for _, s in runs])
    assert together == pytest.approx(scores, abs=1e-9)
    for r, wrapped in enumerate(alone):
        width = wrapped.theta_d.numel()
        torch.testing.assert_close(batched.theta_d[r, :width].detach(), wrapped.theta_d.detach(), rtol=1e-4,
                                   atol=1e-5)
        assert not batched.theta_d[r, width:].any()  # masked entries never move
        if said:
            torch.testing.assert_close(batched.said_scales[r].detach(), wrapped.said_scales.detach(), rtol=1e-4,
                                       atol=1e-5)


def test_batched_direct_training_matches_one_at_a_time(problem):
    config = RunBudget(steps=30, lr=1e-2, batch_size=100)
    models = [problem.build_model(s) for s in (0, 1, 2)]
    scores = [problem.task.train_and_score(m, config, s) for m, s in zip(models, (0, 1, 2))]
    batched = BatchedMLP([problem.build_model(s) for s in (0, 1, 2)])
    assert problem.task.train_and_score_runs(batched, config, [0, 1, 2]) == pytest.approx(scores, abs=1e-9)
    for r, model in enumerate(models):
        torch.testing.assert_close(batched.weights[0][r].detach(), model.layers[0].weight.detach(), rtol=1e-4,
                                   atol=1e-5)


def test_search_batched_and_one_at_a_time_agree_and_repeat(problem):
    train = RunBudget(steps=25, lr=2e-2, batch_size=256)
    results = []
    for batch_runs in (True, False, True):
        config = SearchConfig(dims=(8, 32, 128), train=train, baseline_train=train, seeds=2, bootstrap=50,
                              adaptive=False, batch_runs=batch_runs)
        results.append(measure_intrinsic_dimension(problem.build_model, problem.task, config))
    for other in results[1:]:
        assert [p.d for p in other.curve] == [p.d for p in results[0].curve] == [8, 32, 128]
        for a, b in zip(other.curve, results[0].curve):
            assert a.scores == pytest.approx(b.scores, abs=1e-9)
        assert other.baseline_scores == pytest.approx(results[0].baseline_scores, abs=1e-9)
        assert (other.d90, other.d90_low, other.d90_high) == (results[0].d90, results[0].d90_low, results[0].d90_high)


def test_what_is_batched_and_what_is_refused():
    mlp = build_mlp("mlp:8,6,3", 0)
    assert batchable(mlp) and batchable(mlp, SubspaceModel(mlp, SubspaceConfig(d=5)))
    assert not batchable(mlp, SubspaceModel(build_mlp("mlp:8,6,3", 0), SubspaceConfig(d=5, layout="per_tensor")))
    assert not batchable(mlp, SubspaceModel(build_mlp("mlp:8,6,3", 0), SubspaceConfig(d=5, direct=("layers.1.*",))))
    assert not batchable(tiny_model("bert", "classification", num_labels=2))
    with pytest.raises(LowrankError, match="same sizes"):
        BatchedMLP([build_mlp("mlp:8,6,3", 0), build_mlp("mlp:8,5,3", 0)])
    with pytest.raises(LowrankError, match="all SAID or all DID"):
        BatchedSubspaceMLP([SubspaceModel(build_mlp("mlp:8,6,3", s), SubspaceConfig(d=10, said=s == 1))
                            for s in (0, 1)])
