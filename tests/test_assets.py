"""The offline registry: real packaged assets resolve and load; unknown names list the valid keys."""

from __future__ import annotations

import pytest
import torch

from lowrank import assets
from lowrank.errors import LowrankError


def test_minilm_loads_as_a_classifier_with_a_fresh_head():
    model, tokenizer = assets.load_classifier("minilm-l6", num_labels=5)
    assert model.config.model_type == "bert" and model.classifier.out_features == 5
    assert sum(p.numel() for p in model.bert.parameters()) == 22_713_216
    batch = tokenizer(["a real sentence"], return_tensors="pt")
    assert model(**batch).logits.shape == (1, 5)
    assert not assets.is_causal_lm("minilm-l6")


def test_local_folder_and_unknown_key(tmp_path, tiny_llama_folder):
    assert assets.resolve_model_path(str(tiny_llama_folder)) == tiny_llama_folder
    assert assets.is_causal_lm(str(tiny_llama_folder))
    with pytest.raises(LowrankError, match="minilm-l6, smollm2-135m"):
        assets.resolve_model_path("gpt2")


def test_folder_without_safetensors_is_refused(tmp_path, tiny_llama_folder):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_llama_folder / "config.json").read_text())
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(LowrankError, match="cannot load a model"):
        assets.load_causal_lm(str(folder))
