"""Measure a trained adapter's sufficiency signals on real data: base + adapter loaded, gradients on a fixed
sample of training examples, :func:`lowrank.advice.sufficiency.module_signals` per adapted module.

The sample is ``examples`` training examples drawn with ``seed`` (classification) or the first ``examples``
training blocks of ``max_length`` tokens (language modelling); the same sample gives ``G`` (adapter on) and
``G0`` (adapter off, head kept).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lowrank import adapters, assets, lora
from lowrank.advice.gradients import adapters_off, weight_gradients
from lowrank.advice.sufficiency import Signals, module_signals
from lowrank.data.batches import TokenizedSet, epoch_order, tokenize_classification, tokenize_lm
from lowrank.data.text import TextDataset, load_text_dataset
from lowrank.errors import LowrankError
from lowrank.progress import ProgressCallback, report


@dataclass(frozen=True)
class MeasureConfig:
    """Args:
        adapter: a peft adapter folder (LoRA on linear or Conv1D layers, any trained head saved with it).
        base: the model it was trained on (registry key or local folder).
        data: the dataset it was trained on (registry key or local file); its training split is used.
        examples: training examples in the gradient sample (default 256).
        batch_size, max_length: as in training (defaults 32, 128).
        seed: draws the sample.
        device: "cpu" or "cuda".
    """

    adapter: str
    base: str
    data: str
    examples: int = 256
    batch_size: int = 32
    max_length: int = 128
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.examples < 1 or self.batch_size < 1 or self.max_length < 8:
            raise LowrankError("examples and batch size must be >= 1 and max length >= 8")
        if self.device not in ("cpu", "cuda") or (self.device == "cuda" and not torch.cuda.is_available()):
            raise LowrankError(f"device {self.device!r} is not available here (cpu, or cuda with a GPU)")


@dataclass(frozen=True)
class Measurement:
    """Per-module signals (module name -> :class:`Signals`), the sample size and the time it took."""

    signals: dict[str, Signals]
    task: str
    examples: int
    seconds: float


def load_adapted(adapter: str, base: str, dataset: TextDataset) -> tuple[torch.nn.Module, object, str]:
    """Base model with the adapter injected and loaded: ``(model, tokenizer, task)``.

    Raises LowrankError when the adapter's head does not fit the data's labels or its modules the model."""
    config = adapters.read_adapter_config(adapter)
    causal = config.task_type == "CAUSAL_LM" or (config.task_type is None and assets.is_causal_lm(base))
    if causal:
        model, tokenizer = assets.load_causal_lm(base)
    elif not dataset.has_labels:
        raise LowrankError(f"data {dataset.name} has no labels, but the adapter in {adapter} is a classifier")
    else:
        model, tokenizer = assets.load_classifier(base, dataset.num_labels)
    try:
        adapters.load_adapter(model, adapter)
    except LowrankError as error:
        if not causal:
            raise LowrankError(f"{error} (does --data {dataset.name}, with {dataset.num_labels} labels, fit "
                               "the adapter's classifier head?)") from None
        raise
    return model, tokenizer, "lm" if causal else "classification"


def gradient_sample(dataset: TextDataset, tokenizer, task: str, examples: int, max_length: int,
                    seed: int) -> TokenizedSet:
    """A fixed sample of training examples, tokenized as in training."""
    if task == "lm":
        data = tokenize_lm(tokenizer, dataset.train_texts, max_length)
        chosen = list(range(min(examples, len(data))))
    else:
        data = tokenize_classification(tokenizer, dataset.train_texts, dataset.train_labels, max_length)
        chosen = sorted(epoch_order(len(data), seed, 0)[:examples])
    if not chosen:
        raise LowrankError(f"data {dataset.name} gives no training examples at max length {max_length}")
    return TokenizedSet(tuple(data.input_ids[i] for i in chosen),
                        tuple(data.labels[i] for i in chosen) if data.labels else (), data.pad_id)


def measure(config: MeasureConfig, progress: ProgressCallback | None = None) -> Measurement:
    """Signals of every adapted module of ``config.adapter`` (see :mod:`lowrank.advice.sufficiency`)."""
    began = time.perf_counter()
    dataset = load_text_dataset(config.data)
    model, tokenizer, task = load_adapted(config.adapter, config.base, dataset)
    layers = lora.lora_layers(model)
    sample = gradient_sample(dataset, tokenizer, task, config.examples, config.max_length, config.seed)
    device = torch.device(config.device)
    model.to(device)
    batches = [sample.collate(list(range(i, min(i + config.batch_size, len(sample)))))
               for i in range(0, len(sample), config.batch_size)]
    report(progress, "gradient at the trained point", 0, 2)
    trained = weight_gradients(model, layers, batches, device)
    report(progress, "gradient at the base weights", 1, 2)
    with adapters_off(layers):
        start = weight_gradients(model, layers, batches, device)
    report(progress, "gradients", 2, 2)
    signals = {name: module_signals(trained[name], start[name], layer.lora_B.detach().cpu(),
                                    layer.lora_A.detach().cpu())
               for name, layer in layers.items()}
    return Measurement(signals, task, len(sample), time.perf_counter() - began)
