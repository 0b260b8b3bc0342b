"""The update an adapter applies when it is more than ``s B A`` on an unchanged base: DoRA, PiSSA and OLoRA.

All weights are ``(out, in)`` (Conv1D transposed, convolutions flattened), embeddings ``(vocab, dim)``.

- DoRA (Liu et al. 2024): ``W' = diag(m / n) V`` with ``V = W0 + s B A`` and ``n`` the row norms of ``V`` (for an
  embedding, its column norms, one per dimension), so ``dW = W' - W0 = diag(m/n - 1) W0 + s diag(m/n) B A``:
  a low-rank directional part plus a row rescaling of W0, in general of full rank. Formed densely.
- PiSSA (Meng et al. 2024): the base was replaced by ``W0 - s B0 A0`` with ``s B0 A0 = U_r S_r V_r^T`` (W0's top-r
  SVD part; peft: ``B0 = U_r sqrt(S_r / s)``, ``A0 = sqrt(S_r / s) V_r^T``), so ``dW = s (B A - B0 A0)``.
- OLoRA (Büyükakyüz 2024): likewise with ``B0 = Q_r``, ``A0 = R_r`` from ``W0 = Q R``; ``Q_r R_r = Q_r Q_r^T W0``
  is the projection of W0 onto the span of its first r columns, so it is unique whatever the signs QR picks.

PiSSA's ``U_r S_r V_r^T`` is unique when ``S_r > S_{r+1}``; recomputed in float64, it differs from peft's float32
init by about ``1e-7 ||W0||_2``, which bounds the error of the recovered ``dW``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowrank.errors import LowrankError


@dataclass(frozen=True)
class DoraUpdate:
    """DoRA's applied update and its parts.

    Attributes:
        delta: ``dW = diag(m / n) (W0 + s B A) - W0``, dense.
        factor: ``m / n``, the rescaling applied per row (per embedding dimension).
        magnitude_change: ``||m - n0|| / ||n0||`` with ``n0`` the row (column) norms of W0: how far the learned
            magnitudes moved from the base's.
    """

    delta: torch.Tensor
    factor: torch.Tensor
    magnitude_change: float


def dora_update(W0: torch.Tensor, B: torch.Tensor, A: torch.Tensor, scale: float, magnitude: torch.Tensor,
                embedding: bool = False) -> DoraUpdate:
    """DoRA's ``dW`` in ``W0``'s dtype (see the module docstring); ``embedding`` normalizes columns, not rows."""
    dim = 0 if embedding else 1
    if magnitude.numel() != W0.shape[1 - dim]:
        raise LowrankError(f"DoRA magnitude has {magnitude.numel()} entries for a weight of shape {list(W0.shape)}")
    V = torch.addmm(W0, B.to(W0.dtype), A.to(W0.dtype), alpha=scale)
    norms = torch.linalg.vector_norm(V, dim=dim)
    if not bool((norms > 0).all()):
        raise LowrankError("DoRA: W0 + sBA has a zero row, so its direction is undefined")
    factor = magnitude.to(W0.dtype) / norms
    V.mul_(factor.unsqueeze(dim)).sub_(W0)
    base_norms = torch.linalg.vector_norm(W0, dim=dim)
    change = float(torch.linalg.vector_norm(magnitude.to(W0.dtype) - base_norms) / torch.linalg.vector_norm(base_norms))
    return DoraUpdate(V, factor, change)


def principal_part(W0: torch.Tensor, rank: int, scale: float, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """PiSSA's or OLoRA's starting factors ``(B0, A0)`` from ``W0`` (so the base it trained on was
    ``W0 - scale B0 A0``), computed in float64."""
    W = W0.to(torch.float64)
    if rank > min(W.shape):
        raise LowrankError(f"{method}: rank {rank} exceeds the weight's {list(W.shape)}")
    if method == "pissa":
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        root = torch.sqrt(S[:rank] / scale)
        return U[:, :rank] * root, root.unsqueeze(1) * Vh[:rank]
    if method == "olora":
        Q, R = torch.linalg.qr(W)
        return Q[:, :rank], R[:rank]
    raise LowrankError(f"unknown base-changing init {method!r}")


def started_from(B: torch.Tensor, A: torch.Tensor, B0: torch.Tensor, A0: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of ``B A - B0 A0`` as ``[B, -B0] @ [A; A0]`` (rank at most 2r), in float64."""
    return (torch.cat([B.to(torch.float64), -B0.to(torch.float64)], dim=1),
            torch.cat([A.to(torch.float64), A0.to(torch.float64)], dim=0))
