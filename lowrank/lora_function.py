"""The LoRA linear as one autograd Function: the minimum work for h = x W^T + b + s (D(x) A^T) B^T.

Shapes: x (..., in), W (out, in) (a Conv1D's (in, out) weight enters as its transpose, a view), b (out,) or None,
A (r, in), B (out, r), s a float; D is dropout with probability p (the identity when p = 0).

Forward, with N = prod(x.shape[:-1]) rows and X the (N, in) view of x:
    u = D(X) A^T                      (N, r)
    H = b + X W^T                     one GEMM (addmm), bias in its epilogue
    H += u (s B)^T                    one GEMM accumulating into H (beta = 1, alpha = s): no full-size add or scale
Backward, from G = dL/dH (N, out):
    v  = s G B                        (N, r), small, computed as its transpose (B^T G^T)
    dX = G W + D'(v A)                one GEMM, then one accumulating GEMM (D' = the dropout mask when p > 0)
    dA = v^T D(X)                     (r, in)
    dB = s G^T u                      (out, r), computed as (u^T G)^T
    dW = G^T X, db = sum G            only when the base weight / bias require grad (never under LoRA training)
Saved for backward: X and u (and the dropout mask when p > 0: one byte an element on CUDA, the scaled float mask
of lowrank.cpu_dropout on the CPU; D(X) is rebuilt from X and the mask), and W, A, B as cast to the compute dtype
(the parameters themselves when no cast was needed; under autocast a cast weight, as autocast's own linear keeps);
nothing full-size else, no copy of X for dropout when p = 0.

Precision: the product runs in the compute dtype, which is autocast's dtype when autocast is on for x's device,
else x's dtype. W, b, A and B are cast to it (a no-op when they already match; A and B are small). Gradients of A
and B come back in their own dtype. So float32 adapter factors on a bf16 model (lowrank's policy, as peft's
``autocast_adapter_dtype``) are master weights: the optimizer updates them in float32 while the two small products
run in bf16 beside the base GEMM, instead of casting x to float32 as peft does.
"""

from __future__ import annotations

import contextlib

import torch

from lowrank import cpu_dropout


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """autocast's dtype when autocast is enabled for ``x``'s device type, else ``x.dtype``."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _autocast_off(device: str):
    """A block without autocast for ``device``: torch's context when autocast is on there, else nothing to enter
    (the common case, which then costs no context switch on each call)."""
    return torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else contextlib.nullcontext()


def _redrop(t: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """D applied again with the forward's mask: the CPU's scaled float mask (lowrank.cpu_dropout) or CUDA's bool
    mask from ``native_dropout``."""
    if mask.is_floating_point():
        return t * mask
    return torch.ops.aten.native_dropout_backward(t, mask, 1.0 / (1.0 - p))


class LoraLinearFunction(torch.autograd.Function):
    """``apply(x, weight, bias, lora_A, lora_B, scaling, dropout, training)`` -> h (..., out); ``weight`` (out, in)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling: float, dropout: float, training: bool):
        dtype = compute_dtype(x)
        with _autocast_off(x.device.type):
            X = x.reshape(-1, x.shape[-1]).to(dtype)
            W, A, B = weight.to(dtype), lora_A.to(dtype), lora_B.to(dtype)
            mask = None
            if dropout > 0 and training:
                dropped, mask = cpu_dropout.drop_with_mask(X, dropout) if X.device.type == "cpu" else \
                    torch.ops.aten.native_dropout(X, dropout, True)
                u = dropped @ A.T
                del dropped
            else:
                u = X @ A.T
            H = torch.addmm(bias.to(dtype), X, W.T) if bias is not None else X @ W.T
            H.addmm_(u, B.T, alpha=scaling)
        ctx.save_for_backward(X, u, W, A, B, mask)  # W, A, B as cast: backward casts nothing again
        ctx.scaling, ctx.dropout, ctx.dtype = scaling, dropout, dtype
        ctx.x_shape, ctx.x_dtype, ctx.has_bias = x.shape, x.dtype, bias is not None
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None, lora_A.dtype, lora_B.dtype)
        return H.reshape(*x.shape[:-1], H.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        X, u, W, A, B, mask = ctx.saved_tensors
        s, dtype = ctx.scaling, ctx.dtype
        w_dtype, b_dtype, a_dtype, bb_dtype = ctx.dtypes
        need_x, need_w, need_b, need_a, need_bb = ctx.needs_input_grad[:5]
        dx = dW = db = dA = dB = None
        with _autocast_off(grad.device.type):
            G = grad.reshape(-1, grad.shape[-1]).to(dtype)
            vt = (B.T @ G.T).mul_(s)  # v^T: (r, N) products run twice as fast as (N, r) ones on the CPU's BLAS
            if need_x:
                dX = (G @ W).addmm_(vt.T, A) if mask is None else (G @ W).add_(_redrop(vt.T @ A, mask, ctx.dropout))
                dx = dX.reshape(ctx.x_shape).to(ctx.x_dtype)
            if need_a:
                dA = (vt @ (X if mask is None else _redrop(X, mask, ctx.dropout))).to(a_dtype)
            if need_bb:
                dB = (u.T @ G).mul_(s).T.to(bb_dtype)  # (u^T G)^T, for the same reason
            if need_w:
                dW = (G.T @ X).to(w_dtype)
            if need_b and ctx.has_bias:
                db = G.sum(0).to(b_dtype)
        return dx, dW, db, dA, dB, None, None, None


def lora_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_A: torch.Tensor,
                lora_B: torch.Tensor, scaling: float, dropout: float = 0.0, training: bool = False) -> torch.Tensor:
    """h = x W^T + b + s (D(x) A^T) B^T through :class:`LoraLinearFunction` (see the module docstring)."""
    return LoraLinearFunction.apply(x, weight, bias, lora_A, lora_B, scaling, dropout, training)
