"""The d90 search (Li et al. 2018): train in random subspaces of growing ``d`` until the mean score of ``seeds``
runs reaches ``threshold`` times the baseline.

- Baseline: direct training of the same model on the same data with the same number of steps (mean over the
  same seeds), or a global value the user gives (Li et al. used 1.0 for MNIST).
- ``d`` values: the grid ``dims`` (e.g. :func:`log_grid`). With ``adaptive`` (the default) only the grid points
  that can matter are trained (:mod:`lowrank.intrinsic.adaptive`: every other point first, then the points whose
  side of the line the bootstrap has not decided); without it, the whole grid. Then ``bisect_steps`` bisections
  (at the geometric midpoint) between the largest failing and the smallest passing ``d`` trained.
- ``d90`` = the smallest ``d`` trained whose mean score reaches ``threshold * baseline``. Its bootstrap interval
  resamples the seeds at every trained ``d`` (and the baseline seeds) with replacement and takes the 2.5% and
  97.5% quantiles of the resampled d90. It measures seed-to-seed noise at the ``d`` trained, nothing else: its
  ends are trained ``d`` values (so its resolution is the grid's, finer where bisection added points), it
  assumes the mean curve rises with ``d``, and with 3 seeds it is coarse (10 distinct resampled means per ``d``).
  ``d90_interpolated`` interpolates the mean linearly in ``log d`` between d90 and the point before it.
- Runs of one round are trained together when the model is an MLP (:mod:`lowrank.intrinsic.runs`), with the
  same scores as one at a time; seeds as described there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from lowrank.errors import LowrankError
from lowrank.intrinsic import adaptive
from lowrank.intrinsic.results import CurvePoint, IntrinsicResult, TrainingBudget
from lowrank.intrinsic.runs import PROJECTION_SEED_OFFSET, ModelBuilder, Runs, Task  # noqa: F401 (re-exported)
from lowrank.intrinsic.subspace import SubspaceConfig, count_projected
from lowrank.intrinsic.training import RunBudget
from lowrank.options import option
from lowrank.progress import ProgressCallback


def log_grid(low: int, high: int, count: int) -> tuple[int, ...]:
    """``count`` integers spaced evenly in ``log d`` from ``low`` to ``high`` (duplicates after rounding dropped)."""
    if not 1 <= low <= high or count < 1:
        raise LowrankError(f"log grid needs 1 <= low <= high and count >= 1, got {low}, {high}, {count}")
    if count == 1:
        return (low,)
    values = np.exp(np.linspace(math.log(low), math.log(high), count))
    return tuple(sorted({int(round(v)) for v in values}))


def parse_dims(text: str) -> tuple[int, ...]:
    """``"100,200,400"`` -> those values; ``"log:100:3000:6"`` -> :func:`log_grid` (100, 3000, 6).

    Raises:
        LowrankError: for anything else, naming the text.
    """
    try:
        if text.startswith("log:"):
            low, high, count = (int(part) for part in text[4:].split(":"))
            return log_grid(low, high, count)
        values = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise LowrankError(f"--dims {text!r}: expected integers like 100,200,400 or log:LOW:HIGH:COUNT") from None
    if min(values) < 1:
        raise LowrankError(f"--dims {text!r}: every d must be >= 1")
    return values


def parse_baseline(text: str) -> float | None:
    """``"direct"`` -> ``None`` (measure by direct training); a number -> that global baseline."""
    if text == "direct":
        return None
    try:
        return float(text)
    except ValueError:
        raise LowrankError(f"--baseline {text!r}: expected 'direct' or a number such as 1.0") from None


@dataclass(frozen=True)
class SearchConfig:
    """Options of one d90 measurement; a field with an :func:`~lowrank.options.option` is that ``lowrank
    intrinsic-dim`` option (the others come from options the command parses: ``--dims``, ``--baseline``...).

    ``global_baseline``: when given, the baseline is this value (Li et al.'s 1.0); when ``None``, it is measured
    by direct training with ``baseline_train``'s budget. ``adaptive``: train only the grid points that can move
    d90 or its interval (:mod:`lowrank.intrinsic.adaptive`); ``batch_runs``: train MLP runs of a round together.
    """

    dims: tuple[int, ...]
    train: RunBudget
    baseline_train: RunBudget
    projection: str = option("fastfood", "fastfood, dense or sparse.")
    said: bool = option(False, "SAID: one trained scale per parameter tensor (counted in d).")
    layout: str = option("global", "global: one P over all parameters; per_tensor: one P per tensor.")
    direct: tuple[str, ...] = option((), "Train parameters matching this glob directly (e.g. 'classifier.*').",
                                     multiple=True)
    cache: bool = option(False, "Keep a dense P in memory (4*D*d bytes) instead of regenerating it each step.",
                         flag="--cache-projection")
    seeds: int = option(3, "Runs per d (and for the baseline).")
    seed: int = option(0, "First seed (model init, P, batches).")
    threshold: float = option(0.9, "Fraction of the baseline to reach.")
    global_baseline: float | None = None
    bisect_steps: int = option(0, "Bisection steps after the grid.", flag="--bisect")
    adaptive: bool = option(True, "Adaptive: train only the grid points whose side of the line the bootstrap has not "
                            "decided (every other point first); full grid: every point.", flag="--adaptive/--full-grid")
    batch_runs: bool = option(True, "Train the runs of a round together as one batched model (MLPs only; same "
                              "scores).", flag="--batch-runs/--one-at-a-time")
    bootstrap: int = option(1000, "Resamples for the d90 interval.")
    model_name: str = ""
    data_name: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.dims or min(self.dims) < 1 or list(self.dims) != sorted(set(self.dims)):
            raise LowrankError(f"dims must be distinct positive integers in increasing order, got {self.dims}")
        if self.seeds < 1 or self.bisect_steps < 0 or self.bootstrap < 1:
            raise LowrankError(f"seeds >= 1, bisect_steps >= 0, bootstrap >= 1 required, got {self.seeds}, "
                               f"{self.bisect_steps}, {self.bootstrap}")
        if not 0.0 < self.threshold <= 1.0:
            raise LowrankError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.global_baseline is not None and not self.global_baseline > 0:
            raise LowrankError(f"a global baseline must be positive, got {self.global_baseline}")
        SubspaceConfig(self.dims[0], self.projection, 0, self.said, self.layout, self.direct, self.cache)

    def subspace(self, d: int, seed: int) -> SubspaceConfig:
        return SubspaceConfig(d, self.projection, seed, self.said, self.layout, self.direct, self.cache)


def first_reaching(dims: list[int], means: np.ndarray, target: float) -> int | None:
    """Smallest ``dims[i]`` with ``means[..., i] >= target`` (``dims`` increasing); ``None`` if none does."""
    hits = np.flatnonzero(means >= target)
    return dims[int(hits[0])] if hits.size else None


def bootstrap_interval(curve: list[CurvePoint], baseline_scores: list[float] | None, global_baseline: float,
                       threshold: float, samples: int, seed: int) -> tuple[int | None, int | None]:
    """2.5% and 97.5% quantiles of d90 over ``samples`` resamplings of the seeds (``None``: beyond the grid)."""
    rng = np.random.default_rng(seed)
    dims = [p.d for p in curve]
    d90s = np.empty(samples)
    for b in range(samples):
        means = np.array([rng.choice(p.scores, size=len(p.scores)).mean() for p in curve])
        base = rng.choice(baseline_scores, size=len(baseline_scores)).mean() if baseline_scores else global_baseline
        found = first_reaching(dims, means, threshold * base)
        d90s[b] = math.inf if found is None else found
    low, high = np.quantile(d90s, [0.025, 0.975], method="inverted_cdf")
    as_int = lambda v: None if math.isinf(v) else int(v)  # noqa: E731
    return as_int(low), as_int(high)


def interpolate_d90(curve: list[CurvePoint], target: float) -> float | None:
    """``d`` where the mean curve crosses ``target``, linear in ``log d`` between d90 and the point before it."""
    dims = [p.d for p in curve]
    means = np.array([p.mean for p in curve])
    d90 = first_reaching(dims, means, target)
    if d90 is None:
        return None
    index = dims.index(d90)
    if index == 0:
        return float(d90)
    (d_a, m_a), (d_b, m_b) = (dims[index - 1], means[index - 1]), (d90, means[index])
    fraction = (target - m_a) / (m_b - m_a)
    return float(math.exp(math.log(d_a) + fraction * (math.log(d_b) - math.log(d_a))))


def _search(runs: Runs, config: SearchConfig, baseline_scores: list[float], baseline: float) -> None:
    """Train the grid (adaptively or whole), then bisect between the last failing and first passing ``d``."""
    target = config.threshold * baseline
    if not config.adaptive:
        runs.train(list(config.dims), config.train)
    else:
        todo = adaptive.first_round(config.dims)
        while todo:
            runs.train(todo, config.train)
            passes = adaptive.pass_fractions(runs.scores, baseline_scores, baseline, config.threshold,
                                             config.bootstrap, config.seed)
            todo = adaptive.undecided(config.dims, passes)
    for _ in range(config.bisect_steps):
        dims = sorted(runs.scores)
        found = first_reaching(dims, np.array([np.mean(runs.scores[d]) for d in dims]), target)
        if found is None or found == dims[0]:
            return
        mid = adaptive.midpoint(dims[dims.index(found) - 1], found)
        if mid is None:
            return
        runs.train([mid], config.train)


def measure_intrinsic_dimension(build_model: ModelBuilder, task: Task, config: SearchConfig,
                                progress: ProgressCallback | None = None) -> IntrinsicResult:
    """Measure d90 of ``build_model``'s network on ``task`` (its ``metric``, higher is better).

    Raises:
        LowrankError: when a ``d`` exceeds the number of projected parameters ``D`` (checked before training).
    """
    started = time.perf_counter()
    total = config.seeds * (len(config.dims) + config.bisect_steps + (config.global_baseline is None))
    seeds = [config.seed + s for s in range(config.seeds)]
    runner = Runs(build_model, task, config.subspace, seeds, config.batch_runs, progress, total)
    _check_dims(build_model, config)
    baseline_scores = runner.baseline(config.baseline_train) if config.global_baseline is None else []
    baseline = float(np.mean(baseline_scores)) if baseline_scores else float(config.global_baseline)
    target = config.threshold * baseline
    _search(runner, config, baseline_scores, baseline)
    curve = [CurvePoint.of(d, runner.scores[d]) for d in sorted(runner.scores)]
    dims = [p.d for p in curve]
    d90 = first_reaching(dims, np.array([p.mean for p in curve]), target)
    low, high = bootstrap_interval(curve, baseline_scores, baseline, config.threshold, config.bootstrap, config.seed)
    train = config.train
    return IntrinsicResult(
        D=runner.D, projection=config.projection, said=config.said, metric=task.metric, baseline=baseline,
        threshold=config.threshold, d90=d90, curve=tuple(curve),
        baseline_kind="direct" if baseline_scores else "global", baseline_scores=tuple(baseline_scores),
        d90_low=low, d90_high=high, d90_interpolated=interpolate_d90(curve, target), layout=config.layout,
        model=config.model_name, data=config.data_name, projected_tensors=runner.projected_tensors,
        direct_patterns=config.direct, direct_parameters=runner.direct_parameters,
        budget=TrainingBudget(train.steps, train.lr, config.baseline_train.lr, train.batch_size, config.seeds,
                              config.seed),
        elapsed_s=time.perf_counter() - started, extra=dict(config.extra),
        search="adaptive" if config.adaptive else "grid", grid=config.dims,
    )


def _check_dims(build_model: ModelBuilder, config: SearchConfig) -> None:
    """Fail before any training if a ``d`` is larger than ``D``, too small for SAID, or a pattern matches nothing."""
    D, tensors = count_projected(build_model(config.seed), config.direct)
    if config.dims[-1] > D:
        raise LowrankError(f"subspace dimension d={config.dims[-1]} is larger than the number of parameters D={D}")
    if config.said and config.dims[0] <= tensors:
        raise LowrankError(f"SAID needs d > {tensors} (one scale per projected tensor), got d={config.dims[0]}")
