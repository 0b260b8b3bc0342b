"""The modules a task trains besides LoRA's factors, and where LoRA goes when not told.

- The head, trained in full beside LoRA (and at its own rate): an MLP's last layer ``layers.{k-1}``; a Hugging
  Face classifier's ``classifier`` / ``score``; none for language modelling.
- Automatic targets (``--targets auto``): an MLP's hidden layers ``layers.0 ... layers.{k-2}``; the attention query
  and value projections of the architectures in :data:`AUTO_TARGETS`; every linear layer (not the head) otherwise.
"""

from __future__ import annotations

from torch import nn

from lowrank.errors import LowrankError
from lowrank.mlp import MLP

AUTO_TARGETS = {"bert": "query,value", "roberta": "query,value", "distilbert": "q_lin,v_lin", "gpt2": "c_attn",
                "llama": "q_proj,v_proj", "mistral": "q_proj,v_proj", "qwen2": "q_proj,v_proj"}
CLASSIFIER_HEADS = ("classifier", "score")


def head_modules(model: nn.Module, task: str) -> tuple[str, ...]:
    """The output head, trained in full beside LoRA and at ``head_lr``: an MLP's last layer ``layers.{k-1}``, a
    Hugging Face classifier's ``classifier`` / ``score``; none for language modelling."""
    if isinstance(model, MLP):
        return (f"layers.{len(model.layers) - 1}",)
    return tuple(h for h in CLASSIFIER_HEADS if task == "classification" and _has_module(model, h))


def auto_targets(model: nn.Module) -> str:
    """An MLP's hidden layers ``layers.0 ... layers.{k-2}``; attention query and value of known architectures."""
    if isinstance(model, MLP):
        if len(model.layers) < 2:
            raise LowrankError(f"an mlp with sizes {list(model.sizes)} has no hidden layer for LoRA to adapt")
        return ",".join(f"layers.{i}" for i in range(len(model.layers) - 1))
    return AUTO_TARGETS.get(model.config.model_type, "all-linear")


def _has_module(model: nn.Module, name: str) -> bool:
    return any(n.split(".")[-1] == name for n, _ in model.named_modules())
