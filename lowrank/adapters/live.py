"""A live model's LoRA adapter, read in memory as the adapter folder it would save.

Two kinds of live model hold one: a peft ``PeftModel`` (its active adapter: the tensors of peft's own
``get_peft_model_state_dict`` and the config its ``save_pretrained`` writes) and a model holding lowrank's
:class:`~lowrank.lora.LoraLayer` s (the tensors and config of :func:`lowrank.adapters.peft_io.save_adapter`, from the
:class:`~lowrank.lora.LoraConfig` that :func:`lowrank.lora.inject` left on the model). Either way the tensors keep
the file's keys (``base_model.model.<module>.lora_A.weight`` ...) and the config is the file's JSON object, so the
:class:`LiveAdapter` goes through the same reading code as a saved folder (:func:`lowrank.adapters.peft_folder.
peft_adapter`): every module's ``dW = s B A`` (``s = alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA) comes from the
same factors, scales and notes as the saved adapter's. Nothing is copied until a module is read.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file
from torch import nn

from lowrank import lora
from lowrank.adapters.adapter import Adapter
from lowrank.adapters.config import CONFIG_FILE, parse_adapter_config, write_adapter_config
from lowrank.adapters.peft_io import adapter_config_dict, adapter_state_dict
from lowrank.adapters.peft_folder import WEIGHTS_FILE, peft_adapter
from lowrank.weights import in_memory
from lowrank.errors import LowrankError
from lowrank.mlp import MLP


class LiveAdapter(Adapter):
    """An :class:`Adapter` read from a live model; ``raw`` (the adapter_config.json object) and ``tensors`` (the
    adapter_model.safetensors state dict, the model's own tensors) are what saving it would write."""

    def __init__(self, label: str, raw: dict, tensors: dict[str, torch.Tensor]):
        path = Path(label)
        opened = peft_adapter(path, parse_adapter_config(raw, path / CONFIG_FILE),
                              in_memory(path / WEIGHTS_FILE, tensors))
        super().__init__(opened.path, opened.format, opened.config, opened.checkpoint, opened.modules,
                         opened.trained_in_full, opened.notes)
        self.raw, self.tensors = raw, tensors

    def write(self, folder: Path) -> None:
        """Write adapter_config.json and adapter_model.safetensors into the existing ``folder``."""
        save_file({key: value.detach().to("cpu").contiguous() for key, value in self.tensors.items()},
                  str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        write_adapter_config(folder, self.raw)


def live_adapter(model: nn.Module) -> LiveAdapter:
    """The adapter ``model`` holds: a ``PeftModel``'s active adapter, or lowrank's LoRA layers.

    Raises:
        LowrankError: a model without LoRA layers, one with peft's layers but not wrapped as a ``PeftModel``, or
            lowrank layers not put there by :func:`lowrank.lora.inject` (whose config says alpha and the rest).
    """
    if _is_peft_model(model):
        return _from_peft(model)
    if lora.lora_layers(model):
        return _from_lowrank(model)
    if any(type(module).__module__.startswith("peft.") for module in model.modules()):
        raise LowrankError(f"{type(model).__name__} holds peft LoRA layers but is not a peft PeftModel; pass the "
                           "PeftModel (peft.get_peft_model or PeftModel.from_pretrained), or save it and pass its "
                           "folder")
    raise LowrankError(f"{type(model).__name__} has no LoRA layers: pass a peft PeftModel, a model holding "
                       "lowrank's LoRA layers (lowrank.lora.inject), or the folder of a saved adapter")


def _is_peft_model(model: nn.Module) -> bool:
    """True for a ``peft.PeftModel`` (peft is imported only when installed: it is not a dependency of lowrank)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _from_peft(model: nn.Module) -> LiveAdapter:
    """The active adapter as ``PeftModel.save_pretrained`` writes it: ``get_peft_model_state_dict``'s tensors and
    the config's ``to_dict()`` with sets as lists, ``inference_mode`` true and, where the config names no base,
    the base model's ``name_or_path``; through JSON, so enum values become the strings the file holds."""
    from peft import get_peft_model_state_dict

    name = model.active_adapter
    config = model.peft_config[name]
    raw = {key: list(value) if isinstance(value, set) else value for key, value in config.to_dict().items()}
    raw["inference_mode"] = True
    if raw.get("base_model_name_or_path") is None:
        raw["base_model_name_or_path"] = model.base_model.model.__dict__.get("name_or_path") or None
    tensors = get_peft_model_state_dict(model, adapter_name=name)
    return LiveAdapter(f"{type(model).__name__} (in memory)", json.loads(json.dumps(raw)), tensors)


def _from_lowrank(model: nn.Module) -> LiveAdapter:
    """lowrank's layers as :func:`lowrank.adapters.peft_io.save_adapter` writes them, with the base named by the
    model's ``config.name_or_path`` and the task type by its class (a causal LM, a classifier, or an MLP: none)."""
    config = getattr(model, lora.CONFIG_ATTRIBUTE, None)
    if config is None:
        raise LowrankError(f"{type(model).__name__} holds lowrank LoRA layers but no {lora.CONFIG_ATTRIBUTE}; put "
                           "them there with lowrank.lora.inject (or lowrank.adapters.load_adapter)")
    base = getattr(getattr(model, "config", None), "name_or_path", None) or None
    raw = adapter_config_dict(model, config, list(lora.lora_layers(model)), base, _task_type(model))
    return LiveAdapter(f"{type(model).__name__} (in memory)", json.loads(json.dumps(raw)),
                       adapter_state_dict(model, config.trainable_modules))


def _task_type(model: nn.Module) -> str | None:
    """peft's task_type as ``lowrank train`` writes it: CAUSAL_LM, SEQ_CLS, or none for an MLP."""
    if isinstance(model, MLP):
        return None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return "CAUSAL_LM" if type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() else "SEQ_CLS"


@contextlib.contextmanager
def adapter_folder(adapter: Adapter) -> Iterator[Path]:
    """A folder holding ``adapter``, for code that loads adapters from disk (the data verdict): its own, or, for a
    :class:`LiveAdapter`, a temporary folder it is written to and that is removed afterwards. Errors that name the
    temporary folder name the live adapter instead."""
    if not isinstance(adapter, LiveAdapter):
        yield Path(adapter.path)
        return
    with tempfile.TemporaryDirectory(prefix="lowrank-live-") as tmp:
        adapter.write(Path(tmp))
        try:
            yield Path(tmp)
        except LowrankError as error:
            raise LowrankError(str(error).replace(tmp, str(adapter.path))) from None
