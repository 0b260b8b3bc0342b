"""Result records of an intrinsic-dimension measurement; the JSON (schema ``lowrank.intrinsic/1``) is the contract.

Fields that users and scripts rely on: ``schema, D, projection, said, metric, baseline, threshold, d90, curve``
with ``curve = [{"d", "scores", "mean"}]``. Extra fields: how the baseline was obtained and its per-seed scores,
a bootstrap interval for d90, a log-interpolated d90, what was projected and trained, and the training budget.
``d90`` is ``null`` when no ``d`` tried reached ``threshold * baseline`` (the curve then shows how close it got);
``d90_high`` is ``null`` when some bootstrap resamples reach the line at no ``d`` tried. ``search`` says how the
``d`` were chosen: ``"adaptive"`` (only the points of ``grid`` that could move d90 or its interval, see
``lowrank.intrinsic.adaptive``, plus bisections) or ``"grid"`` (all of ``grid``, plus bisections).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lowrank.errors import LowrankError

SCHEMA = "lowrank.intrinsic/1"


@dataclass(frozen=True)
class CurvePoint:
    """Scores (one per seed) of training in a ``d``-dimensional subspace, and their mean."""

    d: int
    scores: tuple[float, ...]
    mean: float

    def __post_init__(self) -> None:
        if self.d < 1 or not self.scores:
            raise LowrankError(f"curve point needs d >= 1 and at least one score, got d={self.d}, {self.scores}")
        if not math.isclose(self.mean, sum(self.scores) / len(self.scores), rel_tol=1e-9, abs_tol=1e-12):
            raise LowrankError(f"curve point d={self.d}: mean {self.mean} is not the mean of {self.scores}")

    @classmethod
    def of(cls, d: int, scores: list[float]) -> "CurvePoint":
        return cls(d, tuple(float(s) for s in scores), sum(scores) / len(scores))

    def to_dict(self) -> dict:
        return {"d": self.d, "scores": list(self.scores), "mean": self.mean}

    @classmethod
    def from_dict(cls, data: dict) -> "CurvePoint":
        return cls(int(data["d"]), tuple(float(s) for s in data["scores"]), float(data["mean"]))


@dataclass(frozen=True)
class TrainingBudget:
    """What every run got: optimizer steps, learning rates, batch size, seeds."""

    steps: int
    lr: float
    baseline_lr: float
    batch_size: int
    seeds: int
    seed: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingBudget":
        return cls(int(data["steps"]), float(data["lr"]), float(data["baseline_lr"]), int(data["batch_size"]),
                   int(data["seeds"]), int(data["seed"]))


@dataclass(frozen=True)
class IntrinsicResult:
    """The d90 measurement: ``d90`` = smallest ``d`` whose mean score reaches ``threshold * baseline``."""

    D: int
    projection: str
    said: bool
    metric: str
    baseline: float
    threshold: float
    d90: int | None
    curve: tuple[CurvePoint, ...]
    baseline_kind: str
    baseline_scores: tuple[float, ...]
    d90_low: int | None
    d90_high: int | None
    d90_interpolated: float | None
    layout: str
    model: str
    data: str
    projected_tensors: int
    direct_patterns: tuple[str, ...]
    direct_parameters: int
    budget: TrainingBudget
    elapsed_s: float
    extra: dict = field(default_factory=dict)
    search: str = "grid"
    grid: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.search not in ("adaptive", "grid"):
            raise LowrankError(f"search must be 'adaptive' or 'grid', got {self.search!r}")
        if self.baseline_kind not in ("direct", "global"):
            raise LowrankError(f"baseline_kind must be 'direct' or 'global', got {self.baseline_kind!r}")
        if [p.d for p in self.curve] != sorted({p.d for p in self.curve}):
            raise LowrankError("curve points must have distinct d in increasing order")

    @property
    def target(self) -> float:
        """The line to reach: ``threshold * baseline``."""
        return self.threshold * self.baseline

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA, "D": self.D, "projection": self.projection, "said": self.said, "metric": self.metric,
            "baseline": self.baseline, "threshold": self.threshold, "d90": self.d90,
            "curve": [p.to_dict() for p in self.curve],
            "baseline_kind": self.baseline_kind, "baseline_scores": list(self.baseline_scores),
            "d90_low": self.d90_low, "d90_high": self.d90_high, "d90_interpolated": self.d90_interpolated,
            "layout": self.layout, "model": self.model, "data": self.data,
            "projected_tensors": self.projected_tensors, "direct_patterns": list(self.direct_patterns),
            "direct_parameters": self.direct_parameters, "budget": self.budget.to_dict(),
            "elapsed_s": self.elapsed_s, "extra": dict(self.extra), "search": self.search, "grid": list(self.grid),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "IntrinsicResult":
        if data.get("schema") != SCHEMA:
            raise LowrankError(f"expected schema {SCHEMA!r}, got {data.get('schema')!r}")
        optional_int = lambda v: None if v is None else int(v)  # noqa: E731
        return cls(
            D=int(data["D"]), projection=str(data["projection"]), said=bool(data["said"]),
            metric=str(data["metric"]), baseline=float(data["baseline"]), threshold=float(data["threshold"]),
            d90=optional_int(data["d90"]), curve=tuple(CurvePoint.from_dict(p) for p in data["curve"]),
            baseline_kind=str(data["baseline_kind"]),
            baseline_scores=tuple(float(s) for s in data["baseline_scores"]),
            d90_low=optional_int(data["d90_low"]), d90_high=optional_int(data["d90_high"]),
            d90_interpolated=None if data["d90_interpolated"] is None else float(data["d90_interpolated"]),
            layout=str(data["layout"]), model=str(data["model"]), data=str(data["data"]),
            projected_tensors=int(data["projected_tensors"]), direct_patterns=tuple(data["direct_patterns"]),
            direct_parameters=int(data["direct_parameters"]), budget=TrainingBudget.from_dict(data["budget"]),
            elapsed_s=float(data["elapsed_s"]), extra=dict(data.get("extra", {})),
            search=str(data.get("search", "grid")), grid=tuple(int(d) for d in data.get("grid", ())),
        )
