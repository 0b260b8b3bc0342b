"""LyCORIS LoHa files (kohya's layout), recognised to be refused by name.

Per module ``<stem>.hada_w1_a`` (out, r), ``.hada_w1_b`` (r, in), ``.hada_w2_a``, ``.hada_w2_b``, optionally
``.hada_t1`` / ``.hada_t2`` (convolutions, CP-decomposed) and ``.alpha``: the update is the Hadamard (elementwise)
product ``dW = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / r``, of rank up to r^2, not a low-rank term ``s B A``.
"""

from __future__ import annotations

from pathlib import Path

from lowrank.adapters.adapter import Adapter, Format
from lowrank.adapters.kohya import safetensors_keys
from lowrank.errors import LowrankError

SUFFIX = ".hada_w1_a"


def is_loha(path: Path) -> bool:
    """True for a ``.safetensors`` file with a LoHa factor (``*.hada_w1_a``)."""
    return any(key.endswith(SUFFIX) for key in safetensors_keys(path))


def refuse(path: Path, allow_pickle: bool) -> Adapter:
    """Raise the LowrankError that names a LoHa file for what it is."""
    key = next(key for key in safetensors_keys(path) if key.endswith(SUFFIX))
    raise LowrankError(f"{path} holds LoHa tensors ({key}), so it is a LyCORIS LoHa adapter: its update is a "
                       "Hadamard product of two low-rank factors, not a low-rank update; lowrank reads LoRA (peft "
                       "folders, kohya lora_down / lora_up and diffusers files)")


LOHA = Format("LyCORIS LoHa", (), is_loha, refuse)
