"""Train and remember the runs of a d90 search: the baseline's seeds and every ``(d, seed)`` in a subspace.

A round of runs is trained together when the task can train run-batched modules (``train_and_score_runs``) and
the model is an MLP that :func:`lowrank.intrinsic.batched.batchable` accepts: one
:class:`~lowrank.intrinsic.batched.BatchedSubspaceMLP` (or :class:`~lowrank.intrinsic.batched.BatchedMLP` for
the baseline) over all seeds and dimensions of the round, in groups of at most ``MAX_STACKED_FLOATS / L`` runs
(``L`` the Fastfood length, about ``D``) so the stacked ``(R, L)`` arrays stay near 64 MB. Anything else trains
one run at a time (models built lazily, one in memory at a time). Both give the same scores for the same seeds.

Seeds: run ``s`` of ``seeds`` uses ``seed + s`` for ``theta0`` (``build_model``) and minibatches, and
``seed + s + PROJECTION_SEED_OFFSET`` for ``P`` (a stream independent of the one that drew ``theta0``).
"""

from __future__ import annotations

from typing import Callable, Protocol

from torch import nn

from lowrank.intrinsic.batched import BatchedMLP, BatchedSubspaceMLP, batchable
from lowrank.intrinsic.subspace import SubspaceConfig, SubspaceModel
from lowrank.intrinsic.training import RunBudget
from lowrank.progress import ProgressCallback, report
from lowrank.spectra import next_power_of_two

ModelBuilder = Callable[[int], nn.Module]
PROJECTION_SEED_OFFSET = 1_000_003  # P of seed s is drawn from seed s + offset: independent of theta0's stream
MAX_STACKED_FLOATS = 1 << 24


class Task(Protocol):
    """What is trained and scored: ``train_and_score`` trains ``module``'s trainable parameters and returns the
    metric (higher is better), e.g. :class:`lowrank.intrinsic.training.ClassificationTask`. A task that also has
    ``train_and_score_runs(module, config, seeds, progress, label) -> list[float]`` gets batched MLP runs."""

    metric: str

    def train_and_score(self, module: nn.Module, config: RunBudget, seed: int,
                        progress: ProgressCallback | None, label: str) -> float: ...


class Runs:
    """Trains runs on request and keeps their scores: ``scores[d]`` lists one score per seed."""

    def __init__(self, build_model: ModelBuilder, task: Task, subspace: Callable[[int, int], SubspaceConfig],
                 seeds: list[int], batched: bool, progress: ProgressCallback | None, total: int) -> None:
        self.build_model, self.task, self.subspace, self.seeds = build_model, task, subspace, seeds
        self.batched = batched and hasattr(task, "train_and_score_runs")
        self.progress, self.total, self.done = progress, total, 0
        self.scores: dict[int, list[float]] = {}
        self.D = self.projected_tensors = self.direct_parameters = 0

    def _tick(self, info: str) -> None:
        self.done += 1
        report(self.progress, "intrinsic-dim", self.done, max(self.total, self.done), info)

    def baseline(self, config: RunBudget) -> list[float]:
        """Direct training, one score per seed."""
        first = self.build_model(self.seeds[0])
        if self.batched and batchable(first):
            models = [first] + [self.build_model(s) for s in self.seeds[1:]]
            module = BatchedMLP([m.to(config.device) for m in models]).to(config.device)
            scores = self.task.train_and_score_runs(module, config, self.seeds, self.progress, "direct training")
        else:
            scores = []
            for index, seed in enumerate(self.seeds):
                model = (first if index == 0 else self.build_model(seed)).to(config.device)
                scores.append(self.task.train_and_score(model, config, seed, self.progress, "direct training"))
        for seed, score in zip(self.seeds, scores):
            self._tick(f"baseline seed {seed}: {score:.4f}")
        return scores

    def _wrap(self, d: int, seed: int, device: str) -> SubspaceModel:
        wrapped = SubspaceModel(self.build_model(seed).to(device), self.subspace(d, PROJECTION_SEED_OFFSET + seed))
        self.D, self.projected_tensors = wrapped.D, len(wrapped.projected_names)
        self.direct_parameters = sum(p.numel() for p in wrapped.direct_params)
        return wrapped

    def train(self, dims: list[int], config: RunBudget) -> None:
        """Train every seed at every ``d`` of ``dims`` not trained yet (one round)."""
        todo = [(d, seed) for d in dims if d not in self.scores for seed in self.seeds]
        if not todo:
            return
        first = self._wrap(*todo[0], config.device)
        if self.batched and batchable(first.model, first):
            group = max(1, MAX_STACKED_FLOATS // next_power_of_two(first.D))
            for start in range(0, len(todo), group):
                part = todo[start : start + group]
                wrapped = [first if start == i == 0 else self._wrap(d, s, config.device)
                           for i, (d, s) in enumerate(part)]
                module = BatchedSubspaceMLP(wrapped).to(config.device)
                label = f"subspace d={','.join(str(d) for d in sorted({d for d, _ in part}))}"
                scores = self.task.train_and_score_runs(module, config, [s for _, s in part], self.progress, label)
                self._record(part, scores)
            return
        for index, (d, seed) in enumerate(todo):
            wrapped = first if index == 0 else self._wrap(d, seed, config.device)
            self._record([(d, seed)], [self.task.train_and_score(wrapped, config, seed, self.progress,
                                                                 f"subspace d={d}")])

    def _record(self, runs: list[tuple[int, int]], scores: list[float]) -> None:
        for (d, seed), score in zip(runs, scores):
            self.scores.setdefault(d, []).append(float(score))
            self._tick(f"d={d} seed {seed}: {score:.4f}")
