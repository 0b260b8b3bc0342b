"""LoRA layers against the paper's formula computed densely in float64, and target selection against peft."""

from __future__ import annotations

import math

import pytest
import torch
from peft.utils.other import get_pattern_key
from torch import nn
from transformers.pytorch_utils import Conv1D

from lowrank import lora
from lowrank.errors import LowrankError
from lowrank.tiny_models import tiny_model


def _randomize(model: nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora_B.normal_(0, 0.5, generator=generator)
            layer.lora_A.normal_(0, 0.5, generator=generator)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_layer_matches_dense_formula(kind):
    torch.manual_seed(0)
    base = nn.Linear(6, 5) if kind == "linear" else Conv1D(5, 6)
    layer = lora.LoraLayer(base, r=3, scaling=0.7)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6)
    W0 = base.weight.double() if kind == "linear" else base.weight.double().T
    expected = x.double() @ (W0 + 0.7 * layer.lora_B.double() @ layer.lora_A.double()).T + base.bias.double()
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_embedding_layer_matches_dense_formula():
    base = nn.Embedding(11, 4)
    layer = lora.LoraLayer(base, r=2, scaling=2.0)
    with torch.no_grad():
        layer.lora_A.normal_()
    ids = torch.tensor([[0, 3, 10]])
    weight = base.weight + layer.delta_weight()
    assert layer.delta_weight().shape == base.weight.shape
    torch.testing.assert_close(layer(ids), weight[ids])


def test_b_starts_at_zero_so_the_model_is_unchanged():
    model = tiny_model("llama", "causal-lm")
    ids = torch.randint(0, 1000, (2, 7))
    before = model(ids).logits
    lora.inject(model, lora.LoraConfig(r=4, alpha=8, targets=lora.Targets(all_linear=True)))
    torch.testing.assert_close(model(ids).logits, before)


def test_initializations():
    base = nn.Linear(400, 300)
    kaiming = lora.LoraLayer(base, r=16, scaling=1.0, init="kaiming")
    assert kaiming.lora_A.abs().max() <= 1 / math.sqrt(400) and kaiming.lora_B.abs().max() == 0
    gaussian = lora.LoraLayer(base, r=16, scaling=1.0, init="gaussian", generator=torch.Generator().manual_seed(0))
    assert abs(gaussian.lora_A.std().item() - 1 / 16) < 0.005


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_merge_unmerge_and_unwrap_are_exact(family):
    model = tiny_model(family, "classification")
    lora.inject(model, lora.LoraConfig(r=4, alpha=8, targets=lora.Targets(all_linear=True)))
    _randomize(model)
    ids = torch.randint(1, 1000, (2, 9))
    unmerged = model(ids).logits
    lora.merge(model)
    torch.testing.assert_close(model(ids).logits, unmerged, rtol=1e-4, atol=1e-5)
    lora.unmerge(model)
    torch.testing.assert_close(model(ids).logits, unmerged, rtol=1e-4, atol=1e-5)
    lora.unwrap(model)
    assert not lora.lora_layers(model)
    torch.testing.assert_close(model(ids).logits, unmerged, rtol=1e-4, atol=1e-5)


def test_all_linear_skips_the_head_and_only_adapters_and_named_modules_train():
    model = tiny_model("bert", "classification")
    config = lora.LoraConfig(r=2, alpha=2, targets=lora.Targets(all_linear=True), trainable_modules=("classifier",))
    names = lora.inject(model, config)
    assert "classifier" not in names and "bert.encoder.layer.0.attention.self.query" in names
    count = lora.mark_trainable(model, config.trainable_modules)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.endswith(("lora_A", "lora_B")) or n.startswith("classifier.")}
    assert "classifier.weight" in trainable and count == sum(p.numel() for n, p in model.named_parameters()
                                                            if n in trainable)


def test_target_selection_by_suffix_and_regex():
    model = tiny_model("llama", "causal-lm")
    by_suffix = lora.select_targets(model, lora.Targets(suffixes=("q_proj", "v_proj")))
    assert by_suffix == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                         "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    by_regex = lora.select_targets(model, lora.Targets(regex=r".*layers\.1\..*_proj"))
    assert all(".layers.1." in n for n in by_regex) and len(by_regex) == 7
    assert "lm_head" not in lora.select_targets(model, lora.Targets(all_linear=True))


def test_no_match_lists_candidates():
    model = tiny_model("llama", "causal-lm")
    with pytest.raises(LowrankError, match="match no module.*q_proj"):
        lora.select_targets(model, lora.Targets(suffixes=("query",)))


def test_patterns_follow_peft_semantics():
    patterns = {"layers.1.self_attn.q_proj": 2, "v_proj": 6, r"layers\.0\..*": 3}
    config = lora.LoraConfig(r=8, alpha=16, targets=lora.Targets(all_linear=True), rank_pattern=patterns,
                             alpha_pattern={"q_proj": 4.0}, use_rslora=True)
    for name in ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj",
                 "model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]:
        key = get_pattern_key(list(patterns), name)
        assert config.rank_for(name) == patterns.get(key, 8)
    assert config.scaling_for("model.layers.1.self_attn.q_proj") == pytest.approx(4.0 / math.sqrt(2))


@pytest.mark.parametrize("bad", [dict(r=0), dict(r=-1), dict(alpha=0), dict(dropout=1.0), dict(init="xavier")])
def test_bad_config_is_refused(bad):
    settings = dict(r=4, alpha=4, targets=lora.Targets(suffixes=("q",))) | bad
    with pytest.raises(LowrankError):
        lora.LoraConfig(**settings)


def test_targets_parse():
    assert lora.Targets.parse("all-linear").all_linear
    assert lora.Targets.parse("query, value").suffixes == ("query", "value")
    assert lora.Targets.parse("re:.*q").regex == ".*q"
    with pytest.raises(LowrankError):
        lora.Targets.parse("re:(")
