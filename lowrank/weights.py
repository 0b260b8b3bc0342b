"""Hugging Face model folders and safetensors files, read lazily: one tensor at a time, memory-mapped.

A :class:`Checkpoint` knows every tensor's key, shape and file from the safetensors headers alone; a tensor's bytes
are read only when asked for, through a ``safe_open`` handle that is closed right after the copy, so the mapped
pages leave the process again and memory stays bounded by the one tensor in use, whatever the checkpoint size.

Accepted: a ``*.safetensors`` file; a folder with one ``*.safetensors`` file (``model.safetensors``) or shards
named by ``model.safetensors.index.json``; fp32, bf16, fp16 or fp64 tensors. Pickle files (``.bin``, ``.pt``,
``.pth``, ``.ckpt``) run code when unpickled: they are refused unless ``allow_pickle=True``, and even then read
with ``torch.load(weights_only=True)``, which only rebuilds tensors.

Module names: a weight key ``"<module>.weight"`` of a 2-D tensor names the module ``<module>``. A base model may
store keys without the task model's prefix (a ``BertModel`` has ``encoder.layer.0...`` where the fine-tuned
``BertForSequenceClassification`` has ``bert.encoder.layer.0...``): :func:`match_modules` strips or adds one
known prefix when the direct name is missing. GPT-2's Conv1D stores its weight as ``(in, out)``;
:meth:`Checkpoint.weight` returns every weight as ``(out, in)``, the ``nn.Linear`` convention.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open

from lowrank.errors import LowrankError
from lowrank.headers import check_safetensors_header, check_shapes, read_weight_map

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
INDEX_NAME = "model.safetensors.index.json"
INDEX_SUFFIX = ".safetensors.index.json"
PIPELINE_INDEX = "model_index.json"
MODEL_PREFIXES = ("base_model.model.", "bert.", "roberta.", "distilbert.", "deberta.", "electra.", "albert.",
                  "model.", "transformer.", "gpt_neox.")
_CONV1D = re.compile(r"(^|\.)(c_attn|c_proj|c_fc|q_attn)$")
_EMBEDDING = re.compile(r"(embed|(^|\.)wte$|(^|\.)wpe$|(^|\.)shared$)")
_COMPUTE_DTYPES = (torch.float32, torch.float64)


def module_kind(module: str) -> str:
    """``"conv1d"`` for GPT-2's Conv1D modules (stored ``(in, out)``), ``"embedding"`` for embeddings, else ``"linear"``."""
    if _CONV1D.search(module):
        return "conv1d"
    return "embedding" if _EMBEDDING.search(module) else "linear"


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its ``key``, the ``file`` holding it, its stored ``shape`` and ``dtype`` name."""

    key: str
    file: Path
    shape: tuple[int, ...]
    dtype: str


class Checkpoint:
    """The tensors of one model checkpoint, indexed by key; bytes are read on demand, one tensor at a time.

    Build it with :func:`open_checkpoint`. ``tensors`` maps key -> :class:`TensorInfo`; for an opted-in pickle file
    the whole state dict is held in ``_loaded`` (pickles cannot be read lazily).
    """

    def __init__(self, path: Path, tensors: dict[str, TensorInfo], loaded: dict[str, torch.Tensor] | None = None):
        self.path = path
        self.tensors = tensors
        self._loaded = loaded

    def modules(self) -> list[str]:
        """Names of modules with a 2-D (linear, embedding) or 3-D / 4-D (convolution) ``.weight``, in file order."""
        return [k[: -len(".weight")] for k, t in self.tensors.items()
                if k.endswith(".weight") and 2 <= len(t.shape) <= 4]

    def weight_shape(self, module: str) -> tuple[int, int]:
        """Shape of ``module``'s weight as the matrix ``(out, in)``: Conv1D's stored ``(in, out)`` transposed, a
        convolution's ``(out, in, k...)`` flattened to ``(out, in * k...)``."""
        rows, *rest = self.tensors[f"{module}.weight"].shape
        cols = math.prod(rest)
        return (cols, rows) if module_kind(module) == "conv1d" else (rows, cols)

    def tensor(self, key: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Read tensor ``key`` as ``dtype`` (float32 or float64), a copy that owns its memory.

        Raises:
            LowrankError: unknown key, unreadable file, or a tensor with NaN/Inf entries.
        """
        if dtype not in _COMPUTE_DTYPES:
            raise LowrankError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if key not in self.tensors:
            raise LowrankError(f"{self.path} has no tensor {key!r}")
        info = self.tensors[key]
        if self._loaded is not None:
            value = self._loaded[key].to(dtype, copy=True)
        else:
            try:
                with safe_open(info.file, framework="pt") as handle:
                    value = handle.get_tensor(info.key).to(dtype, copy=True)
            except (SafetensorError, OSError, RuntimeError) as error:
                raise LowrankError(f"cannot read tensor {key!r} from {info.file}: {error}") from None
        if not bool(torch.isfinite(value).all()):
            raise LowrankError(f"tensor {key!r} in {info.file} contains NaN or Inf values")
        return value

    def weight(self, module: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``module``'s weight as the matrix ``(out, in)`` in ``dtype``: Conv1D weights transposed (a contiguous
        copy), convolutions flattened."""
        value = self.tensor(f"{module}.weight", dtype)
        if value.ndim > 2:
            return value.reshape(value.shape[0], -1)
        return value.T.contiguous() if module_kind(module) == "conv1d" else value


def _header(file: Path) -> dict[str, TensorInfo]:
    """Keys, shapes and dtypes of one safetensors file, validated by :mod:`lowrank.headers` (length cap, duplicate
    names, absurd dimensions) and by ``safe_open`` (dtypes, byte counts, offsets that tile the data)."""
    check_safetensors_header(file)
    try:
        with safe_open(file, framework="pt") as handle:
            infos = {}
            for key in handle.keys():
                part = handle.get_slice(key)
                infos[key] = TensorInfo(key, file, tuple(part.get_shape()), str(part.get_dtype()))
    except (SafetensorError, OSError, ValueError) as error:
        raise LowrankError(f"{file} is not a valid safetensors file: {error}") from None
    check_shapes(file, {key: info.shape for key, info in infos.items()})
    return infos


def _sharded(index_path: Path) -> dict[str, TensorInfo]:
    folder = index_path.parent
    weight_map = read_weight_map(index_path)
    files = sorted(set(weight_map.values()))
    tensors: dict[str, TensorInfo] = {}
    for name in files:
        shard = folder / str(name)
        if not shard.is_file():
            raise LowrankError(f"{index_path} names shard {name}, which is missing from {folder}")
        tensors.update(_header(shard))
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
        raise LowrankError(f"{index_path} lists {len(missing)} tensors not found in its shards, e.g. {missing[0]!r}")
    return tensors


def _pickle(file: Path, allow_pickle: bool) -> Checkpoint:
    if not allow_pickle:
        raise LowrankError(f"{file} is a pickle file, which can run code when loaded; convert it to safetensors, "
                           "or pass --allow-pickle to read it with torch.load(weights_only=True)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the outcome is the error below
            warnings.simplefilter("ignore")
            state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, AttributeError) as error:
        raise LowrankError(f"{file} could not be loaded safely with torch.load(weights_only=True): it holds "
                           f"more than plain tensors ({_unpickler_reason(error)}); it was not executed") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LowrankError(f"{file} does not hold a state dict of tensors")
    infos = {k: TensorInfo(k, file, tuple(v.shape), str(v.dtype)) for k, v in state.items()}
    return Checkpoint(file, infos, loaded=state)


def in_memory(path: Path, tensors: dict[str, torch.Tensor]) -> Checkpoint:
    """A checkpoint of tensors held in memory (a live model's adapter), indexed as the safetensors file ``path``
    would be: in sorted key order, the order ``safe_open(...).keys()`` gives."""
    infos = {k: TensorInfo(k, path, tuple(tensors[k].shape), str(tensors[k].dtype)) for k in sorted(tensors)}
    return Checkpoint(path, infos, loaded=tensors)


def _unpickler_reason(error: BaseException) -> str:
    """The line of torch's weights-only error that says what was refused (its advice to disable the check is
    left out on purpose)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("Unsupported", "Trying to"))]
    return reasons[0] if reasons else type(error).__name__


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".safetensors")


def open_checkpoint(path: str | Path, allow_pickle: bool = False) -> Checkpoint:
    """Index the tensors of a safetensors file, a model folder (single file or sharded), a diffusers pipeline
    folder (``model_index.json``: each component's keys prefixed by its folder, ``unet.``, ``text_encoder.``...),
    or an opted-in pickle.

    Raises:
        LowrankError: missing path, empty folder, several unindexed safetensors files, an invalid or truncated
            safetensors file, a broken index, or a pickle file without ``allow_pickle``.
    """
    path = Path(path)
    if not path.exists():
        raise LowrankError(f"{path} does not exist")
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            return _pickle(path, allow_pickle)
        return Checkpoint(path, _header(path))
    if (path / PIPELINE_INDEX).is_file():
        return Checkpoint(path, _pipeline(path))
    indexes = sorted(path.glob("*" + INDEX_SUFFIX))
    if indexes:
        return Checkpoint(path, _sharded(indexes[0]))
    files = _folder_files(path)
    if len(files) == 1:
        return Checkpoint(path, _header(files[0]))
    if len(files) > 1:
        raise LowrankError(f"{path} holds {len(files)} safetensors files but no {INDEX_NAME} to say how they combine")
    pickles = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    if pickles:
        return _pickle(pickles[0], allow_pickle)
    raise LowrankError(f"{path} holds no model weights (expected model.safetensors or {INDEX_NAME})")


def _pipeline(folder: Path) -> dict[str, TensorInfo]:
    """A diffusers pipeline's components with safetensors weights, keys prefixed ``<component>.``."""
    tensors: dict[str, TensorInfo] = {}
    for component in sorted(p for p in folder.iterdir() if p.is_dir()):
        if _folder_files(component) or any(component.glob("*" + INDEX_SUFFIX)):
            inner = open_checkpoint(component).tensors
            tensors.update({f"{component.name}.{key}": info for key, info in inner.items()})
    if not tensors:
        raise LowrankError(f"{folder} is a diffusers pipeline folder with no safetensors weights in its components")
    return tensors


def find_name(name: str, available: set[str]) -> str | None:
    """The name in ``available`` that module ``name`` refers to, allowing one model prefix stripped or added.

    ``"bert.encoder.layer.0.attention.self.query"`` finds ``"encoder.layer.0.attention.self.query"`` (a
    ``BertModel`` checkpoint) and vice versa. Returns None when there is no such module (a module on one side only).
    """
    if name in available:
        return name
    for prefix in MODEL_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in available:
            return name[len(prefix):]
        if prefix + name in available:
            return prefix + name
    return None


@dataclass(frozen=True)
class ModuleMatch:
    """How the 2-D weights of a tuned checkpoint pair with a base: ``pairs`` of (tuned name, base name), and the
    modules found on one side only."""

    pairs: tuple[tuple[str, str], ...]
    only_tuned: tuple[str, ...]
    only_base: tuple[str, ...]


def match_modules(tuned: Checkpoint, base: Checkpoint) -> ModuleMatch:
    """Pair every 2-D weight of ``tuned`` with ``base``'s, from the headers alone (no tensor is read).

    Raises:
        LowrankError: if a paired module's shapes differ (naming the module and both shapes), or nothing pairs.
    """
    base_modules = set(base.modules())
    pairs, only_tuned = [], []
    for name in tuned.modules():
        other = find_name(name, base_modules)
        if other is None:
            only_tuned.append(name)
            continue
        if tuned.weight_shape(name) != base.weight_shape(other):
            raise LowrankError(f"module {name} has shape {list(tuned.weight_shape(name))} in {tuned.path} but "
                               f"{list(base.weight_shape(other))} in the base {base.path}")
        pairs.append((name, other))
    if not pairs:
        raise LowrankError(f"no weight of {tuned.path} matches a weight of the base {base.path}")
    paired = {b for _, b in pairs}
    return ModuleMatch(tuple(pairs), tuple(only_tuned), tuple(sorted(base_modules - paired)))


@dataclass(frozen=True)
class WeightPair:
    """One module's base weight ``W0`` and fine-tuned weight ``W1``, both ``(out, in)`` in the compute dtype."""

    module: str
    W0: torch.Tensor
    W1: torch.Tensor
    kind: str


def pairs(tuned: Checkpoint, base: Checkpoint, dtype: torch.dtype = torch.float32,
          modules: tuple[str, ...] | None = None) -> Iterator[WeightPair]:
    """Yield ``WeightPair(module, W0, W1, kind)`` lazily for each 2-D weight of ``tuned`` found in ``base``.

    Shapes are checked for all modules before the first tensor is read. Only the current pair is in memory.
    ``modules`` restricts the pairs to those tuned-side names (in ``tuned``'s order).
    """
    match = match_modules(tuned, base)
    wanted = None if modules is None else set(modules)
    for name, base_name in match.pairs:
        if wanted is None or name in wanted:
            yield WeightPair(name, base.weight(base_name, dtype), tuned.weight(name, dtype), module_kind(name))
