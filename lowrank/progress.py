"""The progress-callback convention: library code reports, the CLI draws.

A long-running function takes ``progress: ProgressCallback | None`` and calls it with a :class:`ProgressEvent`
after each unit of work. lowrank/ never prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units of ``task`` are finished; ``info`` is a short status such as the loss."""

    task: str
    done: int
    total: int
    info: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


def report(progress: ProgressCallback | None, task: str, done: int, total: int, info: str = "") -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(ProgressEvent(task, done, total, info))
