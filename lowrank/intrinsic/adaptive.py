"""Which ``d`` to train next: skip grid points whose side of the line is already decided.

With seeds' scores ``s_{d,1..n}`` at the evaluated ``d`` and the baseline's ``b_1..n``, one bootstrap replicate
resamples every list with replacement; ``pass(d)`` is the fraction of replicates in which the resampled mean at
``d`` reaches ``threshold * resampled baseline``. A point is *decided* when ``pass(d) <= LEVEL`` (fails) or
``pass(d) >= 1 - LEVEL`` (passes), ``LEVEL = 0.025``: the level of the 95% interval reported for d90.

Assuming the curve rises with ``d`` (what d90 itself assumes), grid points below a decided failure fail and grid
points above a decided success pass, in the data and in (almost) every replicate; only the grid points between
the largest decided failure and the smallest decided success can move d90 or its interval, and those are trained
(:func:`undecided`). The first round trains every other grid point from the top (:func:`first_round`), so the
largest ``d`` is always trained. Then the bootstrap interval over the trained points is, up to the grid's
resolution, the one the whole grid would give; it is never narrowed by a skipped point unless the curve dips.
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.025


def first_round(grid: tuple[int, ...]) -> list[int]:
    """Every other grid point, from the largest down: ``(50, 105, 219, 457, 956, 2000) -> [105, 457, 2000]``."""
    return sorted(grid[::-1][::2])


def pass_fractions(scores: dict[int, list[float]], baseline_scores: list[float], global_baseline: float,
                   threshold: float, samples: int, seed: int) -> dict[int, float]:
    """``pass(d)`` for every evaluated ``d``: the fraction of bootstrap replicates reaching the line there."""
    rng = np.random.default_rng(seed)
    dims = sorted(scores)
    hits = np.zeros(len(dims))
    for _ in range(samples):
        base = rng.choice(baseline_scores, size=len(baseline_scores)).mean() if baseline_scores else global_baseline
        means = np.array([rng.choice(scores[d], size=len(scores[d])).mean() for d in dims])
        hits += means >= threshold * base
    return dict(zip(dims, hits / samples))


def undecided(grid: tuple[int, ...], passes: dict[int, float]) -> list[int]:
    """Grid points not trained yet between the largest decided failure and the smallest decided success."""
    failed = [d for d, p in passes.items() if p <= LEVEL]
    passed = [d for d, p in passes.items() if p >= 1 - LEVEL]
    low, high = max(failed, default=0), min(passed, default=math.inf)
    return [d for d in grid if low < d < high and d not in passes]


def midpoint(low: int, high: int) -> int | None:
    """The geometric midpoint ``round(sqrt(low * high))`` when it lies strictly between them, else ``None``."""
    mid = int(round(math.sqrt(low * high)))
    return mid if low < mid < high else None
