"""A compact, seeded classification training loop for intrinsic-dimension runs.

Adam on every parameter of a module that requires a gradient (for a :class:`SubspaceModel`: ``theta_d``, SAID's
scales and any directly trained tensors; for direct training: the whole model), a fixed number of steps, full
batch when ``batch_size >= n_train`` else shuffled minibatches (a new permutation each epoch), cross-entropy,
then accuracy on the test set. The module is called with keyword inputs, ``module(**inputs)``, and may return
logits or an object with ``.logits`` (Hugging Face). The lead's ``lowrank/training/loop.py`` could take this loop over.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lowrank.errors import LowrankError
from lowrank.progress import ProgressCallback, report


@dataclass(frozen=True)
class TrainConfig:
    """Budget of one run. ``autocast_bf16`` runs forward passes under bfloat16 autocast (CUDA)."""

    steps: int = 1000
    lr: float = 1e-2
    batch_size: int = 4096
    eval_batch_size: int = 1024
    device: str = "cpu"
    autocast_bf16: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise LowrankError(f"steps, batch_size, eval_batch_size must be >= 1, got {self.steps}, "
                               f"{self.batch_size}, {self.eval_batch_size}")
        if not self.lr > 0:
            raise LowrankError(f"learning rate must be positive, got {self.lr}")
        try:
            torch.device(self.device)
        except RuntimeError:
            raise LowrankError(f"unknown device {self.device!r} (expected cpu, cuda or cuda:N)") from None


@dataclass(frozen=True, eq=False)
class ClassificationTask:
    """Inputs as named tensors (first axis = examples) and integer labels, for train and test.

    The search calls :meth:`train_and_score`; any object with that method and a ``metric`` name is a task.
    """

    metric = "accuracy"

    train_inputs: dict[str, torch.Tensor]
    train_labels: torch.Tensor
    test_inputs: dict[str, torch.Tensor]
    test_labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for inputs, labels, part in ((self.train_inputs, self.train_labels, "train"),
                                     (self.test_inputs, self.test_labels, "test")):
            if labels.ndim != 1 or labels.numel() == 0:
                raise LowrankError(f"{part} labels must be a non-empty vector, got shape {tuple(labels.shape)}")
            for name, tensor in inputs.items():
                if tensor.shape[0] != labels.shape[0]:
                    raise LowrankError(f"{part} input {name!r} has {tensor.shape[0]} rows, labels {labels.shape[0]}")

    def train_and_score(self, module: nn.Module, config: "TrainConfig", seed: int,
                        progress: ProgressCallback | None = None, label: str = "training") -> float:
        """Train ``module`` on the train split, return its test accuracy (see :func:`train_and_score`)."""
        return train_and_score(module, self, config, seed, progress, label)


def _logits(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def _batch(inputs: dict[str, torch.Tensor], index: torch.Tensor, device: str) -> dict[str, torch.Tensor]:
    return {name: tensor[index].to(device) for name, tensor in inputs.items()}


def _autocast(config: TrainConfig):
    return torch.autocast(device_type=torch.device(config.device).type, dtype=torch.bfloat16,
                          enabled=config.autocast_bf16)


def evaluate_accuracy(module: nn.Module, task: ClassificationTask, config: TrainConfig) -> float:
    """Fraction of test examples whose argmax logit is the label."""
    module.eval()
    correct = 0
    n = task.test_labels.shape[0]
    with torch.no_grad(), _autocast(config):
        for start in range(0, n, config.eval_batch_size):
            index = torch.arange(start, min(n, start + config.eval_batch_size))
            logits = _logits(module(**_batch(task.test_inputs, index, config.device)))
            correct += int((logits.argmax(-1).cpu() == task.test_labels[index]).sum())
    return correct / n


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """``steps`` index tensors: all rows when ``batch_size >= n``, else consecutive slices of fresh permutations."""
    if batch_size >= n:
        everything = torch.arange(n)
        for _ in range(steps):
            yield everything
        return
    given = 0
    while given < steps:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            if given == steps:
                return
            yield order[start : start + batch_size]
            given += 1


def train_and_score(module: nn.Module, task: ClassificationTask, config: TrainConfig, seed: int,
                    progress: ProgressCallback | None = None, label: str = "training") -> float:
    """Train ``module``'s trainable parameters with Adam for ``config.steps`` steps, return test accuracy.

    ``seed`` fixes the minibatch order and every random op in the forward (dropout), through a forked RNG.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise LowrankError("the module has no trainable parameter")
    optimizer = torch.optim.Adam(params, lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(config.device)
    devices = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    every = max(1, config.steps // 50)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        module.train()
        for step, index in enumerate(_batches(task.train_labels.shape[0], config.batch_size, config.steps, generator)):
            with _autocast(config):
                logits = _logits(module(**_batch(task.train_inputs, index, config.device)))
            loss = F.cross_entropy(logits.float(), task.train_labels[index].to(config.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % every == 0 or step + 1 == config.steps:
                report(progress, label, step + 1, config.steps, f"loss {loss.item():.4f}")
    return evaluate_accuracy(module, task, config)
