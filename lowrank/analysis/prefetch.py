"""Reading ahead on a background thread: the next item of an iterator is produced while the caller works on the
current one (safetensors reads and dtype conversions release the GIL), with at most ``depth`` items waiting, so
memory stays bounded by ``depth + 1`` items."""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` in order, producing each next one on a background thread; an exception raised while
    producing is raised here, at the item where it happened. Closing the generator stops the thread."""
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(waiting, (item, None), stop):
                    return
            _put(waiting, (_DONE, None), stop)
        except BaseException as error:  # handed to the consumer, which raises it
            _put(waiting, (_DONE, error), stop)

    worker = threading.Thread(target=produce, name="lowrank-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = waiting.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _put(waiting: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    """Put ``entry`` unless ``stop`` is set first; True when it was put."""
    while not stop.is_set():
        try:
            waiting.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
