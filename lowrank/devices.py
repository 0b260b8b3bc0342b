"""The one choice of device: a GPU when torch sees one, unless the caller asked for the CPU."""

from __future__ import annotations

import torch


def choose(wanted: str | None = "auto") -> str:
    """``wanted`` ("cpu", "cuda", "cuda:N") as given; "auto" or None -> ``"cuda"`` when a GPU is present, else
    ``"cpu"``."""
    if wanted in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def choose_available(wanted: str | None = "auto") -> str:
    """As :func:`choose`, but ``"cpu"`` whenever no GPU is present (a run that may fall back to the CPU)."""
    return choose(wanted) if torch.cuda.is_available() else "cpu"
