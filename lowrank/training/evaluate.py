"""Held-out evaluation: accuracy and loss for classification, loss and perplexity for language modelling.

Perplexity is exp(mean token cross-entropy), the mean taken over every target token: not padding, and for
instruction data not a masked prompt or non-assistant token (lowrank.data.chat).
Batches come as the trainer's do (length-sorted, pinned, copied without blocking); losses and correct counts add up
on the device and are read once at the end, so evaluation never waits on the device batch by batch. On several
processes each rank evaluates every ``size``-th batch (a rank short of batches repeats the first at weight 0, so
that sharded models gather their weights in step) and the sums are added over the ranks.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from lowrank import distributed
from lowrank.data.batches import IGNORE_INDEX, ImageSet, TokenizedSet, eval_batches
from lowrank.distributed import SINGLE, World


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


def throughput_units(batch: dict[str, torch.Tensor]) -> int:
    """What throughput counts: non-padding tokens of a text batch, examples of an image batch."""
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else len(batch["labels"])


def autocast(device: torch.device, bf16: bool):
    """The context of a forward pass on CUDA: bf16 autocast when asked, and scaled-dot-product attention on the
    flash, memory-efficient or math kernels; a no-op elsewhere.

    cuDNN's attention kernel is left out: it builds an execution plan for every new sequence length, about 9 ms
    forward and 11 ms backward of host time per layer (profiled on an H200, MiniLM-L6, batches of 32 padded to
    their longest), against 30 us on the device; with length-bucketed batches nearly every step is a new length."""
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
        shifted, targets = logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
        return F.cross_entropy(shifted.float(), targets, ignore_index=IGNORE_INDEX), logits
    return F.cross_entropy(logits.float(), labels), logits


def forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The logits of a batch (see :func:`loss_and_logits` for the two kinds of batch and the mask)."""
    if "x" in batch:
        return model(batch["x"])
    mask = None if batch["labels"].ndim == 2 else batch["attention_mask"]
    return model(input_ids=batch["input_ids"], attention_mask=mask).logits


def loss_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Mean loss over the batch, the number of targets it averages (tokens for LM, examples otherwise), logits."""
    loss, logits = loss_and_logits(model, batch)
    return loss, target_count(batch), logits


@torch.no_grad()
def evaluate(model: nn.Module, data: TokenizedSet | ImageSet, batch_size: int, device: torch.device, bf16: bool,
             limit: int | None = None, world: World = SINGLE) -> dict[str, float]:
    """{'loss', 'accuracy'} for classification or {'loss', 'perplexity'} for LM, over ``limit`` examples."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    total_count = torch.zeros((), dtype=torch.long, device=device)
    batches = list(eval_batches(data, batch_size, limit))
    mine = world.shard(batches)
    for i in range(-(-len(batches) // world.size)):
        weight = int(i < len(mine))
        host = data.collate(mine[i] if weight else batches[0])
        count = target_count(host) * weight
        batch = to_device(host, device)
        with autocast(device, bf16):
            loss, logits = loss_and_logits(model, batch)
        if not data.is_lm:
            correct += (logits.argmax(-1) == batch["labels"]).sum() * weight
        total_loss += loss.double() * count
        total_count += count
    model.train(was_training)
    for total in (total_loss, correct, total_count):
        distributed.all_sum(total)
    mean, correct, total_count = float(total_loss) / max(int(total_count), 1), int(correct), int(total_count)
    if data.is_lm:
        return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": total_count}
    return {"loss": mean, "accuracy": correct / max(total_count, 1), "examples": total_count}
