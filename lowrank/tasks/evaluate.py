"""Held-out evaluation: accuracy and loss for classification, loss and perplexity for language modelling.

Perplexity is exp(mean token cross-entropy), the mean taken over every target token: not padding, and for
instruction data not a masked prompt or non-assistant token (lowrank.data.chat).
Batches come as the trainer's do (length-sorted, pinned, copied without blocking); losses and correct counts add up
on the device and are read once at the end, so evaluation never waits on the device batch by batch. On several
processes each rank evaluates every ``size``-th batch (a rank short of batches repeats the first at weight 0, so
that sharded models gather their weights in step) and the sums are added over the ranks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lowrank import distributed
from lowrank.data.batches import ImageSet, TokenizedSet, eval_batches
from lowrank.distributed import SINGLE, World
from lowrank.tasks.loss import autocast, loss_and_logits, target_count, to_device


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
