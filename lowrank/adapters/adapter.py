"""An opened adapter file: its modules, read one module's factors at a time (:class:`Adapter`), the factors
of one module's low-rank term (:class:`LoraUpdate`), and how a file format is recognised and opened
(:class:`Format`, one per format file, listed in :mod:`lowrank.adapters.registry`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from lowrank.adapters.config import AdapterConfig
from lowrank.adapters.layout import AdapterModule, FullyTrained
from lowrank.weights import Checkpoint
from lowrank.errors import LowrankError


@dataclass(frozen=True)
class LoraUpdate:
    """One module's low-rank term as factors: ``scale * B @ A``, shaped like the weight ``(out, in)`` (Conv1D's
    stored weight is its transpose; an embedding's is ``(vocab, dim)``; a convolution's is flattened to
    ``(out, in * k1 * k2)``). ``rank`` is the adapter's r for the module."""

    name: str
    B: torch.Tensor
    A: torch.Tensor
    scale: float
    kind: str
    rank: int


@dataclass(frozen=True)
class Format:
    """One adapter file format: a probe that tells its files from a path (reading headers only), and an opener.

    Attributes:
        name: the format's name, as errors and reports give it.
        supports: what the opener reads, in words; empty for a format that is recognised only to be refused by
            name.
        probe: ``probe(path)`` is True for a file or folder of this format.
        open: ``open(path, allow_pickle)`` gives the :class:`Adapter` (``allow_pickle``: whether a pickled
            weights file may be read, where the format has one), or raises LowrankError naming ``path``.
    """

    name: str
    supports: tuple[str, ...]
    probe: Callable[[Path], bool]
    open: Callable[[Path, bool], "Adapter"]


class Adapter:
    """An adapter's modules, read lazily. Build it with :func:`open_adapter`.

    Attributes:
        path: the folder or file given; format: ``"peft"``, ``"kohya"`` or ``"diffusers"``.
        config: the file's :class:`AdapterConfig` (peft), or None for a format without one (kohya / diffusers
            single files), whose modules' own ranks and alphas are the whole description; :meth:`peft_summary`
            gives such an adapter a peft-shaped config where one is asked for.
        modules: name -> :class:`AdapterModule`, in file order.
        trained_in_full: modules whose parameters the file stores in full.
        notes: what a reader of the report should know about how the file was read.
    """

    def __init__(self, path: Path, format: str, config: AdapterConfig | None, checkpoint: Checkpoint,
                 modules: dict[str, AdapterModule], trained_in_full: tuple[FullyTrained, ...], notes: tuple[str, ...]):
        self.path, self.format, self.config, self.checkpoint = path, format, config, checkpoint
        self.modules, self.trained_in_full, self.notes = modules, trained_in_full, notes

    @property
    def variant(self) -> str:
        """The update's form (:attr:`AdapterConfig.variant`); ``"lora"`` for a format without a config."""
        return self.config.variant if self.config is not None else "lora"

    def peft_summary(self) -> AdapterConfig:
        """The config a report shows: the file's, or for a format without one a peft-shaped summary of its modules:
        ``r`` = ``lora_alpha`` = the largest rank, no patterns or targets (each module's scale still comes from its
        own rank and alpha, :meth:`scale`)."""
        if self.config is not None:
            return self.config
        largest = max(module.rank for module in self.modules.values())
        return AdapterConfig(r=largest, lora_alpha=float(largest), target_modules=(), path=str(self.path))

    def scale(self, module: AdapterModule) -> float:
        if module.alpha is not None:
            return module.alpha / module.rank
        return self.config.scaling_for(module.name, module.rank)

    def tensor(self, key: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.checkpoint.tensor(key, dtype)

    def factors(self, module: AdapterModule, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``B (out, r)`` and ``A (r, in)`` of ``module``'s low-rank term (scale not applied)."""
        A, B = self.tensor(module.keys["A"], dtype), self.tensor(module.keys["B"], dtype)
        if "E" in module.keys:
            A = A * self.tensor(module.keys["E"], dtype).reshape(-1, 1)
        blocks = self.config.block_diagonal if self.config is not None else None
        side = blocks.side(module.name) if blocks else None
        if side == "A":
            A = torch.block_diag(*A.chunk(blocks.nblocks, dim=0))
        elif side == "B":
            B = torch.block_diag(*B.chunk(blocks.nblocks, dim=0))
        if module.layer_kind == "embedding":
            return A.T.contiguous(), B.T.contiguous()
        B, A = B.reshape(B.shape[0], -1), A.reshape(A.shape[0], -1)
        if (B.shape[0], A.shape[1]) != module.shape or B.shape[1] != A.shape[0]:
            raise LowrankError(f"{self.path}: module {module.name}'s factors {list(B.shape)} @ {list(A.shape)} do "
                               f"not give its update shape {list(module.shape)}")
        return B, A

    def magnitude(self, module: AdapterModule, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """DoRA's learned magnitude ``m`` (one entry per output row; per embedding dimension for embeddings)."""
        if "magnitude" not in module.keys:
            raise LowrankError(f"{self.path}: DoRA module {module.name} has no lora_magnitude_vector tensor")
        return self.tensor(module.keys["magnitude"], dtype).reshape(-1)

    def updates(self, dtype: torch.dtype = torch.float32, names: set[str] | None = None) -> Iterator[LoraUpdate]:
        """Each module's low-rank term as a :class:`LoraUpdate`, one module's tensors in memory at a time."""
        for module in self.modules.values():
            if names is None or module.name in names:
                B, A = self.factors(module, dtype)
                yield LoraUpdate(module.name, B, A, self.scale(module), module.layer_kind, module.rank)
