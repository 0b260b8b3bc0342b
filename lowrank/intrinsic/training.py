"""A compact, seeded classification training loop for intrinsic-dimension runs.

Adam on every parameter of a module that requires a gradient (for a :class:`SubspaceModel`: ``theta_d``, SAID's
scales and any directly trained tensors; for direct training: the whole model), a fixed number of steps, full
batch when ``batch_size >= n_train`` else shuffled minibatches (a new permutation each epoch), cross-entropy,
then accuracy on the test set. The module is called with keyword inputs, ``module(**inputs)``, and may return
logits or an object with ``.logits`` (Hugging Face). The same loop trains ``R`` runs at once when the module is
run-batched (``lowrank.intrinsic.batched``: inputs ``(R, B, ...)``, logits ``(R, B, C)``, each run with its own
minibatch order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lowrank.errors import LowrankError
from lowrank.progress import ProgressCallback, report


@dataclass(frozen=True)
class RunBudget:
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

    def train_and_score(self, module: nn.Module, config: "RunBudget", seed: int,
                        progress: ProgressCallback | None = None, label: str = "training") -> float:
        """Train ``module`` on the train split, return its test accuracy (see :func:`train_and_score`)."""
        return train_and_score(module, self, config, seed, progress, label)

    def train_and_score_runs(self, module: nn.Module, config: "RunBudget", seeds: list[int],
                             progress: ProgressCallback | None = None, label: str = "training") -> list[float]:
        """Train a plain or run-batched ``module``, one test accuracy per run (:func:`train_and_score_runs`)."""
        return train_and_score_runs(module, self, config, seeds, progress, label)


def _logits(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def _batch(inputs: dict[str, torch.Tensor], index: torch.Tensor, device: str) -> dict[str, torch.Tensor]:
    return {name: tensor[index].to(device) for name, tensor in inputs.items()}


def _autocast(config: RunBudget):
    return torch.autocast(device_type=torch.device(config.device).type, dtype=torch.bfloat16,
                          enabled=config.autocast_bf16)


def _runs(module: nn.Module) -> int | None:
    """``R`` for a run-batched module (``lowrank.intrinsic.batched``), ``None`` for a plain one."""
    return getattr(module, "runs", None)


def _forward(module: nn.Module, inputs: dict[str, torch.Tensor], index: torch.Tensor, device: str) -> torch.Tensor:
    """Logits ``(R, B, C)`` for row indices ``index: (R, B)``; a plain module sees ``index[0]`` and gives R = 1."""
    if _runs(module) is None:
        return _logits(module(**_batch(inputs, index[0], device))).unsqueeze(0)
    return module(**_batch(inputs, index, device))


def evaluate_accuracies(module: nn.Module, task: ClassificationTask, config: RunBudget) -> list[float]:
    """Per run, the fraction of test examples whose argmax logit is the label."""
    module.eval()
    runs = _runs(module) or 1
    correct = torch.zeros(runs, dtype=torch.long)
    n = task.test_labels.shape[0]
    with torch.no_grad(), _autocast(config):
        for start in range(0, n, config.eval_batch_size):
            index = torch.arange(start, min(n, start + config.eval_batch_size)).expand(runs, -1)
            logits = _forward(module, task.test_inputs, index, config.device)
            correct += (logits.argmax(-1).cpu() == task.test_labels[index]).sum(1)
    return [int(c) / n for c in correct]


def evaluate_accuracy(module: nn.Module, task: ClassificationTask, config: RunBudget) -> float:
    """Fraction of test examples whose argmax logit is the label (a plain, one-run module)."""
    return evaluate_accuracies(module, task, config)[0]


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


def _loss(logits: torch.Tensor, labels: torch.Tensor, batched: bool) -> torch.Tensor:
    """Mean cross-entropy of one run; for R batched runs ``sum_r mean_b CE_rb`` (each run's own gradient)."""
    if not batched:
        return F.cross_entropy(logits[0].float(), labels[0])
    per_example = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")
    return per_example.view(labels.shape).mean(1).sum()


def train_and_score_runs(module: nn.Module, task: ClassificationTask, config: RunBudget, seeds: list[int],
                         progress: ProgressCallback | None = None, label: str = "training") -> list[float]:
    """Train ``module``'s trainable parameters with Adam for ``config.steps`` steps; return test accuracy per run.

    ``module`` is plain (one run, ``seeds = [s]``) or run-batched (``module.runs == len(seeds)``): run ``r`` draws
    its minibatch order from ``seeds[r]``, exactly as it would alone, and Adam on the stacked parameters is ``R``
    independent Adams (the loss is a sum of per-run means). ``seeds[0]`` also seeds every random op of the
    forward (dropout), through a forked RNG.
    """
    runs = _runs(module)
    if len(seeds) != (runs or 1):
        raise LowrankError(f"{len(seeds)} seeds for a module of {runs or 1} run(s)")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise LowrankError("the module has no trainable parameter")
    optimizer = torch.optim.Adam(params, lr=config.lr)
    n = task.train_labels.shape[0]
    streams = [_batches(n, config.batch_size, config.steps, torch.Generator().manual_seed(s)) for s in seeds]
    device = torch.device(config.device)
    devices = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    every = max(1, config.steps // 50)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seeds[0])
        module.train()
        for step, indices in enumerate(zip(*streams)):
            index = torch.stack(indices)
            with _autocast(config):
                logits = _forward(module, task.train_inputs, index, config.device)
            loss = _loss(logits, task.train_labels[index].to(config.device), runs is not None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % every == 0 or step + 1 == config.steps:
                report(progress, label, step + 1, config.steps, f"loss {loss.item() / len(seeds):.4f}")
    return evaluate_accuracies(module, task, config)


def train_and_score(module: nn.Module, task: ClassificationTask, config: RunBudget, seed: int,
                    progress: ProgressCallback | None = None, label: str = "training") -> float:
    """One run of :func:`train_and_score_runs`: train a plain ``module``, return its test accuracy."""
    return train_and_score_runs(module, task, config, [seed], progress, label)[0]
