"""Small random-init GPT-2-, Llama- and BERT-shaped models, for tests and throughput benchmarks.

Their weights mean nothing; their module names, layer types (GPT-2's Conv1D included) and shapes are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lowrank.errors import LowrankError

FAMILIES = ("gpt2", "llama", "bert")
TASKS = ("causal-lm", "classification")


def tiny_config(family: str, vocab_size: int = 1000, num_labels: int = 3):
    """A transformers config of ``family`` with 2 layers of width 32."""
    from transformers import BertConfig, GPT2Config, LlamaConfig

    if family == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                          num_labels=num_labels, pad_token_id=0)
    if family == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                           num_labels=num_labels, pad_token_id=0)
    if family == "bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=128, num_labels=num_labels)
    raise LowrankError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")


def tiny_model(family: str, task: str, seed: int = 0, vocab_size: int = 1000, num_labels: int = 3) -> nn.Module:
    """A random-init model of ``family`` for ``task`` ('causal-lm' or 'classification'), seeded."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task not in TASKS:
        raise LowrankError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    config = tiny_config(family, vocab_size, num_labels)
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification
    return auto.from_config(config).eval()


def save_tiny_model(folder: str | Path, family: str, task: str, tokenizer, seed: int = 0,
                    num_labels: int = 3) -> Path:
    """Save a tiny model sized to ``tokenizer``'s vocabulary, with that tokenizer, as a Hugging Face folder."""
    model = tiny_model(family, task, seed, vocab_size=len(tokenizer), num_labels=num_labels)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
