"""Held-out evaluation for ``extract`` / ``resize --data``: a model folder, optionally with an adapter loaded on
top, scored on the dataset's test split (accuracy for classification, perplexity for language modelling) with
:func:`lowrank.tasks.evaluate.evaluate`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lowrank import adapters, devices
from lowrank.data.instructions import LOSS_ON, LOSS_ON_HELP
from lowrank.data.text import TextDataset, load_text_dataset
from lowrank.data.tokenize import tokenize_split
from lowrank.errors import LowrankError
from lowrank.options import option
from lowrank.tasks.evaluate import evaluate
from lowrank.tasks.kind import load_text_model, text_task


@dataclass(frozen=True)
class EvalConfig:
    """``data``: registry key or local file; ``limit``: a fixed first-N sample of the test split (None: all);
    ``loss_on``: instruction data's loss, on the "completion" or on "all" tokens (lowrank.data.chat)."""

    data: str
    max_length: int = option(128, "Tokens per example (--data).")
    batch_size: int = option(64, "Evaluation batch size.")
    limit: int | None = option(None, "Evaluate on the first N held-out examples only.", flag="--eval-samples")
    device: str = "auto"
    bf16: bool = True
    loss_on: str = option("completion", LOSS_ON_HELP, choices=LOSS_ON, listed_after="max_length")

    def __post_init__(self) -> None:
        if self.max_length < 8 or self.batch_size < 1 or (self.limit is not None and self.limit < 1):
            raise LowrankError(f"evaluation needs max length >= 8, batch size >= 1 and a sample >= 1; got "
                               f"{self.max_length}, {self.batch_size}, {self.limit}")
        if self.loss_on not in LOSS_ON:
            raise LowrankError(f"loss-on must be one of {', '.join(LOSS_ON)}, got {self.loss_on!r}")

    def torch_device(self) -> torch.device:
        return torch.device(devices.choose(self.device))


def load_data(config: EvalConfig) -> TextDataset:
    """The dataset, loaded up front so that a bad ``--data`` fails before any work is done."""
    return load_text_dataset(config.data)


def metric_name(dataset: TextDataset, model_path: str) -> str:
    return "accuracy" if dataset.has_labels and text_task(model_path) == "classification" else "perplexity"


def evaluate_model(model_path: str, adapter: Path | None, dataset: TextDataset, config: EvalConfig) -> dict:
    """Metrics of ``model_path`` (plus ``adapter`` when given) on ``dataset``'s test split."""
    task = "classification" if metric_name(dataset, model_path) == "accuracy" else "lm"
    model, tokenizer = load_text_model(model_path, task, dataset)
    test = tokenize_split(dataset, tokenizer, task, "test", config.max_length, config.loss_on)
    if len(test) == 0:
        raise LowrankError(f"data {config.data} gives no test examples at max length {config.max_length}")
    if adapter is not None:
        adapters.load_adapter(model, adapter)
    device = config.torch_device()
    model.to(device)
    return evaluate(model, test, config.batch_size, device, config.bf16, config.limit)
