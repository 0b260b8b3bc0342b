"""Outputs that appear whole or not at all.

Every file or folder lowrank writes is first built under a temporary name beside its destination and renamed
into place only once complete, so an error part-way leaves no half-written output and never touches the inputs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from lowrank.errors import LowrankError


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename (mode 0644 less the
    umask, like a plain open())."""
    path = Path(path)
    if path.is_dir():
        raise LowrankError(f"{path} is a folder, expected a file path")
    if not path.parent.exists():
        raise LowrankError(f"folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty folder unless ``overwrite``; refuse a path that is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LowrankError(f"--out {path} exists and is a file, expected a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise LowrankError(f"--out {path} exists and is not empty (pass --overwrite to replace it)")
    return path


@contextlib.contextmanager
def staged_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` when the block ends without an exception.

    On any exception the temporary folder is removed and ``path`` is left exactly as it was.
    """
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
