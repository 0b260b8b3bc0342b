"""A rich progress bar behind lowrank's progress-callback convention.

Library functions take ``progress: Callable[[ProgressEvent], None] | None``; the CLI passes :func:`rich_progress`'s
callback, which shows one bar per task description on stderr (stdout stays clean for ``--json -``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lowrank.progress import ProgressEvent


@contextlib.contextmanager
def rich_progress(enabled: bool = True, after: float = 0.0) -> Iterator[Callable[[ProgressEvent], None]]:
    """Yield a callback that draws each :class:`ProgressEvent` as a bar; a no-op callback when disabled. Nothing is
    drawn before the first event (an early error prints its one line alone), and with ``after`` seconds, nothing for
    work that ends sooner than that after the block began."""
    if not enabled:
        yield lambda event: None
        return
    began = time.monotonic()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    tasks: dict[str, int] = {}

    with contextlib.ExitStack() as shown:
        def callback(event: ProgressEvent) -> None:
            if not tasks and time.monotonic() - began < after:
                return
            if not tasks:
                shown.enter_context(progress)
            if event.task not in tasks:
                tasks[event.task] = progress.add_task(event.task, total=event.total, info="")
            progress.update(tasks[event.task], completed=event.done, total=event.total, info=event.info)

        yield callback
