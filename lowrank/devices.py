"""The one choice of device: a GPU when torch sees one, unless the caller asked for the CPU; and the one check
that a device the user named exists here."""

from __future__ import annotations

import torch

from lowrank.errors import LowrankError


def choose(wanted: str | None = "auto") -> str:
    """``wanted`` ("cpu", "cuda", "cuda:N") as given; "auto" or None -> ``"cuda"`` when a GPU is present, else
    ``"cpu"``."""
    if wanted in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def choose_available(wanted: str | None = "auto") -> str:
    """As :func:`choose`, but ``"cpu"`` whenever no GPU is present (a run that may fall back to the CPU)."""
    return choose(wanted) if torch.cuda.is_available() else "cpu"


def checked(name: str) -> torch.device:
    """The torch device ``name`` ("cpu", "cuda", "cuda:N") names, if this machine has it.

    Raises:
        LowrankError: not a device name, not cpu or cuda, or a GPU this machine does not have.
    """
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise LowrankError(f"device {name!r} is not a torch device: {error}") from None
    cuda_ok = torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not cuda_ok):
        raise LowrankError(f"device {name!r} is not available here (cpu, or cuda when a GPU is present)")
    return device
