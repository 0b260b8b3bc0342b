"""The model and the fixed sample of training examples that rank advice takes gradients on, for text (a Hugging
Face classifier or causal LM) and images (an MLP), built without tokenizing more than the sample.

The sample is ``examples`` training examples drawn with ``seed`` (classification, instruction data, images) or the
first ``examples`` blocks of ``max_length`` tokens (language modelling of texts); instruction data is tokenized
with its loss on ``loss_on`` (lowrank.data.chat). Two starting points:

- :func:`trained`: the base with a trained adapter loaded (and its trained head), for ``analyze --data``;
- :func:`initial`: the base with LoRA injected at the targets and ``B = 0`` (so exactly the base) and a head drawn
  from ``seed`` as training draws it, for ``suggest-rank``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lowrank import adapters, lora
from lowrank.data.batches import TokenizedSet, epoch_order
from lowrank.data.text import TextDataset, load_text_dataset
from lowrank.data.tokenize import tokenize_split
from lowrank.errors import LowrankError
from lowrank.tasks.images import is_image_model, load_image_task
from lowrank.tasks.kind import adapter_is_causal, load_text_model, require_labels, text_task
from lowrank.tasks.modules import auto_targets, head_modules

BATCH_SIZE = 32


@dataclass
class Sample:
    """A model, its LoRA layers, and the sample (a TokenizedSet or ImageSet whose batches ``loss_of`` reads);
    ``heldout``: examples of the data's test split, when asked for."""

    model: nn.Module
    layers: dict[str, lora.LoraLayer]
    data: object
    heldout: object = None

    @property
    def examples(self) -> int:
        return len(self.data)

    def batches(self, start: int = 0, stop: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Examples ``start .. stop`` in batches of :data:`BATCH_SIZE`."""
        stop = len(self.data) if stop is None else stop
        return [self.data.collate(list(range(i, min(i + BATCH_SIZE, stop)))) for i in range(start, stop, BATCH_SIZE)]

    def halves(self) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
        """Two disjoint halves of equal size (an odd last example is left out)."""
        half = len(self.data) // 2
        return self.batches(0, half), self.batches(half, 2 * half)


def _text_sample(dataset: TextDataset, tokenizer, task: str, examples: int, max_length: int, seed: int,
                 loss_on: str, split: str = "train"):
    n = dataset.size(split)
    if task == "lm" and not dataset.is_instruction:
        stream = tokenize_split(dataset, tokenizer, task, split, max_length, loss_on,
                                range(min(n, max(1, examples * 8))))
        data = TokenizedSet(stream.input_ids[:examples], (), stream.pad_id)
    else:
        chosen = sorted(epoch_order(n, seed, 0)[:examples])
        data = tokenize_split(dataset, tokenizer, task, split, max_length, loss_on, chosen)
    if len(data) == 0:
        raise LowrankError(f"data {dataset.name} gives no {split} examples at max length {max_length}")
    return data


def _image(model: str, data: str, seed: int, examples: int, adapter: str | None,
           heldout: int = 0) -> tuple[nn.Module, object, object]:
    network, train_set, test_set = load_image_task(model, data, seed=seed, adapter=adapter)
    chosen = sorted(epoch_order(len(train_set), seed, 0)[:examples])
    kept = sorted(epoch_order(len(test_set), seed, 0)[:heldout]) if heldout else None
    return network, train_set.subset(chosen), test_set.subset(kept) if kept else None


def trained(adapter: str, base: str, data: str, examples: int, max_length: int, seed: int, loss_on: str,
            heldout: int = 0) -> Sample:
    """The base with ``adapter`` loaded, ``examples`` training examples and ``heldout`` test examples. Raises
    LowrankError when the adapter's head does not fit the data's labels or its modules the model."""
    if is_image_model(base):
        model, sample, test = _image(base, data, seed, examples, adapter, heldout)
        return Sample(model, lora.lora_layers(model), sample, test)
    dataset = load_text_dataset(data)
    config = adapters.read_adapter_config(adapter)
    causal = adapter_is_causal(config, base, dataset, adapter)
    task = "lm" if causal else "classification"
    model, tokenizer = load_text_model(base, task, dataset)
    heads = head_modules(model, task)
    if heads and not set(heads) & set(config.modules_to_save):
        raise LowrankError(f"{adapter} saves no trained classifier head ({', '.join(heads)} not in modules_to_save), "
                           "so its loss on --data would go through a random head")
    try:
        adapters.load_adapter(model, adapter)
    except LowrankError as error:
        if causal:
            raise
        raise LowrankError(f"{error} (does --data {dataset.name}, with {dataset.num_labels} labels, fit the "
                           "adapter's classifier head?)") from None
    sample = _text_sample(dataset, tokenizer, task, examples, max_length, seed, loss_on)
    test = _text_sample(dataset, tokenizer, task, heldout, max_length, seed, loss_on, "test") if heldout else None
    return Sample(model, lora.lora_layers(model), sample, test)


def initial(model_name: str, data: str, targets: str, examples: int, max_length: int, seed: int,
            loss_on: str) -> Sample:
    """The base with zero-initialized LoRA at ``targets`` (rank 1; ``B = 0``, so the model is the base) and a head
    drawn from ``seed``."""
    torch.manual_seed(seed)
    if is_image_model(model_name):
        model, sample, _ = _image(model_name, data, seed, examples, None)
        task = "classification"
    else:
        dataset = load_text_dataset(data)
        task = text_task(model_name)
        require_labels(task, dataset, f"data {data} has no 'label' column, which a classifier needs")
        model, tokenizer = load_text_model(model_name, task, dataset)
        sample = _text_sample(dataset, tokenizer, task, examples, max_length, seed, loss_on)
    chosen = auto_targets(model) if targets == "auto" else targets
    lora.inject(model, lora.LoraConfig(r=1, alpha=1.0, targets=lora.Targets.parse(chosen),
                                       trainable_modules=head_modules(model, task)))
    return Sample(model, lora.lora_layers(model), sample)
