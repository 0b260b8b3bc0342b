"""Checks a training run makes before any work, so that bad input is one clear ``Error:`` line instead of an
IndexError deep in an embedding, or a run that trains on nothing:

- the model folder has tokenizer files (a folder of weights alone would otherwise load a tokenizer that maps every
  word to one unknown token, or none at all);
- every token id the tokenizer produced is below the model's embedding rows (a tokenizer from another model);
- ``max_length`` is at most the model's positions (``max_position_embeddings`` or ``n_positions``);
- each adapted module's rank ``r <= min(out, in)``: a larger r adds parameters but no rank, since
  ``rank(B A) <= min(out, r, in)``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lowrank import lora
from lowrank.data.batches import TokenizedSet
from lowrank.errors import LowrankError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")


def check_tokenizer_files(folder: Path) -> None:
    """Refuse a model folder with none of :data:`TOKENIZER_FILES`."""
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise LowrankError(f"{folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); save the "
                           "tokenizer beside the model (tokenizer.save_pretrained(folder))")


def check_max_length(model: nn.Module, max_length: int) -> None:
    """Refuse ``max_length`` above the model's learned or configured positions."""
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions is not None and max_length > positions:
        raise LowrankError(f"--max-length {max_length} is above the {positions} positions the model has "
                           f"(config max_position_embeddings); use --max-length {positions} or less")


def check_token_ids(model: nn.Module, sets: tuple[TokenizedSet, ...], folder: str) -> None:
    """Refuse token ids (padding included) at or above the model's embedding rows."""
    rows = model.get_input_embeddings().num_embeddings
    largest = max([max((max(ids) for ids in s.input_ids if ids), default=-1) for s in sets] +
                  [s.pad_id if s.pad_id is not None else -1 for s in sets])
    if largest >= rows:
        raise LowrankError(f"the tokenizer in {folder} gives token id {largest}, but the model's embedding has "
                           f"{rows} rows: the tokenizer belongs to another model (vocabulary sizes differ)")


def check_ranks(model: nn.Module) -> None:
    """Refuse an adapted module whose rank exceeds ``min(out, in)`` of its weight."""
    for name, layer in lora.lora_layers(model).items():
        r, inputs, outputs = layer.r, layer.lora_A.shape[1], layer.lora_B.shape[0]
        if r > min(inputs, outputs):
            raise LowrankError(f"rank {r} is above min(out, in) = {min(inputs, outputs)} of module {name} "
                               f"({outputs} x {inputs}); its update cannot have rank above that. Use "
                               f"--rank {min(inputs, outputs)} or less (or a rank_pattern for that module)")

