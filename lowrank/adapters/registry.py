"""Every adapter file format lowrank recognises, and the one place a path's format is detected.

:data:`FORMATS` lists one :class:`lowrank.adapters.adapter.Format` (a probe and an opener) per format file, tried
in order: the first whose probe claims a path opens it. Adding a format is one file that defines its ``Format``
and one line here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from lowrank.adapters import kohya, loha, peft_folder
from lowrank.adapters.adapter import Adapter, Format, LoraUpdate
from lowrank.errors import LowrankError

FORMATS = (
    peft_folder.PEFT,
    loha.LOHA,
    kohya.SINGLE_FILE,
)


def detect(path: str | Path) -> Format | None:
    """The format of the file or folder at ``path``, or None when no format's probe claims it."""
    path = Path(path)
    return next((found for found in FORMATS if found.probe(path)), None)


def open_adapter(path: str | Path, allow_pickle: bool = False) -> Adapter:
    """The adapter at ``path``, opened by its format. A path no probe claims is opened as a peft folder when it is a
    folder and as a single-file LoRA otherwise, whose openers say what is wrong with it."""
    path = Path(path)
    found = detect(path)
    if found is None:
        found = peft_folder.PEFT if path.is_dir() else kohya.SINGLE_FILE
    return found.open(path, allow_pickle)


def iter_lora_updates(path: str | Path, dtype: torch.dtype = torch.float32) -> Iterator[LoraUpdate]:
    """Yield each module's :class:`LoraUpdate` of a plain-LoRA adapter (memory-mapped, one module at a time).

    Raises:
        LowrankError: for an adapter whose update is not its low-rank term alone (DoRA, unconverted PiSSA/OLoRA):
            those need the base; see :mod:`lowrank.adapters.variants`.
    """
    adapter = open_adapter(path)
    if adapter.variant in peft_folder.NEEDS_BASE:
        raise LowrankError(f"{adapter.path}: a {peft_folder.NEEDS_BASE[adapter.variant]} adapter's update depends "
                           "on the base weights W0, not on its factors alone")
    yield from adapter.updates(dtype)
