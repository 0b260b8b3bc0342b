"""The Fastfood map of one block per row, with a transposed-chain backward and the small-input shortcut.

Row ``r`` of ``x`` holds the first ``w`` entries (``w`` a power of two dividing ``L``; the rest are zero) of a
block of ``theta_d``; the map is ``y_r = [H_L (G_r * (H_L (B_r * pad(x_r))).take(Pi_r))]_{:D}`` (``H`` the
unnormalized Walsh-Hadamard matrix, ``B`` +-1, ``Pi`` a permutation, ``G`` scaled Gaussians; see
:class:`~lowrank.intrinsic.projections.FastfoodProjection`).

Shortcut (exact): ``H_L = H_{L/w} (x) H_w`` and the first column of ``H_{L/w}`` is all ones, so for an input
supported on the first ``w`` entries ``H_L pad(u) = tile(H_w u, L / w)``: the first transform costs ``O(w log w)``
and the tile is never formed (``Pi`` gathers from ``H_w u`` at ``Pi_j mod w``). In the backward, only the first
``w`` entries of ``H_L v`` are needed, and those are ``H_w (sum of the L / w blocks of v)``. So a forward and
backward does two length-``L`` transforms instead of four.

The map is linear, so the backward is the transposed chain ``B * H_w fold((G * H_L pad(g)).take(Pi^-1))``, a
gather with the inverse permutation instead of a scatter; nothing is saved but the buffers.
"""

from __future__ import annotations

import torch

from lowrank.intrinsic.hadamard import hadamard_transform


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``inverse[perm[j]] = j`` (same dtype), so ``y = x[perm]`` has the transpose ``g -> g[inverse]``."""
    inverse = torch.empty_like(perm)
    inverse[perm.long()] = torch.arange(perm.numel(), dtype=perm.dtype, device=perm.device)
    return inverse


def tiled_index(perm: torch.Tensor, L: int, w: int) -> torch.Tensor:
    """Flat ``perm`` over ``n`` rows of length ``L`` (row ``r`` offset by ``r L``) -> the same entries read from
    ``n`` rows of length ``w``: ``r w + (perm mod w)``."""
    return (perm // L) * w + perm % w


class _FastfoodRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, signs, gather, inverse, gauss, D):  # noqa: D401 - autograd signature
        n, w = x.shape
        L = signs.shape[-1]
        ctx.save_for_backward(signs, inverse, gauss)
        ctx.D, ctx.w = D, w
        v = hadamard_transform(x * signs[:, :w])
        return hadamard_transform(v.reshape(-1).index_select(0, gather).view(n, L) * gauss)[:, :D]

    @staticmethod
    def backward(ctx, grad):
        signs, inverse, gauss = ctx.saved_tensors
        n, L = signs.shape
        w = ctx.w
        g = hadamard_transform(torch.nn.functional.pad(grad, (0, L - ctx.D))) * gauss
        folded = g.reshape(-1).index_select(0, inverse).view(n, L // w, w).sum(1)
        return hadamard_transform(folded) * signs[:, :w], None, None, None, None, None


def fastfood_rows(x: torch.Tensor, signs: torch.Tensor, gather: torch.Tensor, inverse: torch.Tensor,
                  gauss: torch.Tensor, D: int) -> torch.Tensor:
    """One Fastfood block per row.

    Args:
        x: ``(n, w)``, ``w`` a power of two ``<= L``: the leading entries of each row's zero-padded input.
        signs, gauss: ``(n, L)``: ``B`` and ``s G`` per row.
        gather: ``(n L,)`` flat, :func:`tiled_index` of the permutations for this ``w``.
        inverse: ``(n L,)`` flat, :func:`inverse_permutation` of the permutations (offsets ``r L``).
        D: output columns kept.

    Returns:
        ``(n, D)``.
    """
    return _FastfoodRows.apply(x, signs, gather, inverse, gauss, D)
