"""Tokenized examples or flat images -> batches, in an order fixed by (seed, epoch) so that runs resume exactly.

Classification examples are truncated to ``max_length`` and padded per batch; language-modelling text is joined
with the end-of-sequence token and cut into blocks of ``max_length`` tokens, whose labels are the inputs.
Images (:class:`ImageSet`) are rows of a float32 matrix and batch as ``{"x", "labels"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from lowrank.errors import LowrankError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedSet:
    """``input_ids[i]`` is one example; ``labels`` holds class indices, or is empty for language modelling."""

    input_ids: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...]
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def is_lm(self) -> bool:
        return not self.labels

    def token_count(self, indices: list[int]) -> int:
        return sum(len(self.input_ids[i]) for i in indices)

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Pad the chosen examples to the longest; LM labels are the inputs with padding ignored."""
        width = max(len(self.input_ids[i]) for i in indices)
        ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            ids[row, : len(self.input_ids[i])] = torch.tensor(self.input_ids[i])
            mask[row, : len(self.input_ids[i])] = 1
        if self.is_lm:
            labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        else:
            labels = torch.tensor([self.labels[i] for i in indices], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled images for a classifier that reads flat vectors: ``x`` (n, features) float32, ``labels`` (n,)
    int64. Same interface as :class:`TokenizedSet` for the training loop and evaluation."""

    x: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.dtype != torch.float32 or self.labels.dtype != torch.int64 \
                or tuple(self.labels.shape) != (self.x.shape[0],):
            raise LowrankError(f"images must be float32 (n, features) and labels int64 (n,), got "
                               f"{self.x.dtype} {tuple(self.x.shape)} and {self.labels.dtype} "
                               f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def is_lm(self) -> bool:
        return False

    def subset(self, indices: list[int]) -> "ImageSet":
        chosen = torch.tensor(indices, dtype=torch.long)
        return ImageSet(self.x[chosen], self.labels[chosen])

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """``{"x": (batch, features) float32, "labels": (batch,) int64}``."""
        chosen = torch.tensor(indices, dtype=torch.long)
        return {"x": self.x[chosen], "labels": self.labels[chosen]}


def tokenize_classification(tokenizer, texts: tuple[str, ...], labels: tuple[int, ...],
                            max_length: int) -> TokenizedSet:
    """Truncate each text to ``max_length`` tokens (special tokens included)."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return TokenizedSet(tuple(tuple(e) for e in encoded), tuple(labels), tokenizer.pad_token_id)


def tokenize_lm(tokenizer, texts: tuple[str, ...], block_size: int) -> TokenizedSet:
    """Join texts with EOS and cut the token stream into full blocks of ``block_size`` (the tail is dropped)."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids + [eos])
    blocks = tuple(tuple(stream[i: i + block_size]) for i in range(0, len(stream) - block_size + 1, block_size))
    return TokenizedSet(blocks, (), tokenizer.pad_token_id)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) that depends only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def iter_batches(data: TokenizedSet | ImageSet, batch_size: int, seed: int, epoch: int) -> Iterator[list[int]]:
    """The epoch's shuffled batches of indices (the last, smaller batch is kept)."""
    order = epoch_order(len(data), seed, epoch)
    for start in range(0, len(order), batch_size):
        yield order[start: start + batch_size]


def eval_batches(data: TokenizedSet | ImageSet, batch_size: int, limit: int | None) -> Iterator[list[int]]:
    """Batches over all examples, or over a fixed seeded sample of ``limit`` of them (the same every call)."""
    chosen = range(len(data)) if limit is None or limit >= len(data) else sorted(epoch_order(len(data), 0, 0)[:limit])
    chosen = list(chosen)
    for start in range(0, len(chosen), batch_size):
        yield chosen[start: start + batch_size]
