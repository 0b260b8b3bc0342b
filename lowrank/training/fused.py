"""Fused kernels for a training step on CUDA, from liger-kernel (the optional ``fused`` extra), for the model types
it knows (Llama, Mistral, Qwen, Gemma, ...): RMSNorm, SwiGLU and rotary embeddings each in one Triton kernel, and
for a causal LM the head's cross-entropy taken chunk by chunk, so the (tokens x vocabulary) logits never exist at
once:

    loss = (1 / T) sum_t [ logsumexp_v (h_t W^T)_v - (h_t W^T)_{y_t} ]

over the T targets t that are not ignored, with h the final hidden states, W the LM head and y_t the next token.
Each chunk's softmax gradient is formed in the forward pass and multiplied out at once into dL/dh (and dL/dW when
the head trains), which is what saves the memory of the logits and of their gradient.

Only the training step's loss goes through the fused head (:func:`step_loss`); evaluation keeps the logits. Liger
patches its kernels into the model's modules and its rotary function into the model type's module, for the rest
of the process. Without CUDA or the package, or for another model type, nothing changes.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from torch import nn

from lowrank.data.batches import IGNORE_INDEX
from lowrank.tasks.loss import loss_and_logits, next_tokens

HEAD = "_lowrank_fused_head"  # the attribute marking a model whose LM head loss is fused


def available() -> bool:
    """liger-kernel is installed (it needs Triton, hence CUDA)."""
    return importlib.util.find_spec("liger_kernel") is not None


def install(model: nn.Module, task: str) -> bool:
    """Put liger's kernels into ``model`` (on CUDA) where it supports the model's type; for a causal LM whose head
    is a plain linear layer (not adapted), also the fused head loss. Returns whether anything was installed."""
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return False
    _apply_liger_kernel_to_instance(model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)
    head = model.get_output_embeddings() if task == "lm" else None
    if type(head) is nn.Linear:
        setattr(model, HEAD, True)
    return True


def step_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean loss a training step differentiates: through the fused head where :func:`install` put one, else
    :func:`lowrank.tasks.loss.loss_and_logits`'s."""
    if not getattr(model, HEAD, False):
        return loss_and_logits(model, batch)[0]
    body = getattr(model, model.base_model_prefix)
    hidden = body(input_ids=batch["input_ids"], use_cache=False).last_hidden_state.flatten(0, 1)
    head = model.get_output_embeddings()
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else hidden.dtype
    bias = None if head.bias is None else head.bias.to(dtype)
    return _head_loss()(head.weight.to(dtype), hidden.to(dtype), next_tokens(batch["labels"]).flatten(), bias).float()


@functools.cache
def _head_loss() -> nn.Module:
    """liger's fused linear cross-entropy (mean over targets not IGNORE_INDEX), built once for the process."""
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX)
