"""peft's key layout, spelled in this one place: ``base_model.model.<module><suffix>``.

- linear, GPT-2 Conv1D and convolution layers: ``.lora_A.weight`` (r, in[, k...]) and ``.lora_B.weight``
  (out, r[, 1...]);
- embeddings: ``.lora_embedding_A`` (r, vocab) and ``.lora_embedding_B`` (dim, r), without ``.weight``;
- AdaLoRA: ``.lora_A``, ``.lora_B`` and ``.lora_E`` (r, 1), without ``.weight``; DoRA: ``.lora_magnitude_vector``
  (with or without ``.weight``); lora_bias: ``.lora_B.bias``.

Every other tensor of a peft file belongs to a module trained in full (modules_to_save, or a head or embedding
peft saves anyway), stored under its own parameter name behind the prefix. lowrank writes the first two forms.
"""

from __future__ import annotations

PREFIX = "base_model.model."
LORA_A = ".lora_A.weight"
LORA_B = ".lora_B.weight"
EMBEDDING_A = ".lora_embedding_A"
EMBEDDING_B = ".lora_embedding_B"
# (suffix, role) in the order a key is tried: the longer suffix before the shorter one it ends with.
ROLES = ((EMBEDDING_A, "A"), (EMBEDDING_B, "B"), (".lora_magnitude_vector.weight", "magnitude"),
         (".lora_magnitude_vector", "magnitude"), (LORA_A, "A"), (LORA_B, "B"),
         (".lora_B.bias", "bias"), (".lora_A", "A"), (".lora_B", "B"), (".lora_E", "E"))
WRITTEN = (LORA_A, LORA_B, EMBEDDING_A, EMBEDDING_B)


def factor_suffixes(layer_kind: str) -> tuple[str, str]:
    """The suffixes of a module's ``(A, B)`` keys as lowrank writes them: embeddings' or every other layer's."""
    return (EMBEDDING_A, EMBEDDING_B) if layer_kind == "embedding" else (LORA_A, LORA_B)


def factor_keys(module: str, layer_kind: str) -> tuple[str, str]:
    """peft's full keys of ``module``'s ``(A, B)`` factors."""
    a, b = factor_suffixes(layer_kind)
    return PREFIX + module + a, PREFIX + module + b
