"""peft-format LoRA adapters on disk: ``adapter_config.json`` + ``adapter_model.safetensors``.

Keys are ``base_model.model.<module>.lora_A.weight`` (r, in) and ``.lora_B.weight`` (out, r); embeddings use
``.lora_embedding_A`` (r, vocab) and ``.lora_embedding_B`` (dim, r); fully trained modules (peft's
modules_to_save) are stored under their own parameter names. The update a module receives is

    dW = s * B @ A,  s = alpha / r  (alpha / sqrt(r) with use_rslora),

with r and alpha taken per module from rank_pattern / alpha_pattern. alpha cannot be recovered from the weights,
so it always comes from the config. DoRA, AdaLoRA, PiSSA/OLoRA and similar adapters are not s*B@A on top of the
unchanged base weight; they are refused by name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from lowrank import lora
from lowrank.errors import LowrankError
from lowrank.jsonfile import read_json_object
from lowrank.outputs import write_text_atomic

PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_BASE_CHANGING_INIT = ("pissa", "olora", "corda", "loftq", "lora_ga")


@dataclass(frozen=True)
class AdapterConfig:
    """The fields of peft's LoraConfig that decide what an adapter's update is."""

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | str
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    lora_dropout: float = 0.0
    modules_to_save: tuple[str, ...] = ()
    base_model_name_or_path: str | None = None
    task_type: str | None = None

    def to_lora_config(self, module_names: list[str] | None = None) -> lora.LoraConfig:
        """The matching :class:`lora.LoraConfig`. peft fills a null or empty ``target_modules`` with the
        architecture's defaults at load time; here the modules the adapter file holds (``module_names``) stand
        in for them."""
        if isinstance(self.target_modules, str):
            targets = lora.Targets(regex=self.target_modules)
        elif self.target_modules:
            targets = lora.Targets(suffixes=self.target_modules)
        elif module_names:
            targets = lora.Targets(regex="|".join(re.escape(name) for name in module_names))
        else:
            raise LowrankError("the adapter config names no target_modules and the adapter file holds no module")
        return lora.LoraConfig(r=self.r, alpha=self.lora_alpha, targets=targets, rank_pattern=self.rank_pattern,
                               alpha_pattern=self.alpha_pattern, use_rslora=self.use_rslora,
                               dropout=self.lora_dropout, trainable_modules=self.modules_to_save)


@dataclass(frozen=True)
class LoraUpdate:
    """One module's update as factors: dW = scale * B @ A, shaped like nn.Linear's weight (out, in).

    For Conv1D (kind 'conv1d') the stored weight is dW's transpose; for embeddings (kind 'embedding') the factors
    are arranged so that dW has the embedding weight's shape (num_embeddings, dim).
    """

    name: str
    B: torch.Tensor
    A: torch.Tensor
    scale: float
    kind: str

    @property
    def rank(self) -> int:
        return self.A.shape[0]


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_adapter_config(folder: str | Path) -> AdapterConfig:
    """Parse and validate ``adapter_config.json``; refuse adapters whose update is not s*B@A."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise LowrankError(f"{folder} is not a peft adapter folder (no {CONFIG_FILE})")
    raw = read_json_object(path)
    if "r" not in raw:
        kind = f"model_type {raw['model_type']!r}" if "model_type" in raw else "no 'r' field"
        raise LowrankError(f"{path} is not a peft LoRA adapter config ({kind}); expected the adapter_config.json "
                           "that peft's save_pretrained writes")
    _refuse_non_plain(raw, path)
    try:
        targets = raw.get("target_modules")
        return AdapterConfig(
            r=int(raw["r"]), lora_alpha=float(raw.get("lora_alpha", 8)),
            target_modules=targets if isinstance(targets, str) else tuple(targets or ()),
            rank_pattern={k: int(v) for k, v in (raw.get("rank_pattern") or {}).items()},
            alpha_pattern={k: float(v) for k, v in (raw.get("alpha_pattern") or {}).items()},
            use_rslora=bool(raw.get("use_rslora", False)), fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)),
            lora_dropout=float(raw.get("lora_dropout") or 0.0),
            modules_to_save=tuple(raw.get("modules_to_save") or ()),
            base_model_name_or_path=raw.get("base_model_name_or_path"), task_type=raw.get("task_type"))
    except (KeyError, TypeError, ValueError) as error:
        raise LowrankError(f"{path}: malformed LoRA config ({type(error).__name__}: {error})") from None


