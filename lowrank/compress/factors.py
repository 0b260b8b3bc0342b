"""Pure math of compressing an update into LoRA factors: which rank to keep, and how to split the SVD.

An update ``dW (m, n)`` with thin SVD ``U diag(S) Vh`` is truncated to rank ``k`` (Eckart-Young: the best rank-``k``
approximation in Frobenius norm) and written as peft factors with scaling ``s`` (``alpha / r`` or
``alpha / sqrt(r)``):

.. math::
    B' = U_k \\,\\mathrm{diag}(\\sqrt{S_k / s}), \\quad A' = \\mathrm{diag}(\\sqrt{S_k / s})\\, V_k^T,
    \\quad s\\, B' A' = U_k\\, \\mathrm{diag}(S_k)\\, V_k^T.

Splitting the singular values evenly gives ``||B'[:, i]|| = ||A'[i]||``: both factors have the same scale, so the
adapter keeps training well (neither factor's gradient vanishes, unlike ``B' = U S, A' = V^T``). The cost is

    kept energy  e_k = sum(S[:k]^2) / sum(S^2),   relative Frobenius error  ||dW - dW_k||_F / ||dW||_F = sqrt(1 - e_k).

Nothing here reads or writes files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowrank import spectra
from lowrank.errors import LowrankError
from lowrank.options import option


@dataclass(frozen=True)
class RankTarget:
    """Exactly one of a fixed ``rank`` (>= 1) or an ``energy`` fraction in ``(0, 1]`` to keep per module."""

    rank: int | None = option(None, "Keep this rank per module (capped at what the module has).")
    energy: float | None = option(None, "Keep, per module, the fewest singular directions holding this fraction in "
                                  "(0, 1] of ||dW||_F^2; ranks differ per module (rank_pattern / alpha_pattern).")

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise LowrankError("give exactly one of --rank and --energy")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int)
                                      or self.rank < 1):
            raise LowrankError(f"--rank must be an integer >= 1, got {self.rank!r}")
        if self.energy is not None and not (isinstance(self.energy, (int, float)) and 0.0 < self.energy <= 1.0):
            raise LowrankError(f"--energy must be in (0, 1], got {self.energy!r}")

    def describe(self) -> str:
        return f"rank {self.rank}" if self.rank is not None else f"energy {self.energy}"


def choose_rank(s: torch.Tensor, target: RankTarget, cap: int) -> int:
    """The rank kept for a module with singular values ``s`` (descending): ``min(rank, cap)`` for a fixed rank,
    else the energy rank ``k_F`` (smallest ``k`` with ``sum(s[:k]^2) >= F sum(s^2)``), also capped.

    ``cap`` is the largest rank the module can hold (``min(m, n)``, or an adapter's own rank). Returns 0 only for a
    zero update.
    """
    if cap < 1:
        raise LowrankError(f"rank cap must be >= 1, got {cap}")
    if target.rank is not None:
        return min(target.rank, cap)
    return min(spectra.energy_rank(s, float(target.energy)), cap)


def split_factors(svd: spectra.SVD, k: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B' (m, k), A' (k, n))`` in float32 with ``scale * B' @ A'`` the rank-``k`` truncation of ``svd``.

    Args:
        svd: thin SVD of the update, with vectors.
        k: kept rank, ``1 <= k <= len(svd.S)``.
        scale: the peft scaling the factors will be multiplied by (> 0).
    """
    if not svd.has_vectors:
        raise LowrankError("split_factors needs singular vectors (compute_uv=True)")
    spectra.checked_int(k, "k", 1, svd.S.numel())
    if not (math.isfinite(scale) and scale > 0):
        raise LowrankError(f"scale must be finite and > 0, got {scale}")
    root = torch.sqrt(svd.S[:k].to(torch.float64) / scale)
    B = svd.U[:, :k].to(torch.float64) * root
    A = root[:, None] * svd.Vh[:k].to(torch.float64)
    return B.to(torch.float32).contiguous(), A.to(torch.float32).contiguous()


def scaling(alpha: float, r: int, use_rslora: bool) -> float:
    """peft's scaling ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA)."""
    return alpha / (math.sqrt(r) if use_rslora else r)


def kept_energy(s: torch.Tensor, k: int) -> float:
    """``e_k = sum(s[:k]^2) / sum(s^2)`` (1.0 for a zero update)."""
    return spectra.energy_captured(s, k)


def relative_error(s: torch.Tensor, k: int) -> float:
    """``||dW - dW_k||_F / ||dW||_F = sqrt(sum(s[k:]^2) / sum(s^2))``, from the tail directly (no cancellation)."""
    s = s.detach().to("cpu", torch.float64)
    total = float((s**2).sum())
    return 0.0 if total == 0.0 else math.sqrt(float((s[k:] ** 2).sum()) / total)


def lora_parameters(k: int, shape: tuple[int, int]) -> int:
    """Parameters of rank-``k`` factors of an ``(m, n)`` update: ``k (m + n)``."""
    return k * (shape[0] + shape[1])
