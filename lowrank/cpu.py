"""CPU resources: a single-thread block for small or side-by-side linear algebra, handing freed heap back to the OS
between the modules of analyze, extract and resize, and keeping it for the steps of CPU training."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Iterator

import torch


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one thread inside the block: on a loaded 2-core machine, two threads made tall-skinny QRs and
    mid-sized SVDs many times slower (reports/analyze_benchmarks.md)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()
_MALLOC_TRIM, _MALLOPT = getattr(_LIBC, "malloc_trim", None), getattr(_LIBC, "mallopt", None)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> None:
    """glibc ``mallopt`` (a no-op elsewhere): blocks under ``mmap_threshold`` come from the heap, and up to
    ``trim_threshold`` of freed heap stays mapped. A training step frees and allocates tensors of the same sizes again
    and again; under glibc's defaults some are mapped afresh or handed back to the OS each step, and every page of
    them faults again at its first touch. Keeping them mapped raised the demo's CPU throughput
    (reports/training_speed.md, "Lockstep"), at the cost of keeping the step's peak heap mapped."""
    if _MALLOPT is not None:
        _MALLOPT(M_MMAP_THRESHOLD, mmap_threshold)
        _MALLOPT(M_TRIM_THRESHOLD, trim_threshold)


def release_freed_memory() -> None:
    """glibc ``malloc_trim(0)`` (a no-op elsewhere). glibc keeps freed blocks below its dynamic mmap threshold
    (up to 32 MB) in the heap for reuse; with matrices of many sizes passing through, that retained heap grew the
    peak RSS of an analysis (reports/analyze_benchmarks.md)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
