"""One batch through a model: on its device, under the forward pass's context, to logits and the task's loss.

The loss is the task's: cross-entropy of each example's label for classification (text or images), of each next
token for language modelling (logits ``(batch, length, vocab)``, target ``t + 1`` read at ``t``), the mean over
targets that are not :data:`lowrank.data.batches.IGNORE_INDEX` (padding, and for instruction data a masked prompt
or non-assistant token). Training, rank advice, the probe and held-out evaluation all take it from here.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from lowrank.data.batches import IGNORE_INDEX


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A host batch on ``device``: through pinned memory and a non-blocking copy on CUDA."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def target_count(batch: dict[str, torch.Tensor]) -> int:
    """Targets the mean loss averages, read from a host batch: next-token targets for LM, else examples."""
    labels = batch["labels"]
    if labels.ndim == 2:
        return int((labels[:, 1:] != IGNORE_INDEX).sum())
    return labels.numel()


def autocast(device: torch.device, bf16: bool):
    """The context of a forward pass on CUDA: bf16 autocast when asked, and scaled-dot-product attention on the
    flash, memory-efficient or math kernels; a no-op elsewhere.

    cuDNN's attention kernel is left out: it builds an execution plan for every new sequence length, on the host,
    and with length-bucketed batches nearly every step is a new length (reports/training_speed.md)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = contextlib.ExitStack()
    stack.enter_context(sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]))
    if bf16:
        stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
    return stack


def loss_and_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss over the batch (a device scalar: nothing is read back) and the logits.

    An image batch ``{"x", "labels"}`` goes to ``model(x)`` (an MLP, which returns logits); a text batch
    ``{"input_ids", "attention_mask", "labels"}`` to a Hugging Face model (``.logits``). Language-modelling batches
    go without their mask: blocks are whole (lowrank.data.batches.tokenize_lm), and instruction examples are padded
    on the right only, after their last real token, which causal attention never lets a real token see (and whose
    labels are ignored). The model then needs no look at the mask's values to choose SDPA's causal flash kernel (a
    host synchronization in an eager step, and in a captured CUDA graph a materialized mask, which rules that
    kernel out)."""
    labels = batch["labels"]
    logits = forward(model, batch)
    if logits.ndim == 3:  # causal LM: predict token t+1 from tokens <= t
        return F.cross_entropy(logits.flatten(0, 1).float(), next_tokens(labels).flatten(),
                               ignore_index=IGNORE_INDEX), logits
    return F.cross_entropy(logits.float(), labels), logits


def next_tokens(labels: torch.Tensor) -> torch.Tensor:
    """The target read at each position ``t``: ``labels[:, t + 1]``, and IGNORE_INDEX at the last. Shifting the
    labels rather than the logits (``logits[:, :-1]``) keeps the logits contiguous: no copy of the largest tensor
    of the step in the forward pass, no zero-filled gradient of it in the backward pass."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The logits of a batch (see :func:`loss_and_logits` for the two kinds of batch and the mask)."""
    if "x" in batch:
        return model(batch["x"])
    if batch["labels"].ndim == 2:  # causal LM: no mask (see above), and no key/value cache kept for generation
        return model(input_ids=batch["input_ids"], use_cache=False).logits
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def loss_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Mean loss over the batch, the number of targets it averages (tokens for LM, examples otherwise), logits."""
    loss, logits = loss_and_logits(model, batch)
    return loss, target_count(batch), logits
