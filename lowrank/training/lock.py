"""One training run per output folder: an exclusive ``flock`` on the ``--out`` folder itself.

The lock is taken on an open descriptor of the folder (no lock file is written), so the kernel releases it when
the process ends in any way, ``kill -9`` included: a crashed run never leaves a stale lock behind, and a second
run on the same folder is refused while the first one lives. Local file systems only (``flock`` on NFS is
emulated and may not exclude other hosts).

A folder this run created and left empty (a failure before anything was trained) is removed on the way out.
On several processes only rank 0, the one that writes, holds the lock (``held``); for the others it does nothing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from lowrank.errors import LowrankError


class OutputLock:
    """Context manager: ``acquire`` locks ``out`` if it exists; :meth:`claim` creates, locks and empties it. With
    ``held`` False (a rank other than 0) both do nothing."""

    def __init__(self, out: Path, held: bool = True):
        self.out, self.held, self._fd, self._created = Path(out), held, None, False

    def __enter__(self) -> "OutputLock":
        if self.held and self.out.is_dir():
            self._lock()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None and self._created and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def claim(self) -> None:
        """Create ``out`` (parents too) if needed, lock it, and remove what it holds (a fresh run; the caller has
        already refused a non-empty folder without --overwrite)."""
        if not self.held:
            return
        if not self.out.exists():
            self.out.mkdir(parents=True, exist_ok=True)
            self._created = True
        if self._fd is None:
            self._lock()
        for item in self.out.iterdir():
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()

    def _lock(self) -> None:
        fd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LowrankError(f"--out {self.out} is in use by another lowrank train run (it holds a lock on the "
                               "folder); wait for that run to end, or choose another --out") from None
        self._fd = fd
