"""Dropout for training on the CPU: the same Bernoulli masks, drawn and applied several times faster than torch's.

torch's CPU dropout draws one Mersenne-Twister number per element (``bernoulli_``), which on MiniLM-L6's attention
probabilities takes longer than the layer's attention itself, and dropout keeps scaled-dot-product attention on its
slow unfused path. Here one random 64-bit word gives four 16-bit lanes, each a uniform integer L in [0, 2^16), and

    keep = L >= t,   t = round(p * 2^16),   so   P(drop) = t / 2^16,   |P(drop) - p| <= 2^-17;

    m = keep / (1 - p)  (in x's dtype),   y = x * m,   dy/dx = m

The scaled mask m is made in three cheap passes (the lanes as floats, compared in place, scaled) and dropping is one
float product each way (reading a bool mask costs torch a conversion copy and two products,
``native_dropout_backward``). The words come from numpy's SFC64 generator, seeded by one draw from torch's default
generator, so ``torch.manual_seed`` (and a checkpoint's saved random state) fixes every mask. The measured times
are in reports/training_speed.md ("CPU dropout and the last layer"; ``python benchmarks/cpu_step_bounds.py parts``).

:func:`install` puts this into a Hugging Face model for CPU training: every ``nn.Dropout`` becomes a
:class:`CpuDropout` (same ``p``, which models also read for their attention), and attention that drops
probabilities runs as ``drop(softmax(q k^T * scaling + mask)) @ v`` under the attention implementation
``ATTENTION`` (eager attention's additive masks); without dropout (evaluation) it is scaled-dot-product attention.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LANES = 4  # 16-bit lanes per random 64-bit word
ATTENTION = "lowrank_cpu_dropout"


@torch.compiler.disable  # numpy's generator runs eagerly; traced with dynamic shapes, its int16 view broke
def _lanes(count: int) -> torch.Tensor:
    """``count`` uniform int16 lanes: SFC64 words, seeded by one int64 from torch's default generator."""
    seed = int(torch.empty((), dtype=torch.int64).random_(0, None))
    words = np.random.SFC64(seed).random_raw(-(-count // LANES)).view(np.int16)
    return torch.from_numpy(words)[:count]


def _threshold(p: float) -> int:
    """t - 2^15: ``keep = L >= t`` on unsigned lanes is ``lane >= t - 2^15`` on the same bits read as int16."""
    return round(p * 65536) - 32768


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A bool mask of ``shape``: True with probability 1 - round(p * 2^16) / 2^16, independently per element."""
    return (_lanes(math.prod(shape)) >= _threshold(p)).view(shape)


def scaled_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> torch.Tensor:
    """m = keep / (1 - p) in ``dtype``: :func:`keep_mask`'s draw (the same for the same random state), scaled."""
    keep = _lanes(math.prod(shape)).view(shape).float().ge_(_threshold(p))  # 1.0 or 0.0; float32 holds int16 exactly
    return keep.to(dtype).mul_(1.0 / (1.0 - p))


def drop_with_mask(x: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Training dropout of ``x`` with probability ``p`` (0 < p < 1): (x * m, m), m = :func:`scaled_mask`;
    differentiable in x. The mask needs no gradient, so autograd saves only m and its backward is dy * m."""
    mask = scaled_mask(x.shape, p, x.dtype)
    return x * mask, mask


def drop(x: torch.Tensor, p: float) -> torch.Tensor:
    """:func:`drop_with_mask` without the mask."""
    return drop_with_mask(x, p)[0]


class CpuDropout(nn.Dropout):
    """``nn.Dropout`` whose training masks come from :func:`scaled_mask` on the CPU; elsewhere, or when ``p`` is 0
    or the module evaluates, exactly ``nn.Dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and 0.0 < self.p < 1.0 and x.device.type == "cpu":
            return drop(x, self.p)
        return super().forward(x)


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A Hugging Face attention function (query, key, value: batch x heads x length x head size; ``attention_mask``
    additive, batch x 1 x queries x keys, causality included; ``dropout`` as the model asks, 0 when evaluating).
    With dropout, ``drop(softmax(q k^T * scaling + mask)) @ v`` with :func:`scaled_mask`'s masks; otherwise
    scaled-dot-product attention. Returns (batch x length x heads x head size, the probabilities or None)."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if dropout == 0.0 or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = (query @ key.transpose(-1, -2)).mul_(query.shape[-1] ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        scores.add_(attention_mask[..., : key.shape[-2]])  # in place: the product's backward needs q and k only
    low = scores.dtype in (torch.float16, torch.bfloat16)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype) if low else F.softmax(scores, dim=-1)
    probs = drop(probs, dropout)
    return (probs @ value).transpose(1, 2).contiguous(), probs


def attention_dropout(config) -> float:
    """The attention-probability dropout a Hugging Face config asks for (BERT, GPT-2 and Llama spell it three ways)."""
    return max(float(getattr(config, name, 0.0) or 0.0)
               for name in ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout"))


def install(model: nn.Module) -> nn.Module:
    """Give a model :class:`CpuDropout` layers and, when its attention drops probabilities, the attention above
    (registered once under ``ATTENTION``, with eager attention's additive masks). Returns the model."""
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                replacement = CpuDropout(child.p, child.inplace)
                replacement.train(child.training)
                setattr(module, name, replacement)
    if hasattr(model, "set_attn_implementation") and attention_dropout(model.config) > 0.0:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

        AttentionInterface.register(ATTENTION, attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, eager_mask)
        model.set_attn_implementation(ATTENTION)
    return model
