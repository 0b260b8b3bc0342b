"""The peft format (:data:`PEFT`): folders of ``adapter_config.json`` + ``adapter_model.safetensors`` (or an
opted-in pickled ``adapter_model.bin``), opened for reading one module's factors at a time.

For every module, :meth:`Adapter.factors` gives dense ``B (out, r)`` and ``A (r, in)`` such that ``scale * B @ A``
is the low-rank term the adapter adds: AdaLoRA's ``E`` folded into A, block-diagonal factors expanded,
convolution factors reshaped, embeddings arranged so the product has the weight's shape ``(vocab, dim)``. Whether
that term is the whole update (plain LoRA, AdaLoRA, kohya), or the base is needed too (DoRA, unconverted
PiSSA/OLoRA), is :attr:`AdapterConfig.variant`; :mod:`lowrank.adapters.variants` builds the rest.
"""

from __future__ import annotations

from pathlib import Path

from lowrank.adapters.adapter import Adapter, Format
from lowrank.adapters.config import CONFIG_FILE, AdapterConfig, is_adapter_folder, read_adapter_config
from lowrank.adapters.layout import AdapterModule, peft_layout
from lowrank.weights import Checkpoint, open_checkpoint
from lowrank.errors import LowrankError

WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_WEIGHTS_FILE = "adapter_model.bin"
NEEDS_BASE = {"dora": "DoRA", "pissa": "PiSSA", "olora": "OLoRA"}


def open_peft(folder: Path, allow_pickle: bool) -> Adapter:
    """The peft adapter in ``folder`` (its pickled weights only with ``allow_pickle``)."""
    config = read_adapter_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() and (folder / PICKLED_WEIGHTS_FILE).is_file():
        weights = folder / PICKLED_WEIGHTS_FILE
    elif not weights.is_file():
        raise LowrankError(f"{folder} has no {WEIGHTS_FILE}")
    return peft_adapter(folder, config, open_checkpoint(weights, allow_pickle))


def peft_adapter(folder: Path, config: AdapterConfig, checkpoint: Checkpoint) -> Adapter:
    """The :class:`Adapter` of a peft config and the checkpoint of its tensors (a file's, or one held in memory
    whose ``path`` names where it would be saved): modules grouped, ranks checked against the config, notes."""
    weights = checkpoint.path
    modules, full = peft_layout(checkpoint.tensors, weights, config.block_diagonal)
    _check_ranks(config, modules, weights)
    return Adapter(folder, "peft", config, checkpoint, modules, full, _notes(config, modules, weights))


def _check_ranks(config: AdapterConfig, modules: dict[str, AdapterModule], path: Path) -> None:
    if config.variant == "adalora":  # pruning leaves each module its own rank <= init_r
        plain = [m.name for m in modules.values() if "E" not in m.keys]
        if plain:
            raise LowrankError(f"{path}: {CONFIG_FILE} says ADALORA but module {plain[0]} has no lora_E tensor; "
                               "the weights are not an AdaLoRA adapter's")
        return
    for module in modules.values():
        expected = config.rank_for(module.name)
        if module.rank != expected:
            raise LowrankError(f"{path}: module {module.name} has rank {module.rank} but {CONFIG_FILE} gives "
                               f"r={expected}")


def _notes(config: AdapterConfig, modules: dict[str, AdapterModule], path: Path) -> tuple[str, ...]:
    notes = []
    conv1d = [m.name for m in modules.values() if m.layer_kind == "conv1d"]
    if conv1d and not config.fan_in_fan_out:
        notes.append(f"{CONFIG_FILE} says fan_in_fan_out=false, but {conv1d[0]} is a Conv1D layer (weight stored "
                     "(in, out)): peft sets fan_in_fan_out=true for it at load, and so does lowrank")
    if isinstance(config.target_modules, tuple) and config.target_modules:
        dead = [t for t in dict.fromkeys(config.target_modules)
                if not any(n == t or n.endswith("." + t) for n in modules)]
        if dead:
            notes.append(f"target_modules name {', '.join(dead)}, which no module in {path.name} matches")
    elif not config.target_modules:
        notes.append("target_modules is null or empty (peft fills in the architecture's defaults at load); the "
                     f"{len(modules)} modules {path.name} holds are the adapted ones")
    if config.lora_bias:
        notes.append("lora_bias: each lora_B also trains a bias; the spectra are of the weight updates only")
    if config.variant == "adalora":
        notes.append("AdaLoRA: dW = alpha / init_r * B diag(E) A, with the ranks its budget pruned removed")
    return tuple(notes)


PEFT = Format("peft", ("LoRA", "rsLoRA", "AdaLoRA", "DoRA", "PiSSA", "OLoRA", "block-diagonal LoRA"),
              is_adapter_folder, open_peft)
