"""LoRA adapter files: peft folders of every version and variant, kohya / diffusers single files, and writing
lowrank's own adapters in peft's format. This package is the one owner of peft's format.

``keys`` spells peft's key layout, ``config`` reads and writes adapter_config.json, ``lora_file`` reads a LoraConfig
given to ``lowrank train --config``, ``patterns`` writes rank_pattern / alpha_pattern, ``layout`` groups a file's
tensors into modules, ``adapter`` holds an opened file, ``registry`` detects a path's format and opens it with one
of the format files (``peft_folder``: peft folders, ``kohya``: kohya / diffusers single files, ``loha``: LyCORIS
LoHa, refused), ``variants`` builds the update of DoRA / PiSSA / OLoRA from the base, ``peft_io`` writes and loads
lowrank's adapters and ``live`` reads the adapter a live model holds.
"""

from lowrank.adapters.config import (CONFIG_FILE, AdapterConfig, is_adapter_folder, raw_adapter_config,
                                     read_adapter_config, write_adapter_config)
from lowrank.adapters.keys import PREFIX
from lowrank.adapters.layout import AdapterModule, FullyTrained
from lowrank.adapters.peft_io import adapter_config_dict, adapter_state_dict, load_adapter, save_adapter
from lowrank.adapters.adapter import Adapter, Format, LoraUpdate
from lowrank.adapters.peft_folder import WEIGHTS_FILE
from lowrank.adapters.registry import FORMATS, detect, iter_lora_updates, open_adapter

__all__ = ["CONFIG_FILE", "FORMATS", "PREFIX", "WEIGHTS_FILE", "Adapter", "AdapterConfig", "AdapterModule", "Format",
           "FullyTrained", "LoraUpdate", "adapter_config_dict", "adapter_state_dict", "detect", "is_adapter_folder",
           "iter_lora_updates", "load_adapter", "open_adapter", "raw_adapter_config", "read_adapter_config", "save_adapter",
           "write_adapter_config"]
