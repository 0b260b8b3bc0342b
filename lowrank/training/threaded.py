"""A CPU training step's micro-batches split over threads, each thread running its shard on one torch thread.

torch runs each CPU op on all of its threads, one op after another. At the demo's LoRA step (MiniLM-L6, 16 x 48
tokens, r = 8, 2 cores) the second thread speeds the matrix products up 1.63-1.95x, but GELU only 1.3-1.9x, copies
1.4-1.7x, the LoRA Function 1.1-1.4x, and the 44-61 ms of Python, autograd engine and random words not at all
(reports/training_speed.md). Here each of T threads runs rows [k n / T, (k + 1) n / T) of the micro-batch forward
and backward on one torch thread; torch's ops release the GIL, so one shard's Python runs while another's ops do.

The step's arithmetic is the same sum. Shard k's mean loss L_k is weighted by its share of the targets,
w_k = t_k / t, so that

    sum_k w_k L_k = L,    grad L = sum_k w_k grad L_k.

Each shard's gradients come back from ``torch.autograd.grad`` and are added into ``.grad`` in shard order, so a step
is reproducible (autograd's own accumulation adds the shards in whatever order the threads finish). Shard k drops
with its own generator (lowrank.cpu_dropout.own_words), seeded at each micro-batch by a draw from torch's default
generator: ``torch.manual_seed`` and a checkpoint's random state fix every mask, though they are other masks than
an unsplit step's.

Used for LoRA on text models: full fine-tuning measured slower split (each shard's gradient of every weight, the
embeddings' included, is a full-size tensor to fill and add), and an MLP's step is too short to share.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Iterator

import torch
from torch import nn

from lowrank import cpu_dropout
from lowrank.cpu import single_thread
from lowrank.mlp import MLP
from lowrank.training.evaluate import loss_and_logits, target_count


def usable(config, setup) -> bool:
    """Split steps on one CPU process with two or more torch threads, for LoRA on a text model, without
    torch.compile."""
    return (setup.device.type == "cpu" and not setup.world.distributed and torch.get_num_threads() > 1
            and config.method == "lora" and not isinstance(setup.model, MLP) and not config.compile)


@contextlib.contextmanager
def shards_for(config, setup) -> Iterator[Shards | None]:
    """:class:`Shards` over torch's threads while the block runs when :func:`usable`, else None."""
    if not usable(config, setup):
        yield None
        return
    shards = Shards(torch.get_num_threads())
    try:
        yield shards
    finally:
        shards.pool.shutdown()


class Shards:
    """Forward and backward of a micro-batch split over ``count`` threads: this one and ``count - 1`` helpers."""

    def __init__(self, count: int):
        self.count = count
        self.pool = ThreadPoolExecutor(count - 1, "lowrank-shard", initializer=torch.set_num_threads, initargs=(1,))

    def backward(self, model: nn.Module, trainable: list[nn.Parameter], batch: dict[str, torch.Tensor],
                 scale: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Add the gradients of ``scale(L)`` (``L`` the mean loss of ``batch``, a CPU batch) into ``trainable``'s
        ``.grad``, as ``scale(L).backward()`` would; return ``scale(L)``, detached. ``scale`` maps each shard's
        mean loss (it may be called from any of the threads)."""
        parts = split(batch, self.count)
        seeds = torch.empty(len(parts), dtype=torch.int64).random_(0, None).tolist()
        with single_thread():
            helpers = [self.pool.submit(_shard_backward, model, trainable, shard, weight, seed, scale)
                       for (shard, weight), seed in zip(parts[1:], seeds[1:])]
            try:
                results = [_shard_backward(model, trainable, *parts[0], seeds[0], scale)]
            finally:
                wait(helpers)  # no helper may still run when the threads are handed back
            results += [helper.result() for helper in helpers]
        for param, grads in zip(trainable, zip(*(grads for _, grads in results))):
            _accumulate(param, [grad for grad in grads if grad is not None])
        losses = [loss for loss, _ in results]
        return sum(losses[1:], losses[0])


def split(batch: dict[str, torch.Tensor], count: int) -> list[tuple[dict[str, torch.Tensor], float]]:
    """``batch`` cut by rows into at most ``count`` consecutive shards, each with its share of the batch's targets
    t_k / t; shards without targets are left out."""
    rows, total = len(batch["labels"]), target_count(batch)
    count, parts = min(count, rows), []
    for k in range(count):
        shard = {key: value[k * rows // count: (k + 1) * rows // count] for key, value in batch.items()}
        targets = target_count(shard)
        if targets:
            parts.append((shard, targets / total))
    return parts


def _shard_backward(model: nn.Module, trainable: list[nn.Parameter], shard: dict[str, torch.Tensor],
                    weight: float, seed: int, scale: Callable) -> tuple[torch.Tensor, tuple]:
    """(w_k scale(L_k) detached, its gradients with respect to ``trainable``: None where it does not reach)."""
    with cpu_dropout.own_words(seed):
        loss = scale(loss_and_logits(model, shard)[0]) * weight
        return loss.detach(), torch.autograd.grad(loss, trainable, allow_unused=True)


def _accumulate(param: nn.Parameter, grads: list[torch.Tensor]) -> None:
    """``param.grad += grads[0] + grads[1] + ...``, added in that order, in ``param``'s memory layout as autograd's
    own accumulation keeps it: fused AdamW on the CPU reads a gradient with the parameter's strides (given the
    transposed gradient that the LoRA Function returns for B, it updates B wrongly)."""
    if grads:
        total = sum(grads[1:], grads[0])
        if param.grad is None:
            param.grad = torch.empty_like(param).copy_(total)
        else:
            param.grad.add_(total)
