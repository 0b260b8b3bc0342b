"""Full weight gradients at a model's current point, for every LoRA-adapted module.

A LoRA layer computes ``h = (W0 + s B A) x``: the loss depends on ``W = W0 + s B A`` alone, so the gradient of the
frozen weight, ``G = dL/dW0``, is the gradient of the full weight at the current point. Full fine-tuning would step
along ``G``; LoRA's factors only see its projections ``dL/dB = s G A^T`` and ``dL/dA = s B^T G``. ``G`` is what
:mod:`lowrank.advice.sufficiency.gradient_evidence` and the gradient allocation signal
(:mod:`lowrank.advice.planning.gradient_signal`) read.

Gradients are averaged over the given batches (each batch's mean loss, equal weights) and returned in the
``(out, in)`` layout of the update, on the CPU in float32. The model's parameters and ``requires_grad`` flags are
restored afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import nn

from lowrank.errors import LowrankError
from lowrank.lora import LoraLayer
from lowrank.tasks.loss import loss_of


@contextlib.contextmanager
def adapters_off(layers: dict[str, LoraLayer]) -> Iterator[None]:
    """Inside the block every LoRA update is switched off (scaling 0): the model is ``W0`` plus whatever else was
    trained (a classifier head)."""
    scalings = {name: layer.scaling for name, layer in layers.items()}
    try:
        for layer in layers.values():
            layer.scaling = 0.0
        yield
    finally:
        for name, layer in layers.items():
            layer.scaling = scalings[name]


def _layout(layer: LoraLayer, grad: torch.Tensor) -> torch.Tensor:
    """Gradient of ``base_layer.weight`` -> ``(out, in)``, the layout of ``s B A``."""
    return grad if layer.kind == "linear" else grad.T


def weight_gradients(model: nn.Module, layers: dict[str, LoraLayer], batches: Iterable[dict[str, torch.Tensor]],
                     device: torch.device) -> dict[str, torch.Tensor]:
    """``{name: G}`` with ``G = dL/dW`` of the mean loss over every example (LM: every target token) of the
    batches, for each layer in ``layers``, shape ``(out, in)``: each batch weighs by its count.

    Args:
        model: the model holding ``layers`` (a Hugging Face model with a ``.logits`` output).
        layers: adapted module name -> :class:`LoraLayer` (linear or Conv1D; embeddings are refused).
        batches: dicts with ``input_ids``, ``attention_mask`` and ``labels`` (see ``TokenizedSet.collate``).
        device: where the forward and backward run (in float32: the gradient's small tail matters).
    Raises:
        LowrankError: for an embedding layer, no batch, or a non-finite gradient.
    """
    if any(layer.kind == "embedding" for layer in layers.values()):
        raise LowrankError("sufficiency signals cover linear and Conv1D LoRA layers, not embeddings")
    previous = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.eval()  # no dropout: the gradient of the deterministic loss
    for param in model.parameters():
        param.requires_grad_(False)
    weights = {name: layer.base_layer.weight for name, layer in layers.items()}
    for weight in weights.values():
        weight.requires_grad_(True)
        weight.grad = None
    count = 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, targets, _ = loss_of(model, batch)
            (loss * targets).backward()
            count += targets
        if count == 0:
            raise LowrankError("no example to take gradients on")
        grads = {name: _layout(layers[name], w.grad.float() / count).cpu() for name, w in weights.items()}
    finally:
        for name, param in model.named_parameters():
            param.grad = None
            param.requires_grad_(previous[name])
        model.train(was_training)
    bad = [name for name, g in grads.items() if not bool(torch.isfinite(g).all())]
    if bad:
        raise LowrankError(f"the loss gradient is not finite at {bad[0]} (and {len(bad) - 1} more modules)")
    return grads
