"""Tokenized examples or flat images -> batches, in an order fixed by (seed, epoch) so that runs resume exactly.

Classification examples are truncated to ``max_length`` and padded per batch; language-modelling text is joined
with the end-of-sequence token and cut into blocks of ``max_length`` tokens, whose labels are the inputs.
Instruction and chat examples (lowrank.data.chat) stay one sequence each, padded per batch, with labels of their own
(:data:`IGNORE_INDEX` on the tokens without loss).
Images (:class:`ImageSet`) are rows of a float32 matrix and batch as ``{"x", "labels"}``.

A tokenized set is laid out once as a padded (n, longest) table and a length vector; a batch is one gather of rows
and columns [0, longest in the batch) and a mask ``arange(width) < length``: no per-row Python work.
Batches of examples of varying length (classification, instruction data) are length-bucketed (:func:`iter_batches`):
each run of ``BUCKET_BATCHES`` batches of the shuffled order is sorted by length before it is cut, and the batches
are then shuffled, so a batch holds examples of similar length (less padding) while every example still appears
once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Iterator

import torch

from lowrank.errors import LowrankError

IGNORE_INDEX = -100
BUCKET_BATCHES = 50  # batches per length-sorted run (Hugging Face's group_by_length uses the same mega-batch)


@dataclass(frozen=True)
class TokenizedSet:
    """``input_ids[i]`` is one example; ``labels`` holds class indices, or is empty for language modelling.
    ``targets[i]``: instruction data, example ``i``'s token labels (its ids, :data:`IGNORE_INDEX` where no loss is
    taken); empty for packed blocks, whose labels are their inputs."""

    input_ids: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...]
    pad_id: int
    targets: tuple[tuple[int, ...], ...] = ()

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def is_lm(self) -> bool:
        return not self.labels

    @property
    def varies_in_length(self) -> bool:
        """Examples of their own lengths (classification, instruction data), not blocks of one length."""
        return not self.is_lm or bool(self.targets)

    def token_count(self, indices: list[int]) -> int:
        return int(self.lengths[torch.as_tensor(indices, dtype=torch.long)].sum())

    @cached_property
    def lengths(self) -> torch.Tensor:
        """(n,) int64: tokens of each example."""
        return torch.tensor([len(ids) for ids in self.input_ids], dtype=torch.long)

    def _padded(self, rows: tuple[tuple[int, ...], ...], fill: int) -> torch.Tensor:
        """(n, longest) int64: ``rows`` laid out left-aligned, the rest ``fill``."""
        width = int(self.lengths.max()) if len(self) else 0
        table = torch.full((len(self), width), fill, dtype=torch.long)
        table[torch.arange(width) < self.lengths[:, None]] = torch.tensor(list(chain.from_iterable(rows)),
                                                                          dtype=torch.long)
        return table

    @cached_property
    def _table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids padded with ``pad_id``; labels: (n,) class indices, (n, longest) targets padded with
        :data:`IGNORE_INDEX` (instruction data), or empty (blocks); built once."""
        labels = self._padded(self.targets, IGNORE_INDEX) if self.targets else torch.tensor(self.labels,
                                                                                               dtype=torch.long)
        return self._padded(self.input_ids, self.pad_id), labels

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Pad the chosen examples to the longest; LM labels are the targets, or the inputs, padding ignored."""
        table, labels = self._table
        chosen = torch.as_tensor(indices, dtype=torch.long)
        lengths = self.lengths[chosen]
        width = int(lengths.max())
        ids = table[chosen, :width]
        mask = (torch.arange(width) < lengths[:, None]).long()
        if self.targets:
            labels = labels[chosen, :width]
        else:
            labels = ids.masked_fill(mask == 0, IGNORE_INDEX) if self.is_lm else labels[chosen]
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


def _bucketed(data: TokenizedSet | ImageSet) -> bool:
    """Classification text and instruction data have examples of different lengths (LM blocks and images are all
    one size)."""
    return isinstance(data, TokenizedSet) and data.varies_in_length


def iter_batches(data: TokenizedSet | ImageSet, batch_size: int, seed: int, epoch: int) -> Iterator[list[int]]:
    """The epoch's batches of indices, a function of (seed, epoch) alone (the last, smaller batch is kept).

    Examples of varying length: each run of ``BUCKET_BATCHES * batch_size`` shuffled indices is sorted by length
    (longest first, stable) and cut into batches, whose order is then shuffled. Otherwise plain shuffled batches.
    """
    order = torch.tensor(epoch_order(len(data), seed, epoch), dtype=torch.long)
    if _bucketed(data):
        runs = [run[torch.sort(data.lengths[run], descending=True, stable=True).indices]
                for run in order.split(BUCKET_BATCHES * batch_size)]
        order = torch.cat(runs)
    batches = order.split(batch_size)
    if _bucketed(data):
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch + 7_919)
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    for batch in batches:
        yield batch.tolist()


def eval_batches(data: TokenizedSet | ImageSet, batch_size: int, limit: int | None) -> Iterator[list[int]]:
    """Batches over all examples, or over a fixed seeded sample of ``limit`` of them (the same every call);
    examples of varying length in order of decreasing length (least padding)."""
    chosen = range(len(data)) if limit is None or limit >= len(data) else sorted(epoch_order(len(data), 0, 0)[:limit])
    chosen = torch.tensor(list(chosen), dtype=torch.long)
    if _bucketed(data) and len(chosen):
        chosen = chosen[torch.sort(data.lengths[chosen], descending=True, stable=True).indices]
    for batch in chosen.split(batch_size):
        yield batch.tolist()
