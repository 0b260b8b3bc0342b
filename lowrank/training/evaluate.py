"""Held-out evaluation: accuracy and loss for classification, loss and perplexity for language modelling.

Perplexity is exp(mean token cross-entropy), the mean taken over every non-padding target token.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from lowrank.data.batches import IGNORE_INDEX, ImageSet, TokenizedSet, eval_batches


def throughput_units(batch: dict[str, torch.Tensor]) -> int:
    """What throughput counts: non-padding tokens of a text batch, examples of an image batch."""
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else len(batch["labels"])


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op elsewhere."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Mean loss over the batch, the number of targets it averages (tokens for LM, examples otherwise), logits.

    An image batch ``{"x", "labels"}`` goes to ``model(x)`` (an MLP, which returns logits); a text batch
    ``{"input_ids", "attention_mask", "labels"}`` to a Hugging Face model (``.logits``)."""
    if "x" in batch:
        logits = model(batch["x"])
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"]
    if logits.ndim == 3:  # causal LM: predict token t+1 from tokens <= t
        shifted, targets = logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
        count = int((targets != IGNORE_INDEX).sum())
        return F.cross_entropy(shifted.float(), targets, ignore_index=IGNORE_INDEX), count, logits
    return F.cross_entropy(logits.float(), labels), labels.numel(), logits


@torch.no_grad()
def evaluate(model: nn.Module, data: TokenizedSet | ImageSet, batch_size: int, device: torch.device, bf16: bool,
             limit: int | None = None) -> dict[str, float]:
    """{'loss', 'accuracy'} for classification or {'loss', 'perplexity'} for LM, over ``limit`` examples."""
    was_training = model.training
    model.eval()
    total_loss, total_count, correct = 0.0, 0, 0
    for indices in eval_batches(data, batch_size, limit):
        batch = {k: v.to(device) for k, v in data.collate(indices).items()}
        with autocast(device, bf16):
            loss, count, logits = loss_of(model, batch)
        if not data.is_lm:
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
        total_loss += float(loss) * count
        total_count += count
    model.train(was_training)
    mean = total_loss / max(total_count, 1)
    if data.is_lm:
        return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": total_count}
    return {"loss": mean, "accuracy": correct / max(total_count, 1), "examples": total_count}
