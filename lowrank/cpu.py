"""CPU resources of module-at-a-time work (analyze, extract, resize): a single-thread block for small or
side-by-side linear algebra, and handing freed heap back to the OS between modules."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Iterator

import torch


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one thread inside the block: on a loaded 2-core machine two threads made an 11008 x 16 QR 40x
    slower (reports/analyze_benchmarks.md) and a 1536 x 384 SVD 14x slower (2.2 s against 0.15 s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _libc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_trim()


def release_freed_memory() -> None:
    """glibc ``malloc_trim(0)`` (a no-op elsewhere). glibc keeps freed blocks below its dynamic mmap threshold
    (up to 32 MB) in the heap for reuse; with matrices of many sizes passing through, that retained heap grew the
    peak RSS of an 8-layer analysis by about 100 MB."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
