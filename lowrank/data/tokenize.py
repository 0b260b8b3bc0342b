"""A dataset split as the tokenized set a task reads, the one place where task and data format meet:

- classification: each text truncated to ``max_length`` tokens, with its class (:func:`tokenize_classification`);
- language modelling of texts: joined and cut into blocks of ``max_length`` tokens (:func:`tokenize_lm`);
- language modelling of instruction data (prompt/completion, chat messages): one sequence per example, the loss on
  the completion / assistant turns or, ``loss_on="all"``, on every token (:func:`tokenize_examples`).

Training, rank advice, held-out checks and extract/resize evaluation all tokenize through :func:`tokenize_split`,
so the same file means the same examples everywhere.
"""

from __future__ import annotations

from typing import Sequence

from lowrank.data.batches import TokenizedSet, tokenize_classification, tokenize_lm
from lowrank.data.chat import tokenize_examples
from lowrank.data.text import TextDataset


def tokenize_split(dataset: TextDataset, tokenizer, task: str, split: str, max_length: int, loss_on: str,
                   chosen: Sequence[int] | None = None) -> TokenizedSet:
    """The ``split`` ("train" or "test") of ``dataset`` for ``task`` ("classification" or "lm"), restricted to the
    examples ``chosen`` (indices into the split, in that order; None: all)."""
    def pick(items: tuple) -> tuple:
        return items if chosen is None else tuple(items[i] for i in chosen)

    train = split == "train"
    if dataset.is_instruction:
        examples = dataset.train_examples if train else dataset.test_examples
        return tokenize_examples(tokenizer, pick(examples), max_length, loss_on)
    texts = dataset.train_texts if train else dataset.test_texts
    if task == "classification":
        labels = dataset.train_labels if train else dataset.test_labels
        return tokenize_classification(tokenizer, pick(texts), pick(labels), max_length)
    return tokenize_lm(tokenizer, pick(texts), max_length)
