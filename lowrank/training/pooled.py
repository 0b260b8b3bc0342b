"""A BERT-style classifier's last layer, computed only where the classifier reads it.

BERT's and RoBERTa's classification heads read the last layer's output at position 0 alone (the pooler's
``h[:, 0]``, RoBERTa's ``features[:, 0, :]``). The other positions of that layer feed nothing, so the layer is
computed for position 0 only. Its one query per sequence and head also makes the key and value projections over
every position unnecessary: with H the layer's input (batch x length x width), q_h = h_0 W_q,h^T + b_q,h scaled by
1/sqrt(d_h), and W_h the head's d_h rows of a weight,

    q_h K_h^T = (q_h W_k,h) H^T + q_h . b_k,h      (the last term shifts a row of scores alike)
    p_h = dropout(softmax((q_h W_k,h) H^T + mask row 0))
    p_h V_h   = (p_h H) W_v,h^T + (sum p_h) b_v,h

so a head's attention costs two products with H (width x length each) instead of projecting every position
(length x width x width each for K and V, forward and backward). W is the effective weight: a LoRA's W + s B A
(its factors get their gradients through it). The rest is the layer's own: out_0 = FFN(LN(a W_o^T + h_0)), returned
as batch x 1 x width.

The logits and every gradient are the full layer's. What it saves: the last layer's query, output, feed-forward and
normalization work at all but one position, and its key and value projections, forward and backward; on MiniLM-L6
(6 layers) about 17% of a step's matrix products. A LoRA with dropout on the key or value projection sees dropped
inputs that no effective weight expresses: there the projections run over every position, as the layer's own
attention would.

Only for classification with a BERT or RoBERTa encoder without cross-attention or feed-forward chunking; the
layer's parameters and their names are untouched (its ``forward`` is replaced on the instance), so checkpoints and
adapters save as before.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from lowrank.lora import LoraLayer
from lowrank.lora_function import compute_dtype

ENCODERS = ("bert", "roberta")


def applies(model: nn.Module, task: str) -> bool:
    """Whether :func:`install` changes ``model``: a BERT or RoBERTa sequence classifier, plain encoder layers."""
    config = getattr(model, "config", None)
    return (task == "classification" and getattr(config, "model_type", None) in ENCODERS
            and not config.is_decoder and not getattr(config, "add_cross_attention", False)
            and not config.chunk_size_feed_forward and _last_layer(model) is not None)


def install(model: nn.Module, task: str) -> nn.Module:
    """Compute ``model``'s last encoder layer at position 0 only, when :func:`applies`. Returns the model."""
    if applies(model, task):
        layer = _last_layer(model)
        layer.forward = types.MethodType(_first_position_forward, layer)
    return model


def _last_layer(model: nn.Module) -> nn.Module | None:
    encoder = getattr(getattr(model, model.base_model_prefix, None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    return layers[-1] if layers else None


def _first_position_forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                            *args, **kwargs) -> torch.Tensor:
    """The encoder layer's output at position 0 (batch x 1 x width), its attention through effective weights."""
    attention = self.attention.self
    key, value = _effective(attention.key, hidden_states), _effective(attention.value, hidden_states)
    if key is None or value is None:
        return _projected_forward(self, hidden_states, attention_mask)
    batch, length, width = hidden_states.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size
    first = hidden_states[:, :1]
    query = attention.query(first).view(batch, heads, size) * attention.scaling
    keyed = torch.einsum("bhe,hew->bhw", query, key[0].view(heads, size, width))
    scores = torch.bmm(keyed, hidden_states.transpose(1, 2))
    if key[1] is not None:  # softmax ignores it, but the bias keeps its (zero) gradient as in the whole layer
        scores = scores + torch.einsum("bhe,he->bh", query, key[1].view(heads, size)).unsqueeze(-1)
    if attention_mask is not None:
        scores = scores + _additive(attention_mask[:, :, :1], scores.dtype).view(batch, 1, length)
    probs = attention.dropout(torch.softmax(scores, dim=-1))
    context = torch.einsum("bhw,hew->bhe", torch.bmm(probs, hidden_states), value[0].view(heads, size, width))
    if value[1] is not None:
        context = context + probs.sum(-1, keepdim=True) * value[1].view(heads, size)
    attended = self.attention.output(context.reshape(batch, 1, -1), first)
    return self.output(self.intermediate(attended), attended)


def _effective(linear: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(W, b) of an ``nn.Linear``, or (W + s B A, b) of a LoRA on one, in the dtype the products of ``x`` run in;
    None for a LoRA that drops its inputs while training, or any other module."""
    if isinstance(linear, LoraLayer):
        if linear.kind != "linear" or (linear.dropout_p > 0 and linear.training):
            return None
        base = linear.base_layer
        weight = base.weight if linear.merged else base.weight + linear.delta_weight()
    elif isinstance(linear, nn.Linear):
        base, weight = linear, linear.weight
    else:
        return None
    dtype = compute_dtype(x)
    return weight.to(dtype), base.bias.to(dtype) if base.bias is not None else None


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An attention mask as scores to add: a boolean one (True: attend) as 0 and the dtype's lowest value."""
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def _projected_forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Position 0's output with keys and values projected at every position, through the model's attention."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    attention = self.attention.self
    batch, length = hidden_states.shape[:2]
    first = hidden_states[:, :1]
    heads = (-1, attention.attention_head_size)
    query = attention.query(first).view(batch, 1, *heads).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, *heads).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, *heads).transpose(1, 2)
    mask = None if attention_mask is None else attention_mask[:, :, :1]
    function = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    output, _ = function(attention, query, key, value, mask, dropout=attention.dropout.p if attention.training else
                         0.0, scaling=attention.scaling)
    attended = self.attention.output(output.reshape(batch, 1, -1), first)
    return self.output(self.intermediate(attended), attended)
