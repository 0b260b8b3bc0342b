"""Shared fixtures: tiny random-init models and the real MiniLM tokenizer (packaged offline)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture()
def one_thread():
    """Tiny tensors: a second OpenMP thread only adds contention on a shared CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from lowrank.assets import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"), local_files_only=True)


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory, minilm_tokenizer):
    """A 2-layer random-init BERT classifier folder with MiniLM's real tokenizer."""
    from lowrank.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert", "classification", minilm_tokenizer,
                           num_labels=8)


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory, minilm_tokenizer):
    """A 2-layer random-init Llama causal LM folder with MiniLM's real tokenizer."""
    from lowrank.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama", "causal-lm", minilm_tokenizer)


@pytest.fixture(scope="session")
def r8_csv(tmp_path_factory):
    """240 real Reuters R8 training texts and 60 test texts as a CSV with text, label and split columns."""
    import csv

    from lowrank.data.text import load_text_dataset

    data = load_text_dataset("reuters-r8")
    path = tmp_path_factory.mktemp("data") / "r8-small.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "split"])
        for i in range(240):
            writer.writerow([data.train_texts[i], data.label_names[data.train_labels[i]], "train"])
        for i in range(60):
            writer.writerow([data.test_texts[i], data.label_names[data.test_labels[i]], "test"])
    return path


@pytest.fixture(scope="session")
def invoke():
    """Run the lowrank CLI in-process; returns click's Result (stdout and stderr kept apart)."""
    from click.testing import CliRunner

    from lowrank_cli.main import _register, cli

    _register()

    def run(*args: str):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def friends_chat():
    """120 real conversations (Friends dialogue) as chat ``messages``: 100 train, 20 test (tests/data)."""
    from pathlib import Path

    return Path(__file__).parent / "data" / "friends_chat.jsonl"


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer, with the chat template its GGUF carries (the registry asset)."""
    from transformers import AutoTokenizer

    from lowrank.assets import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"), local_files_only=True)


@pytest.fixture(scope="session")
def tiny_chat_llama_folder(tmp_path_factory, smollm2_tokenizer):
    """A 2-layer random-init Llama causal LM folder with SmolLM2's real tokenizer and chat template."""
    from lowrank.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-chat-llama"), "llama", "causal-lm", smollm2_tokenizer)