def _refuse_non_plain(raw: dict, path: Path) -> None:
    peft_type = str(raw.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise LowrankError(f"{path}: {peft_type} adapters are not plain LoRA (s*B@A); lowrank reads LORA only")
    for option in ("use_bdlora", "enable_lora"):
        if raw.get(option):
            raise LowrankError(f"{path}: {option}={raw[option]!r} (block-diagonal or merged-QKV LoRA) changes how "
                               "lora_A and lora_B combine, so dW is not s*B@A as stored; refusing")
    if raw.get("use_dora"):
        raise LowrankError(f"{path}: DoRA adapters rescale W0 + BA by a learned magnitude, so dW is not s*B@A; "
                           "refusing rather than analyzing the wrong matrix")
    init = str(raw.get("init_lora_weights", True)).lower()
    if init.startswith(_BASE_CHANGING_INIT):
        raise LowrankError(f"{path}: init_lora_weights={raw['init_lora_weights']!r} (PiSSA/OLoRA-style) changes the "
                           "frozen base weights, so dW is not s*B@A; refusing")


def _open(path: Path):
    if not path.is_file():
        raise LowrankError(f"{path.parent} has no {path.name}")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as error:
        raise LowrankError(f"{path} is not a readable safetensors file: {error}") from None


def _module_keys(keys: list[str], path: Path) -> dict[str, dict[str, str]]:
    """module name -> {'A': key, 'B': key, 'kind': 'linear' | 'embedding'}; checks that A and B come in pairs."""
    modules: dict[str, dict[str, str]] = {}
    for key in keys:
        for suffix, part, kind in ((".lora_A.weight", "A", "linear"), (".lora_B.weight", "B", "linear"),
                                   (".lora_embedding_A", "A", "embedding"), (".lora_embedding_B", "B", "embedding")):
            if key.endswith(suffix):
                name = key[: -len(suffix)].removeprefix(PREFIX)
                modules.setdefault(name, {"kind": kind})[part] = key
    for name, parts in modules.items():
        if "A" not in parts or "B" not in parts:
            missing = "lora_B" if "B" not in parts else "lora_A"
            raise LowrankError(f"{path}: module {name} has no {missing} tensor")
    if not modules:
        raise LowrankError(f"{path} holds no LoRA tensors (no *.lora_A.weight keys)")
    return modules


def iter_lora_updates(folder: str | Path, dtype: torch.dtype = torch.float32) -> Iterator[LoraUpdate]:
    """Yield each module's :class:`LoraUpdate`, reading one pair of tensors at a time (memory-mapped)."""
    config = read_adapter_config(folder)
    path = Path(folder) / WEIGHTS_FILE
    handle = _open(path)
    with handle:
        modules = _module_keys(list(handle.keys()), path)
        scaling = config.to_lora_config(list(modules))
        for name, parts in modules.items():
            A, B = handle.get_tensor(parts["A"]).to(dtype), handle.get_tensor(parts["B"]).to(dtype)
            _check_pair(name, A, B, scaling.rank_for(name), path)
            scale = scaling.scaling_for(name)
            if parts["kind"] == "embedding":
                yield LoraUpdate(name, B=A.T.contiguous(), A=B.T.contiguous(), scale=scale, kind="embedding")
            else:
                yield LoraUpdate(name, B=B, A=A, scale=scale, kind="conv1d" if config.fan_in_fan_out else "linear")


def _check_pair(name: str, A: torch.Tensor, B: torch.Tensor, r: int, path: Path) -> None:
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
        raise LowrankError(f"{path}: module {name} has lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)}, "
                           "expected (r, in) and (out, r)")
    if A.shape[0] != r:
        raise LowrankError(f"{path}: module {name} has rank {A.shape[0]} but the config gives r={r}")
    if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
        raise LowrankError(f"{path}: module {name} has NaN or infinite weights")


def adapter_config_dict(model: nn.Module, config: lora.LoraConfig, adapted: list[str],
                        base_model_name_or_path: str, task_type: str | None) -> dict:
    """The ``adapter_config.json`` that makes peft inject exactly the modules lowrank adapted."""
    targets = config.targets
    target_modules = (targets.regex if targets.regex else list(targets.suffixes) if targets.suffixes else adapted)
    kinds = {layer.kind for layer in lora.lora_layers(model).values()}
    return {
        "peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_model_name_or_path,
        "r": config.r, "lora_alpha": config.alpha, "target_modules": target_modules,
        "rank_pattern": config.rank_pattern, "alpha_pattern": config.alpha_pattern,
        "use_rslora": config.use_rslora, "lora_dropout": config.dropout, "fan_in_fan_out": "conv1d" in kinds,
        "init_lora_weights": True if config.init == "kaiming" else "gaussian", "bias": "none",
        "modules_to_save": list(config.trainable_modules) or None, "use_dora": False, "inference_mode": True,
    }


def adapter_state_dict(model: nn.Module, trainable_modules: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """peft's key names for every LoRA factor and every parameter of the fully trained modules."""
    tensors = {}
    for name, layer in lora.lora_layers(model).items():
        if layer.kind == "embedding":
            tensors[f"{PREFIX}{name}.lora_embedding_A"] = layer.lora_A
            tensors[f"{PREFIX}{name}.lora_embedding_B"] = layer.lora_B
        else:
            tensors[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_A
            tensors[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_B
    for name, param in model.named_parameters():
        if lora.is_under(name.rpartition(".")[0], trainable_modules):
            tensors[PREFIX + name] = param
    return {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}


def save_adapter(folder: Path, model: nn.Module, config: lora.LoraConfig, adapted: list[str],
                 base_model_name_or_path: str, task_type: str | None) -> None:
    """Write adapter_config.json and adapter_model.safetensors into an existing ``folder``."""
    tensors = adapter_state_dict(model, config.trainable_modules)
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    settings = adapter_config_dict(model, config, adapted, base_model_name_or_path, task_type)
    write_text_atomic(folder / CONFIG_FILE, json.dumps(settings, indent=2) + "\n")


def load_adapter(model: nn.Module, folder: str | Path) -> list[str]:
    """Inject the adapter in ``folder`` into ``model`` (in place) and load its tensors; return adapted names.

    Raises LowrankError when the adapter's modules or shapes do not fit the model.
    """
    config = read_adapter_config(folder)
    path = Path(folder) / WEIGHTS_FILE
    with _open(path) as handle:
        keys = list(handle.keys())
        adapted = lora.inject(model, config.to_lora_config(list(_module_keys(keys, path))))
        expected = {key.removeprefix(PREFIX): key for key in keys}
        own = _own_names(model)
        missing = sorted(set(own) - set(expected) - _non_adapter(model, config))
        unknown = sorted(set(expected) - set(own))
        if unknown or missing:
            raise LowrankError(f"{folder} does not fit this model: unknown tensors {unknown[:3]}, "
                               f"missing {missing[:3]}")
        with torch.no_grad():
            for short, key in expected.items():
                target = own[short]
                tensor = handle.get_tensor(key)
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
            layer = model.get_submodule(module)
            names[f"{module}.{part}.weight" if layer.kind != "embedding" else
                  f"{module}.lora_embedding_{part[-1]}"] = param
        else:  # includes base_layer weights, which peft saves for adapted embeddings
            names[name] = param
    return names


def _non_adapter(model: nn.Module, config: AdapterConfig) -> set[str]:
    """Parameters an adapter does not carry: everything outside the LoRA factors and modules_to_save."""
    saved = config.modules_to_save
    return {name for name in _own_names(model)
            if ".lora_" not in name and not lora.is_under(name.rpartition(".")[0], saved)}
