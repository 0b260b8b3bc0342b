"""A BERT-style classifier's last layer at position 0 only (lowrank.training.pooled): the same logits and the same
gradients as the whole layer, in float64, with padding, under both attention implementations and under LoRA (the
key and value through effective weights W + s B A); training with dropout, the same as projecting keys and values
at every position; the parameters and their names untouched; nothing changed where the head reads more than
position 0."""

from __future__ import annotations

import copy

import pytest
import torch

from lowrank import cpu_dropout, lora
from lowrank.tiny_models import tiny_model
from lowrank.training import pooled


def _roberta():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, max_position_embeddings=130, num_labels=3, pad_token_id=1)
    return RobertaForSequenceClassification(config).eval()


def _models(family: str, attention: str, adapted: str | None, lora_dropout: float = 0.0):
    model = (tiny_model("bert", "classification") if family == "bert" else _roberta()).double()
    if attention == "cpu":
        cpu_dropout.install(model)
    if adapted:
        config = lora.LoraConfig(r=4, alpha=8, targets=lora.Targets.parse(adapted), dropout=lora_dropout)
        lora.inject(model, config, torch.Generator().manual_seed(0))
        lora.mark_trainable(model)
        for layer in lora.lora_layers(model).values():  # B = 0 at init: give the adapters a nonzero update
            torch.nn.init.normal_(layer.lora_B, std=0.1)
    return model, pooled.install(copy.deepcopy(model), "classification")


def _batch():
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 1000, (4, 13), generator=generator)
    mask = torch.ones(4, 13, dtype=torch.long)
    mask[1, 9:], mask[2, 4:], mask[3, 1:] = 0, 0, 0
    return ids, mask


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("attention", ["sdpa", "cpu"])
@pytest.mark.parametrize("adapted", [None, "query,value", "key,value,dense"])
def test_the_first_position_gives_the_whole_layers_logits_and_gradients(family, attention, adapted):
    whole, first = _models(family, attention, adapted)
    assert pooled.applies(whole, "classification")
    ids, mask = _batch()
    labels = torch.tensor([0, 2, 1, 1])
    losses = []
    for model in (whole, first):
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        losses.append((out.logits, out.loss))
    torch.testing.assert_close(losses[1][0], losses[0][0], rtol=1e-12, atol=1e-12)
    named = dict(first.named_parameters())
    assert list(named) == [name for name, _ in whole.named_parameters()]
    compared = 0
    for name, param in whole.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(named[name].grad, param.grad, rtol=1e-10, atol=1e-12)
            compared += 1
        else:
            assert named[name].grad is None
    assert compared == sum(p.requires_grad for p in whole.parameters())


def _train_and_compare(first: torch.nn.Module) -> list[torch.Size]:
    """Train-mode logits and gradients of ``first`` against its last layer's keys and values projected at every
    position, from the same random state (the dropout masks come in the same order, of the same sizes); returns
    the input shapes the last layer's key projection saw in ``first``'s own forward."""
    ids, mask = _batch()
    labels = torch.tensor([0, 2, 1, 1])
    layer = first.bert.encoder.layer[-1]
    keyed = []
    hook = layer.attention.self.key.register_forward_hook(lambda module, args, out: keyed.append(args[0].shape))
    results = []
    for forward in (layer.forward, lambda h, m=None, *a, **k: pooled._projected_forward(layer, h, m)):
        layer.forward = forward
        first.zero_grad()
        torch.manual_seed(7)
        out = first.train()(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        results.append((out.logits, {n: p.grad.clone() for n, p in first.named_parameters() if p.grad is not None}))
        if len(results) == 1:
            own = list(keyed)
    hook.remove()
    (logits, grads), (logits_projected, grads_projected) = results
    torch.testing.assert_close(logits, logits_projected, rtol=1e-12, atol=1e-12)
    assert grads.keys() == grads_projected.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], grads_projected[name], rtol=1e-10, atol=1e-12)
    return own


@pytest.mark.parametrize("lora_dropout", [0.0, 0.2])
def test_training_with_dropout_matches_keys_and_values_projected_at_every_position(lora_dropout):
    _, first = _models("bert", "cpu", "query,key,value", lora_dropout)
    for module in first.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.25
    keyed = _train_and_compare(first)
    # without LoRA dropout the key projection never runs; with it, it runs over every position (4 x 13)
    assert keyed == ([] if lora_dropout == 0.0 else [torch.Size([4, 13, 32])])


def test_it_changes_nothing_where_the_head_reads_other_positions():
    for model, task in [(tiny_model("bert", "causal-lm"), "lm"), (tiny_model("gpt2", "classification"),
                        "classification"), (tiny_model("llama", "classification"), "classification")]:
        forward = model.forward
        assert not pooled.applies(model, task)
        pooled.install(model, task)
        assert all("forward" not in vars(module) for module in model.modules()) and model.forward == forward
    bert = tiny_model("bert", "classification")
    assert not pooled.applies(bert, "lm")
