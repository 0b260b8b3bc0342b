"""What ``suggest-rank`` is asked: the planned run, the budget, and the allocation signal with its settings."""

from __future__ import annotations

from dataclasses import dataclass

from lowrank.advice.planning.registry import SIGNALS
from lowrank.advice.planning.settings import SignalSettings
from lowrank.errors import LowrankError
from lowrank.training.config import TrainConfig


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
    budget: int | None = None
    rank: int | None = None
    signal: str = "gradient"
    examples: int = 256
    probe_rank: int = 64
    probe_fraction: float = 0.1
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
