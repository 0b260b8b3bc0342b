"""What an adapter file holds, from its safetensors header alone: one :class:`AdapterModule` per adapted module
and the modules trained in full beside it.

Keys are grouped by their role suffix (:mod:`lowrank.adapters.keys`); every other tensor belongs to a module
trained in full.

A convolution's update acts as the matrix ``(out, in * k1 * k2)``: ``B.reshape(out, r) @ A.reshape(r, -1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lowrank.adapters.config import BlockDiagonal
from lowrank.adapters.keys import EMBEDDING_A, EMBEDDING_B, PREFIX, ROLES
from lowrank.weights import TensorInfo, module_kind
from lowrank.errors import LowrankError



@dataclass(frozen=True)
class AdapterModule:
    """One adapted module as its file stores it.

    Attributes:
        name: module path in the model, without peft's prefix.
        keys: role (``"A"``, ``"B"``, and where present ``"E"``, ``"magnitude"``, ``"bias"``) -> tensor key.
        shape: ``(out, in)`` of the update as a matrix (embeddings: the weight's ``(vocab, dim)``; convolutions:
            ``(out, in * k1 * k2)``).
        rank: r, the number of rank-one terms the file stores (after AdaLoRA's pruning).
        layer_kind: ``"linear"``, ``"conv1d"`` (GPT-2's Conv1D), ``"embedding"`` or ``"conv"``.
        alpha: the module's alpha where the file stores one (kohya's ``.alpha``), else None (from the config).
    """

    name: str
    keys: dict
    shape: tuple[int, int]
    rank: int
    layer_kind: str
    alpha: float | None = None


@dataclass(frozen=True)
class FullyTrained:
    """A module whose parameters the adapter file stores in full: its name, tensor keys and parameter count."""

    name: str
    keys: tuple[str, ...]
    parameters: int


def peft_layout(tensors: dict[str, TensorInfo], path: Path, block_diagonal: BlockDiagonal | None = None
                ) -> tuple[dict[str, AdapterModule], tuple[FullyTrained, ...]]:
    """Group a peft adapter file's tensors into modules (with ``block_diagonal``, the factor it names per module is
    stored as ``nblocks`` blocks).

    Raises:
        LowrankError: an unpaired factor, shapes that do not combine, or no LoRA tensor at all (naming ``path``).
    """
    roles: dict[str, dict[str, str]] = {}
    embedding: set[str] = set()
    rest: dict[str, list[str]] = {}
    for key in tensors:
        for suffix, role in ROLES:
            if key.endswith(suffix):
                name = key[: -len(suffix)].removeprefix(PREFIX)
                roles.setdefault(name, {})[role] = key
                if suffix in (EMBEDDING_A, EMBEDDING_B):
                    embedding.add(name)
                break
        else:
            rest.setdefault(key.removeprefix(PREFIX).rpartition(".")[0], []).append(key)
    modules = {}
    for name, keys in roles.items():
        for needed in ("A", "B"):
            if needed not in keys:
                raise LowrankError(f"{path}: module {name} has no {'lora_' + needed} tensor")
        side = block_diagonal.side(name) if block_diagonal else None
        modules[name] = _module(name, keys, tensors, path, name in embedding, side,
                                block_diagonal.nblocks if block_diagonal else 1)
    if not modules:
        raise LowrankError(f"{path} holds no LoRA tensors (no *.lora_A.weight keys)")
    full = tuple(FullyTrained(name, tuple(keys), sum(math.prod(tensors[k].shape) for k in keys))
                 for name, keys in rest.items())
    return modules, full


def _module(name: str, keys: dict, tensors: dict[str, TensorInfo], path: Path, embedding: bool,
            side: str | None, nblocks: int) -> AdapterModule:
    a, b = tensors[keys["A"]].shape, tensors[keys["B"]].shape
    rank = a[0] if side != "B" else b[1] * nblocks
    inputs = math.prod(a[1:]) * (nblocks if side == "A" else 1)
    if len(a) < 2 or len(a) != len(b) or any(d != 1 for d in b[2:]) or (side is None and a[0] != b[1]):
        raise LowrankError(f"{path}: module {name} has lora_A {list(a)} and lora_B {list(b)}, which do not "
                           "combine as (r, in[, k...]) and (out, r[, 1...])")
    if embedding:
        return AdapterModule(name, keys, (a[1], b[0]), rank, "embedding")
    kind = "conv" if len(a) > 2 else module_kind(name) if module_kind(name) == "conv1d" else "linear"
    return AdapterModule(name, keys, (b[0], inputs), rank, kind)
