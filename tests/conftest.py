"""Shared fixtures: tiny random-init models and the real MiniLM tokenizer (packaged offline)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from lowrank.assets import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"), local_files_only=True)
