"""What ``suggest-rank`` is asked: the planned run, the budget, and the allocation signal with its settings."""

from __future__ import annotations

from dataclasses import dataclass

from lowrank.advice.planning.registry import SIGNALS, summary
from lowrank.advice.planning.settings import SignalSettings
from lowrank.errors import LowrankError
from lowrank.options import option
from lowrank.train_config import TrainConfig


@dataclass(frozen=True)
class SuggestConfig:
    """Args:
        train: the training run being planned (model, data, targets, epochs, batch size, seed...).
        budget: trainable LoRA parameters to spend; or ``rank``: spend what this rank on every module costs.
        signal: a name in :data:`~lowrank.advice.planning.registry.SIGNALS`: ``"gradient"`` (default) or
            ``"probe"``.
        examples: training examples in the gradient sample.
        probe_rank: rank of the probe; probe_fraction: its steps as a fraction of the planned run's.
        max_rank: the largest rank one module may get.
    """

    train: TrainConfig
    budget: int | None = option(None, "Trainable LoRA parameters to spend.")
    rank: int | None = option(None, "Spend what this rank on every target module costs.")
    signal: str = option("gradient", " ".join(f"{name}: {summary(name)}" for name in SIGNALS), choices=tuple(SIGNALS))
    examples: int = option(256, "Training examples for the gradient.")
    probe_rank: int = option(64)
    probe_fraction: float = option(0.1, "Probe steps as a fraction of the planned run's.")
    max_rank: int = 256

    def __post_init__(self) -> None:
        if (self.budget is None) == (self.rank is None):
            raise LowrankError("give exactly one of --budget (parameters) and --rank (the uniform rank to match)")
        if (self.budget is not None and self.budget < 1) or (self.rank is not None and self.rank < 1):
            raise LowrankError("--budget and --rank must be >= 1")
        if self.signal not in SIGNALS:
            raise LowrankError(f"signal must be one of {', '.join(SIGNALS)}, got {self.signal!r}")
        if not 0 < self.probe_fraction <= 1 or self.probe_rank < 1 or self.examples < 1 or self.max_rank < 1:
            raise LowrankError("probe fraction must be in (0, 1]; probe rank, examples and max rank >= 1")

    @property
    def settings(self) -> SignalSettings:
        """What the signal reads besides :attr:`train`."""
        return SignalSettings(self.examples, self.probe_rank, self.probe_fraction, self.max_rank)
