"""Where updates come from, one module at a time: a peft adapter folder (``dW = s B A`` as factors, factored SVD,
exact, ``O((m + n) r^2)``) or a full model against the base (``dW = W1 - W0``, exact dense SVD). Each source lists
its modules from file headers and yields :class:`Update` records lazily, so memory stays bounded by one module.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from lowrank.adapters import PREFIX, WEIGHTS_FILE, is_adapter_folder, iter_lora_updates, read_adapter_config
from lowrank import spectra
from lowrank.analysis.checkpoints import Checkpoint, find_name, match_modules, module_kind, open_checkpoint
from lowrank.analysis.config import AnalyzeConfig
from lowrank.errors import LowrankError


@dataclass(frozen=True)
class Update:
    """One module's update, ready to measure: its SVD and, when a base is known, ``W0`` and ``W1 = W0 + dW``."""

    name: str
    kind: str
    layer_kind: str
    rank: int | None
    scale: float | None
    svd: spectra.SVD
    W0: torch.Tensor | None
    W1: torch.Tensor | None


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: the factored SVD's tall-skinny QRs (m x r) are too small to
    gain from threads, and on a loaded 2-core machine two threads made each QR 40x slower (166 ms vs 4 ms for
    11008 x 16 measured here)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LoraSource:
    """A peft adapter folder: module names and ranks from the safetensors header, updates read lazily."""

    kind = "lora"

    def __init__(self, folder: Path, base: Checkpoint | None):
        self.path = folder
        self.config = read_adapter_config(folder)
        self.shapes, self.ranks = _adapter_shapes(folder / WEIGHTS_FILE)
        self.names = list(self.shapes)
        self.base = base
        self.base_names = _base_names(self, base) if base is not None else {}
        self.not_in_base: tuple[str, ...] = ()
        self.only_in_base: tuple[str, ...] = ()
        self.unchanged: list[str] = []

    def updates(self, wanted: set[str], dtype: torch.dtype, device: torch.device,
                with_base: bool) -> Iterator[Update]:
        items = iter_lora_updates(self.path, dtype=torch.float32)  # exact for fp32/bf16/fp16 factors
        while True:
            with single_thread():
                item = next(items, None)
                if item is None:
                    return
                if item.name not in wanted:
                    continue
                svd = spectra.lora_svd(item.B.to(device), item.A.to(device), item.scale)  # float64 QR, r x r SVD
            w0 = w1 = None
            if with_base and self.base is not None:
                w0 = self.base.weight(self.base_names[item.name], dtype).to(device)
                w1 = w0 + (svd.U * svd.S).to(dtype) @ svd.Vh.to(dtype)  # dW formed once, in the compute dtype
            yield Update(item.name, "lora", item.kind, item.rank, item.scale, svd, w0, w1)


def _adapter_shapes(file: Path) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """``(out, in)`` of each module's update and its rank, from the adapter's safetensors header."""
    tensors = open_checkpoint(file).tensors
    shapes, ranks = {}, {}
    for key, info in tensors.items():
        for a_suffix, b_suffix, embedding in ((".lora_A.weight", ".lora_B.weight", False),
                                              (".lora_embedding_A", ".lora_embedding_B", True)):
            if not key.endswith(a_suffix):
                continue
            stem = key[: -len(a_suffix)]
            name = stem.removeprefix(PREFIX)
            other = tensors.get(stem + b_suffix)
            if other is None:
                raise LowrankError(f"{file}: module {name} has {a_suffix.lstrip('.')} but no "
                                   f"{b_suffix.lstrip('.')} tensor")
            if len(info.shape) != 2 or len(other.shape) != 2:
                raise LowrankError(f"{file}: module {name} has {len(info.shape)}-D lora_A and {len(other.shape)}-D "
                                   "lora_B tensors (a Conv2d or merged-QKV LoRA); lowrank reads LoRA on linear, "
                                   "Conv1D and embedding layers only")
            shapes[name] = (info.shape[1], other.shape[0]) if embedding else (other.shape[0], info.shape[1])
            ranks[name] = info.shape[0]
    orphans = [k for k in tensors if k.endswith((".lora_B.weight", ".lora_embedding_B"))
               and k.replace("lora_B", "lora_A").replace("lora_embedding_B", "lora_embedding_A") not in tensors]
    if orphans:
        raise LowrankError(f"{file}: tensor {orphans[0]} has no matching lora_A tensor")
    if not shapes:
        raise LowrankError(f"{file} holds no LoRA tensors (no *.lora_A.weight keys)")
    return shapes, ranks


def _base_names(source: LoraSource, base: Checkpoint) -> dict[str, str]:
    available = set(base.modules())
    names = {}
    for name, shape in source.shapes.items():
        found = find_name(name, available)
        if found is None:
            raise LowrankError(f"the base {base.path} has no weight for adapted module {name}; is it the right base?")
        if base.weight_shape(found) != shape:
            raise LowrankError(f"module {name}: the adapter's update has shape {list(shape)} but the base "
                               f"{base.path} weight {found} has shape {list(base.weight_shape(found))}")
        names[name] = found
    return names


class FullSource:
    """A full fine-tuned model against the base: ``dW = W1 - W0`` per matched 2-D weight, exact dense SVD."""

    kind = "full"

    def __init__(self, path: Path, base: Checkpoint | None, allow_pickle: bool, compute_uv: bool):
        if base is None:
            raise LowrankError(f"{path} is a full model, not a peft adapter (no adapter_config.json); pass "
                               "--base MODEL to give the pre-trained weights W0")
        self.path = path
        self.base = base
        self.tuned = open_checkpoint(path, allow_pickle)
        match = match_modules(self.tuned, base)
        self.pairs = match.pairs
        self.names = [name for name, _ in match.pairs]
        self.shapes = {name: self.tuned.weight_shape(name) for name in self.names}
        self.ranks: dict[str, int] = {}
        self.not_in_base, self.only_in_base = match.only_tuned, match.only_base
        self.compute_uv = compute_uv
        self.unchanged: list[str] = []

    def updates(self, wanted: set[str], dtype: torch.dtype, device: torch.device,
                with_base: bool) -> Iterator[Update]:
        """One module at a time: W1 and W0 read (W0 dropped at once unless base metrics need it), dW formed
        in place, its SVD taken; peak memory is about three ``(out, in)`` matrices in the compute dtype."""
        keep = with_base and self.compute_uv
        for name, base_name in self.pairs:
            if name not in wanted:
                continue
            w1, w0 = self.tuned.weight(name, dtype).to(device), self.base.weight(base_name, dtype).to(device)
            delta = w1 - w0 if keep else w1.sub_(w0)
            if not keep:
                del w0, w1
            if not bool(delta.any()):
                self.unchanged.append(name)
                continue
            svd = spectra.dense_svd(delta, dtype=dtype, compute_uv=self.compute_uv)
            del delta
            yield Update(name, "full", module_kind(name), None, None, svd, w0 if keep else None,
                         w1 if keep else None)


def open_source(path: str, base: Checkpoint | None, config: AnalyzeConfig, compute_uv: bool):
    """A :class:`LoraSource` for a peft adapter folder, else a :class:`FullSource` (which needs ``base``)."""
    where = Path(path).expanduser()
    if not where.exists():
        raise LowrankError(f"{where} does not exist")
    if where.is_dir() and is_adapter_folder(where):
        return LoraSource(where, base)
    return FullSource(where, base, config.allow_pickle, compute_uv)
