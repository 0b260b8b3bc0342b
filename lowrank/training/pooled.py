"""A BERT-style classifier's last layer, computed only where the classifier reads it.

BERT's and RoBERTa's classification heads read the last layer's output at position 0 alone (the pooler's
``h[:, 0]``, RoBERTa's ``features[:, 0, :]``). The other positions of that layer feed nothing, so the layer is
computed for position 0 only; its keys and values still come from every position:

    q = h_0 W_q^T,   K = H W_k^T,   V = H W_v^T          (H: the layer's input, batch x length x width)
    a = attention(q, K, V, mask row 0)                    one query per sequence
    out_0 = FFN(LN(a W_o^T + h_0)),   returned as batch x 1 x width

The logits and every gradient are the full layer's (the same operations on the rows that matter). What it saves:
the last layer's query, output, feed-forward and normalization work at all but one position, forward and
backward; on MiniLM-L6 (6 layers) about 14% of a step's matrix products.

Only for classification with a BERT or RoBERTa encoder without cross-attention or feed-forward chunking; the
layer's parameters and their names are untouched (its ``forward`` is replaced on the instance), so checkpoints and
adapters save as before.
"""

from __future__ import annotations

import types

import torch
from torch import nn

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
    """The encoder layer's output at position 0 (batch x 1 x width), from keys and values at every position."""
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
