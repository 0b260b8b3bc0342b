"""LoRA adapter files: peft folders of every version and variant, kohya / diffusers single files, and writing
lowrank's own adapters in peft's format.

``config`` parses adapter_config.json, ``layout`` groups a file's tensors into modules, ``adapter`` holds an opened file, ``reader`` opens
and yields each module's factors, ``variants`` builds the update of DoRA / PiSSA / OLoRA from the base, ``kohya`` reads
single-file LoRAs, and ``peft_io`` writes and loads lowrank's adapters.
"""

from lowrank.adapters.config import (CONFIG_FILE, AdapterConfig, is_adapter_folder, raw_adapter_config,
                                     read_adapter_config, write_adapter_config)
from lowrank.adapters.keys import PREFIX
from lowrank.adapters.layout import AdapterModule, FullyTrained
from lowrank.adapters.peft_io import adapter_config_dict, adapter_state_dict, load_adapter, save_adapter
from lowrank.adapters.adapter import Adapter, LoraUpdate
from lowrank.adapters.reader import WEIGHTS_FILE, iter_lora_updates, open_adapter

__all__ = ["CONFIG_FILE", "PREFIX", "WEIGHTS_FILE", "Adapter", "AdapterConfig", "AdapterModule", "FullyTrained",
           "LoraUpdate", "adapter_config_dict", "adapter_state_dict", "is_adapter_folder", "iter_lora_updates",
           "load_adapter", "open_adapter", "raw_adapter_config", "read_adapter_config", "save_adapter",
           "write_adapter_config"]
