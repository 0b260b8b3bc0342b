"""Model and data names -> ``(build_model, task)`` for the d90 search.

- ``mlp:n0,...,nk`` on an image dataset (``lowrank.data.images``): each seed builds a freshly initialized network
  (Li et al.: ``theta0`` is a random initialization, different per run).
- A Hugging Face classifier (registry key such as ``minilm-l6`` or a local folder) on a labelled text dataset
  (``lowrank.data.text``): each seed loads the same pre-trained weights and a new classifier head drawn from the
  seed (Aghajanyan et al.). Texts are truncated to ``max_length`` tokens and padded to the longest example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lowrank.errors import LowrankError
from lowrank.intrinsic.search import ModelBuilder
from lowrank.intrinsic.training import ClassificationTask
from lowrank.mlp import build_mlp, is_mlp_spec, parse_mlp_spec


@dataclass(frozen=True, eq=False)
class Problem:
    """What the search needs: a seeded model builder and the labelled data."""

    build_model: ModelBuilder
    task: ClassificationTask


def image_problem(model: str, data: str, split_seed: int = 0) -> Problem:
    """``mlp:...`` on an image dataset; the network's input and output sizes must fit the data."""
    from lowrank.data.images import load_image_dataset

    sizes = parse_mlp_spec(model)
    dataset = load_image_dataset(data, seed=split_seed)
    if sizes[0] != dataset.features:
        raise LowrankError(f"{model} takes {sizes[0]} inputs but {data} has {dataset.features} pixels per image")
    if sizes[-1] < dataset.num_classes:
        raise LowrankError(f"{model} has {sizes[-1]} outputs but {data} has {dataset.num_classes} classes")
    task = ClassificationTask({"x": dataset.train_x}, dataset.train_y, {"x": dataset.test_x}, dataset.test_y,
                              dataset.num_classes)
    return Problem(lambda seed: build_mlp(model, seed), task)


def _encode(tokenizer, texts: tuple[str, ...], labels: tuple[int, ...], max_length: int):
    from lowrank.data.batches import tokenize_classification

    tokenized = tokenize_classification(tokenizer, texts, labels, max_length)
    batch = tokenized.collate(list(range(len(tokenized))))
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, batch["labels"]


def text_problem(model: str, data: str, max_length: int = 128, limit: int = 0) -> Problem:
    """A Hugging Face sequence classifier on a labelled text dataset.

    ``limit > 0`` keeps the first ``limit`` training and test examples (for quick runs).
    """
    from lowrank.assets import load_classifier
    from lowrank.data.text import load_text_dataset
    from lowrank.tasks.kind import require_labels

    dataset = load_text_dataset(data)
    require_labels("classification", dataset,
                   f"dataset {data!r} has no labels; intrinsic-dim needs a labelled classification set")
    _, tokenizer = load_classifier(model, dataset.num_labels)
    keep = slice(0, limit if limit > 0 else None)
    train_inputs, train_labels = _encode(tokenizer, dataset.train_texts[keep], dataset.train_labels[keep], max_length)
    test_inputs, test_labels = _encode(tokenizer, dataset.test_texts[keep], dataset.test_labels[keep], max_length)

    def build(seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return load_classifier(model, dataset.num_labels)[0]

    task = ClassificationTask(train_inputs, train_labels, test_inputs, test_labels, dataset.num_labels)
    return Problem(build, task)


def resolve_problem(model: str, data: str, split_seed: int = 0, max_length: int = 128) -> Problem:
    """``mlp:...`` -> :func:`image_problem`; anything else -> :func:`text_problem`."""
    if is_mlp_spec(model):
        return image_problem(model, data, split_seed)
    return text_problem(model, data, max_length)
