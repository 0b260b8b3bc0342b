"""What every allocation signal is given besides the planned run: the settings of
:class:`~lowrank.advice.planning.config.SuggestConfig` that signals read (checked there)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SignalSettings:
    """Args:
        examples: training examples in the gradient sample.
        probe_rank: rank of the probe; probe_fraction: its steps as a fraction of the planned run's.
        max_rank: the largest rank one module may get (no spectrum needs more values).
    """

    examples: int
    probe_rank: int
    probe_fraction: float
    max_rank: int
