"""The allocation signals by name: each takes the planned run (:class:`~lowrank.train_config.TrainConfig`) and
the :class:`~lowrank.advice.planning.settings.SignalSettings`, and returns one descending spectrum per target module
(:class:`~lowrank.advice.planning.allocate.ModuleSignal`) and the seconds it took; its docstring's first line is
its ``suggest-rank --help`` text. ``suggest-rank --signal`` lists its choices from :data:`SIGNALS`: a new signal is
a file with that signature and a line here.
"""

from __future__ import annotations

from typing import Callable

from lowrank.advice.planning.allocate import ModuleSignal
from lowrank.advice.planning.gradient_signal import gradient_signal
from lowrank.advice.planning.probe_signal import probe_signal
from lowrank.advice.planning.settings import SignalSettings
from lowrank.train_config import TrainConfig

SIGNALS: dict[str, Callable[[TrainConfig, SignalSettings], tuple[list[ModuleSignal], float]]] = {
    "gradient": gradient_signal,
    "probe": probe_signal,
}


def summary(name: str) -> str:
    """The first line of signal ``name``'s docstring, as ``suggest-rank --help`` shows it."""
    return SIGNALS[name].__doc__.splitlines()[0]
