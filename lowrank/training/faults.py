"""Fault-injection points of a training run: named places where a test makes the real machinery fail.

``fire(point, value, **context)`` passes ``value`` through every hook installed at ``point`` and returns what the
last one returns; with no hook installed (every production run) it returns ``value`` after one dict lookup.

Points and their context:

- ``"step"``: after each optimizer step, ``step`` = steps done (a hook may kill the process or send a signal);
- ``"loss"``: a micro-batch's loss tensor, ``step`` = the step it belongs to (a hook may return NaN);
- ``"checkpoint_write"``: after each chunk written to a checkpoint's temporary file, ``step``, ``written`` bytes
  (a hook may raise OSError(ENOSPC), or kill the process mid-write);
- ``"evaluate"``: before an evaluation, ``step`` (a hook may raise, as an out-of-memory evaluation would);
- ``"save_result"``: before the final adapter / model files are moved into place (a hook may raise ENOSPC).

tests/test_faults.py and tests/fault_driver.py (which installs hooks in a child process, then runs the CLI) use
them; nothing in lowrank installs one.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

POINTS = ("step", "loss", "checkpoint_write", "evaluate", "save_result")
_HOOKS: dict[str, list[Callable]] = {}


def fire(point: str, value=None, **context):
    """Run the hooks installed at ``point``: ``value = hook(value, **context)`` for each; return ``value``."""
    for hook in _HOOKS.get(point, ()):
        value = hook(value, **context)
    return value


def installed(point: str) -> bool:
    """Whether a hook is installed at ``point``."""
    return bool(_HOOKS.get(point))


def install(point: str, hook: Callable) -> None:
    """Add ``hook(value, **context) -> value`` at ``point`` (one of :data:`POINTS`)."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; choose one of {', '.join(POINTS)}")
    _HOOKS.setdefault(point, []).append(hook)


@contextlib.contextmanager
def injected(point: str, hook: Callable) -> Iterator[None]:
    """Install ``hook`` at ``point`` for the duration of the block."""
    install(point, hook)
    try:
        yield
    finally:
        _HOOKS[point].remove(hook)
