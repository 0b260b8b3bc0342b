"""The fused LoRA Function against the plain formulation (float64), under every dtype path, dropout, gradient
checkpointing and torch.compile; and 50 training steps against peft from the same initialization."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from lowrank import cpu_dropout, lora
from lowrank.lora_function import lora_linear
from lowrank.tiny_models import tiny_model


def _plain(x, W, b, A, B, s, mask=None, p=0.0):
    """h = x W^T + b + s (D(x) A^T) B^T, D(x) = x * mask / (1 - p)."""
    dropped = x if mask is None else x * mask / (1 - p)
    return F.linear(x, W, b) + s * F.linear(F.linear(dropped, A), B)


def _inputs(dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    x, W, b, A, B = make(2, 5, 12), make(7, 12), make(7) if bias else None, make(3, 12), make(7, 3)
    return [t.requires_grad_() if t is not None else None for t in (x, W, b, A, B)]


def _grads(out, tensors, seed=1):
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out.backward(upstream.to(out.dtype))
    grads = [t.grad.clone() if t is not None else None for t in tensors]
    for t in tensors:
        if t is not None:
            t.grad = None
    return grads


def _relative(a, b):
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(bias):
    x, W, b, A, B = _inputs(torch.float64, bias)
    assert torch.autograd.gradcheck(lambda *t: lora_linear(*t, 0.7), (x, W, b, A, B) if bias else (x, W, None, A, B))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_outputs_and_gradients_match_the_plain_formulation(dtype, tolerance):
    tensors = _inputs(dtype)
    reference = [t.detach().double().requires_grad_() for t in tensors]
    out = lora_linear(*tensors, 1.5)
    expected = _plain(*reference, 1.5)
    assert out.dtype == dtype and _relative(out, expected) < tolerance
    for got, want in zip(_grads(out, tensors), _grads(expected, reference)):
        assert got.dtype == dtype and _relative(got, want) < tolerance


def test_autocast_runs_in_bf16_and_returns_float32_factor_gradients():
    x, W, b, A, B = _inputs(torch.float32)
    reference = [t.detach().double().requires_grad_() for t in (x, W, b, A, B)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lora_linear(x, W, b, A, B, 0.5)
    assert out.dtype == torch.bfloat16
    expected = _plain(*reference, 0.5)
    got, want = _grads(out, [x, W, b, A, B]), _grads(expected, reference)
    assert _relative(out, expected) < 1e-2
    assert all(g.dtype == torch.float32 and _relative(g, w) < 2e-2 for g, w in zip(got, want))


def test_dropout_uses_one_mask_for_forward_and_backward():
    x, W, b, A, B = _inputs(torch.float32)
    reference = [t.detach().double().requires_grad_() for t in (x, W, b, A, B)]
    torch.manual_seed(5)
    out = lora_linear(x, W, b, A, B, 0.9, dropout=0.3, training=True)
    torch.manual_seed(5)
    mask = cpu_dropout.keep_mask((x.numel() // 12, 12), 0.3)  # the CPU's masks (lowrank.cpu_dropout)
    expected = _plain(*reference, 0.9, mask.reshape(x.shape).double(), 0.3)
    assert _relative(out, expected) < 1e-6
    assert all(_relative(g, w) < 1e-6 for g, w in zip(_grads(out, [x, W, b, A, B]), _grads(expected, reference)))
    assert torch.equal(lora_linear(x, W, b, A, B, 0.9, dropout=0.3, training=False), _plain(x, W, b, A, B, 0.9))


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_layer_uses_the_function_for_linear_and_conv1d(kind):
    torch.manual_seed(0)
    base = nn.Linear(12, 7) if kind == "linear" else Conv1D(7, 12)
    layer = lora.LoraLayer(base, r=3, scaling=0.7)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 5, 12, requires_grad=True)
    W = base.weight if kind == "linear" else base.weight.T
    out = layer(x)
    expected = _plain(x, W, base.bias, layer.lora_A, layer.lora_B, 0.7)
    torch.testing.assert_close(out, expected)
    params = [x, layer.lora_A, layer.lora_B, base.weight, base.bias]
    torch.testing.assert_close(torch.autograd.grad(out.sum(), params), torch.autograd.grad(expected.sum(), params))


def test_factors_are_float32_on_a_bf16_base():
    layer = lora.LoraLayer(nn.Linear(8, 4).to(torch.bfloat16), r=2, scaling=1.0)
    assert layer.lora_A.dtype == layer.lora_B.dtype == torch.float32
    out = layer(torch.randn(3, 8, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def _lora_model(family, seed=0, dtype=torch.float32):
    model = tiny_model(family, "causal-lm", seed=seed).to(dtype)
    lora.inject(model, lora.LoraConfig(r=4, alpha=8, targets=lora.Targets(all_linear=True)),
                torch.Generator().manual_seed(seed))
    lora.mark_trainable(model)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora_B.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    return model


def _factor_grads(model, ids):
    model.zero_grad()
    torch.manual_seed(0)  # GPT-2's own dropout: the same masks in both runs
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_gradient_checkpointing_gives_the_same_gradients(family):
    model = _lora_model(family).train()
    ids = torch.randint(1, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    plain = _factor_grads(model, ids)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = _factor_grads(model, ids)
    assert all(torch.allclose(plain[n], checkpointed[n], rtol=1e-5, atol=1e-7) for n in plain)


def test_torch_compile_traces_the_function_in_one_graph():
    x, W, b, A, B = _inputs(torch.float32)
    compiled = torch.compile(lambda *t: lora_linear(*t, 0.7, 0.0, True), backend="aot_eager", fullgraph=True)
    out = compiled(x, W, b, A, B)
    expected = lora_linear(x, W, b, A, B, 0.7)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(_grads(out, [x, W, b, A, B]), _grads(expected, [x, W, b, A, B]))


def _copy_into_peft(ours: nn.Module, family: str) -> nn.Module:
    """peft on the same base weights and the same A, B (adapters float32, as peft keeps them)."""
    base = tiny_model(family, "causal-lm", seed=0).to(torch.bfloat16)
    peft_model = get_peft_model(base, PeftLoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                     fan_in_fan_out=family == "gpt2"))
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, layer in lora.lora_layers(ours).items():
            theirs[f"base_model.model.{name}.lora_A.default.weight"].copy_(layer.lora_A)
            theirs[f"base_model.model.{name}.lora_B.default.weight"].copy_(layer.lora_B)
    return peft_model


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_fifty_bf16_training_steps_agree_with_peft(family):
    ours = _lora_model(family, dtype=torch.bfloat16)  # factors float32 by the precision policy
    theirs = _copy_into_peft(ours, family)
    models = (ours, theirs)
    optimizers = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3) for m in models]
    batches = torch.randint(1, 1000, (4, 4, 16), generator=torch.Generator().manual_seed(3))
    losses = ([], [])
    for step in range(50):
        ids = batches[step % 4]
        for model, optimizer, record in zip(models, optimizers, losses):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            record.append(float(loss))
    assert losses[0][-1] < losses[0][0] - 0.05, losses[0]
    assert max(abs(a - b) for a, b in zip(*losses)) < 0.01, losses
    theirs_params = dict(theirs.named_parameters())
    for name, layer in lora.lora_layers(ours).items():
        for factor in ("A", "B"):
            mine = getattr(layer, f"lora_{factor}")
            peft = theirs_params[f"base_model.model.{name}.lora_{factor}.default.weight"]
            assert mine.dtype == peft.dtype == torch.float32
            assert _relative(mine.detach(), peft.detach()) < 2e-2, (name, factor)
