"""Writing lowrank's LoRA layers as a peft adapter, and loading a peft adapter into them.

Keys are :mod:`lowrank.adapters.keys`'s (``lora_A.weight`` (r, in) and ``lora_B.weight`` (out, r); embeddings
``lora_embedding_A`` (r, vocab) and ``lora_embedding_B`` (dim, r)); fully trained modules (peft's
modules_to_save) are stored under their own parameter names. The config says r, lora_alpha, rank_pattern,
alpha_pattern and use_rslora, so that peft's PeftModel.from_pretrained rebuilds the same model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from lowrank import lora
from lowrank.adapters.config import AdapterConfig, lora_settings, write_adapter_config
from lowrank.adapters.keys import PREFIX, factor_keys, factor_suffixes
from lowrank.adapters.peft_folder import WEIGHTS_FILE
from lowrank.adapters.registry import open_adapter
from lowrank.errors import LowrankError


def adapter_config_dict(model: nn.Module, config: lora.LoraConfig, adapted: list[str],
                        base_model_name_or_path: str, task_type: str | None) -> dict:
    """The ``adapter_config.json`` that makes peft inject exactly the modules lowrank adapted."""
    targets = config.targets
    target_modules = (targets.regex if targets.regex else list(targets.suffixes) if targets.suffixes else adapted)
    kinds = {layer.kind for layer in lora.lora_layers(model).values()}
    return lora_settings(task_type=task_type, base_model_name_or_path=base_model_name_or_path, r=config.r,
                         lora_alpha=config.alpha, target_modules=target_modules, rank_pattern=config.rank_pattern,
                         alpha_pattern=config.alpha_pattern, use_rslora=config.use_rslora,
                         lora_dropout=config.dropout, fan_in_fan_out="conv1d" in kinds,
                         init_lora_weights=True if config.init == "kaiming" else "gaussian", bias="none",
                         modules_to_save=list(config.trainable_modules) or None)


def adapter_state_dict(model: nn.Module, trainable_modules: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """peft's key names for every LoRA factor and every parameter of the fully trained modules, as detached views
    of the parameters (where they are: training's later steps show through)."""
    tensors = {}
    for name, layer in lora.lora_layers(model).items():
        key_a, key_b = factor_keys(name, layer.kind)
        tensors[key_a], tensors[key_b] = layer.lora_A, layer.lora_B
    for name, param in model.named_parameters():
        if lora.is_under(name.rpartition(".")[0], trainable_modules):
            tensors[PREFIX + name] = param
    return {key: value.detach() for key, value in tensors.items()}


def save_adapter(folder: Path, model: nn.Module, config: lora.LoraConfig, adapted: list[str],
                 base_model_name_or_path: str, task_type: str | None) -> None:
    """Write adapter_config.json and adapter_model.safetensors into an existing ``folder``."""
    tensors = {key: value.to("cpu").contiguous() for key, value in
               adapter_state_dict(model, config.trainable_modules).items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    settings = adapter_config_dict(model, config, adapted, base_model_name_or_path, task_type)
    write_adapter_config(folder, settings)


def load_adapter(model: nn.Module, folder: str | Path) -> list[str]:
    """Inject the adapter in ``folder`` into ``model`` (in place) and load its tensors; return adapted names.

    Raises LowrankError when the adapter's modules or shapes do not fit the model.
    """
    adapter = open_adapter(folder)
    if adapter.format != "peft":
        raise LowrankError(f"{folder} is a {adapter.format} LoRA file; only peft adapter folders load into a model")
    config = adapter.config
    adapted = lora.inject(model, config.to_lora_config(list(adapter.modules)))
    expected = {key.removeprefix(PREFIX): key for key in adapter.checkpoint.tensors}
    own = _own_names(model)
    missing = sorted(set(own) - set(expected) - _non_adapter(model, config))
    unknown = sorted(set(expected) - set(own))
    if unknown or missing:
        raise LowrankError(f"{folder} does not fit this model: unknown tensors {unknown[:3]}, missing {missing[:3]}")
    with torch.no_grad():
        for short, key in expected.items():
            target = own[short]
            tensor = adapter.checkpoint.tensor(key)
            if tensor.shape != target.shape:
                raise LowrankError(f"{folder}: {short} has shape {tuple(tensor.shape)}, "
                                   f"the model expects {tuple(target.shape)}")
            target.copy_(tensor.to(target.dtype))
    return adapted


def _own_names(model: nn.Module) -> dict[str, torch.Tensor]:
    """peft-style short names (without PREFIX) of the model's parameters that an adapter may hold."""
    names = {}
    for name, param in model.named_parameters():
        if name.endswith(".lora_A") or name.endswith(".lora_B"):
            module, part = name.rsplit(".", 1)
            suffix_a, suffix_b = factor_suffixes(model.get_submodule(module).kind)
            names[module + (suffix_a if part == "lora_A" else suffix_b)] = param
        else:  # includes base_layer weights, which peft saves for adapted embeddings
            names[name] = param
    return names


def _non_adapter(model: nn.Module, config: AdapterConfig) -> set[str]:
    """Parameters an adapter does not carry: everything outside the LoRA factors and modules_to_save."""
    saved = config.modules_to_save
    return {name for name in _own_names(model)
            if ".lora_" not in name and not lora.is_under(name.rpartition(".")[0], saved)}
