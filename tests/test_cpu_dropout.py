"""CPU dropout (lowrank.cpu_dropout): its masks are Bernoulli(1 - p) draws, independent and seeded; dropping and its
gradient are x * keep / (1 - p), through one scaled mask; the attention it installs is the float64 formula with the
same mask, causal where the model is, and scaled-dot-product attention when nothing is dropped; a model trained with
it saves as before."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lowrank import cpu_dropout
from lowrank.tiny_models import tiny_model


@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_masks_drop_each_element_with_probability_p_independently(p):
    torch.manual_seed(0)
    n = 1 << 21
    keep = cpu_dropout.keep_mask((n,), p).float()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs((1 - keep.mean().item()) - p) < 5 * sigma + 2**-17
    for lane in range(cpu_dropout.LANES):  # each 16-bit lane of a word is uniform, not only the low ones
        part = keep[lane::cpu_dropout.LANES]
        assert abs((1 - part.mean().item()) - p) < 5 * (p * (1 - p) / part.numel()) ** 0.5 + 2**-17
    centred = keep - keep.mean()  # neighbours (same word and next word) are uncorrelated
    for shift in (1, 2, 3, 4, 5):
        correlation = (centred[:-shift] * centred[shift:]).mean() / centred.var()
        assert abs(correlation.item()) < 5 / n**0.5


def test_masks_follow_the_seed_and_differ_between_draws():
    torch.manual_seed(3)
    first, second = cpu_dropout.keep_mask((7, 9, 5), 0.2), cpu_dropout.keep_mask((7, 9, 5), 0.2)
    torch.manual_seed(3)
    assert torch.equal(cpu_dropout.keep_mask((7, 9, 5), 0.2), first)
    assert first.shape == (7, 9, 5) and first.dtype == torch.bool and not torch.equal(first, second)


def test_dropping_and_its_gradient_scale_the_kept_elements():
    x = torch.randn(6, 11, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(5)
    y, mask = cpu_dropout.drop_with_mask(x, 0.25)
    torch.manual_seed(5)
    keep = cpu_dropout.keep_mask(x.shape, 0.25)  # the same draw, as bools
    assert mask.dtype == torch.float64 and torch.equal(mask, keep.double() * (1 / 0.75))
    torch.testing.assert_close(y, x * keep * (1 / 0.75), rtol=0, atol=0)
    assert y.grad_fn._saved_self is None and y.grad_fn._saved_other is mask  # backward keeps the mask, not x
    upstream = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, upstream)
    torch.testing.assert_close(grad, upstream * keep * (1 / 0.75), rtol=0, atol=0)


def test_the_layer_is_nn_dropout_when_evaluating_or_p_is_zero():
    x = torch.randn(4, 8)
    layer = cpu_dropout.CpuDropout(0.3).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(cpu_dropout.CpuDropout(0.0).train()(x), x)
    torch.manual_seed(1)
    trained = cpu_dropout.CpuDropout(0.3).train()(x)
    torch.manual_seed(1)
    torch.testing.assert_close(trained, x * cpu_dropout.keep_mask(x.shape, 0.3) * (1 / 0.7), rtol=0, atol=0)


def _qkv(heads: int = 4, kv_heads: int = 2, length: int = 7, size: int = 8):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, heads, length, size, dtype=torch.float64, generator=generator)
    k, v = (torch.randn(2, kv_heads, length, size, dtype=torch.float64, generator=generator) for _ in range(2))
    mask = torch.zeros(2, 1, length, length, dtype=torch.float64)
    mask[1, ..., -2:] = torch.finfo(torch.float64).min  # the second sequence's last two keys are padding
    return q, k, v, mask


def test_attention_with_dropout_is_the_formula_with_the_same_mask():
    q, k, v, mask = _qkv()
    module = torch.nn.Module().train()
    torch.manual_seed(9)
    out, probs = cpu_dropout.attention(module, q, k, v, mask, dropout=0.2, scaling=0.3)
    torch.manual_seed(9)
    keep = cpu_dropout.keep_mask((2, 4, 7, 7), 0.2)
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)  # grouped keys and values
    expected = (torch.softmax(q @ kk.transpose(-1, -2) * 0.3 + mask, -1) * keep / 0.8) @ vv
    torch.testing.assert_close(out, expected.transpose(1, 2), rtol=1e-12, atol=1e-12)
    assert probs[1, ..., -2:].eq(0).all()  # padding gets no weight


def test_attention_without_dropout_is_scaled_dot_product_attention():
    q, k, v, mask = _qkv(kv_heads=4)
    module = torch.nn.Module().eval()
    module.is_causal = False
    out, _ = cpu_dropout.attention(module, q, k, v, mask, dropout=0.0, scaling=0.3)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(out, expected.transpose(1, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_an_installed_model_evaluates_as_before_and_trains_with_its_dropout(family):
    task = "classification" if family == "bert" else "causal-lm"
    plain, fast = tiny_model(family, task), cpu_dropout.install(tiny_model(family, task))
    assert fast.config._attn_implementation == cpu_dropout.ATTENTION
    assert all(type(m) is not torch.nn.Dropout for m in fast.modules())
    ids = torch.randint(5, 1000, (3, 12), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(fast(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    fast.train()
    torch.manual_seed(4)
    first = fast(input_ids=ids).logits
    torch.manual_seed(4)
    assert torch.equal(fast(input_ids=ids).logits, first)  # seeded
    assert not torch.allclose(fast(input_ids=ids).logits, first)  # and dropping
    if family == "gpt2":  # causal while training: a later token changes no earlier position
        changed = ids.clone()
        changed[:, -1] = 7
        torch.manual_seed(4)
        torch.testing.assert_close(fast(input_ids=changed).logits[:, :-1], first[:, :-1], rtol=0, atol=0)


def test_a_model_without_attention_dropout_keeps_its_attention():
    model = cpu_dropout.install(tiny_model("llama", "causal-lm"))
    assert cpu_dropout.attention_dropout(model.config) == 0.0
    assert model.config._attn_implementation != cpu_dropout.ATTENTION


def test_a_saved_model_names_no_lowrank_attention(tmp_path):
    model = cpu_dropout.install(tiny_model("bert", "classification"))
    model.save_pretrained(tmp_path)
    assert cpu_dropout.ATTENTION not in (tmp_path / "config.json").read_text()
    assert "attn_implementation" not in json.loads((tmp_path / "config.json").read_text())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_a_low_precision_mask_keeps_the_same_elements(dtype):
    torch.manual_seed(6)
    mask = cpu_dropout.scaled_mask((4096,), 0.1, dtype)  # lanes next to the threshold must not round across it
    torch.manual_seed(6)
    keep = cpu_dropout.keep_mask((4096,), 0.1)
    assert mask.dtype == dtype and torch.equal(mask > 0, keep)
    assert torch.equal(mask[keep], torch.full_like(mask[keep], 1 / 0.9))


def test_dropping_compiles_and_keeps_its_masks():
    x = torch.randn(4, 12, 48, 48, requires_grad=True)  # `lowrank train --compile` on the CPU traces this
    compiled = torch.compile(lambda t: cpu_dropout.drop(t, 0.1), backend="aot_eager", dynamic=True)
    torch.manual_seed(8)
    y = compiled(x)
    torch.manual_seed(8)
    keep = cpu_dropout.keep_mask(x.shape, 0.1)
    torch.testing.assert_close(y, x * keep / 0.9, rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, keep / 0.9 * torch.ones_like(x), rtol=1e-6, atol=0)
