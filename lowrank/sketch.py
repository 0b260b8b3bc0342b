"""Randomized range finding with a posteriori bounds on energy ranks: the ``--fast`` route for dense matrices.

For ``M (m, n)``, ``p = min(m, n)`` and a sketch size ``l < p`` (Halko, Martinsson & Tropp 2011, alg. 4.4):

    Y = M Omega            Omega (n, l) Gaussian, drawn from a seeded generator
    q power iterations     Y <- M orth(M^T orth(Y))   (re-orthonormalized each half step)
    Q = qr(Y) (m, l),  B = Q^T M (l, n),  R = M - Q B        (B in float64)

Because ``Q^T R = 0``: ``M^T M = B^T B + R^T R`` and ``T = ||M||_F^2 = ||B||_F^2 + rho^2`` with
``rho^2 = ||R||_F^2 = T - ||B||_F^2``, both exact (float64, widened by ``SLACK * T`` for rounding). With
``E(k) = sum_{i<=k} s_i(M)^2`` and ``E_B(k)`` likewise for ``B`` (``E_B(k) = ||B||_F^2`` for ``k >= l``):

    E_B(k) <= E(k) <= E_B(k) + rho^2        (Weyl monotonicity, M^T M >= B^T B; Ky Fan for the sum)
    E(k) >= ||B||_F^2 + (k - l) rho^2 / p_R  for k > l   (span(Q) plus R's top k - l left vectors, orthogonal to
                                                           Q; those hold at least their share of rho^2 over
                                                           rank R <= p_R = min(m - l, n) directions)

So the energy rank ``k_tau = min{k : E(k) >= tau T}`` lies in ``[k_lo, k_hi]`` with ``k_lo = min{k : U(k) >= tau T}``
for the upper bound ``U`` and ``k_hi = min{k : L(k) >= tau T}`` for the lower bound ``L`` above. The bounds hold for
any orthonormal ``Q``; the random draw only decides how tight they are. Also ``s_i(B) <= s_i(M)``: the sketch's
singular values are lower bounds, and ``||dW||_F`` is exact. Pure linear algebra, no IO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowrank.errors import LowrankError
from lowrank.spectra import SVD, checked_int, checked_matrix

SLACK = 1e-10  # relative widening of rho^2 for float64 rounding in T and ||B||_F^2 (about p u64 << 1e-10)
START = 64  # first sketch size
OVERSAMPLE = 16  # sketch columns beyond the vectors kept
POWER = 1  # power iterations
BLOCK = 512  # columns of M upcast to float64 at a time for B = Q^T M and ||M||_F^2


@dataclass(frozen=True)
class Sketch:
    """A sketched SVD of ``M (m, n)``: ``svd`` holds ``s_i(B)`` (``l`` lower bounds of ``s_i(M)``) and the top
    ``keep`` vectors ``Q U_B``, ``V_B^T``; ``total = ||M||_F^2`` and ``residual = rho^2 >= ||M - Q Q^T M||_F^2``."""

    svd: SVD
    total: float
    residual: float
    size: int
    shape: tuple[int, int]

    @property
    def _residual_low(self) -> float:
        """``rho^2`` narrowed by the rounding slack (``residual`` is widened by it): a lower bound of ``||R||_F^2``."""
        return max(self.residual - 2 * SLACK * self.total, 0.0)

    @property
    def rank_limit(self) -> int:
        """``p_R = min(m - l, n)``, at least the rank of the residual ``R``."""
        m, n = self.shape
        return max(min(m - self.size, n), 1)

    def _sketched(self) -> torch.Tensor:
        return torch.cumsum(self.svd.S.detach().cpu().to(torch.float64) ** 2, 0)

    def energy_bounds(self, k: int) -> tuple[float, float]:
        """``(L(k), U(k))``: lower and upper bounds of ``E(k)``, the energy of the best rank-``k`` approximation."""
        cum, l = self._sketched(), self.size
        if k <= 0:
            return 0.0, 0.0
        head = float(cum[min(k, l) - 1])
        lower = head if k <= l else head + (k - l) * self._residual_low / self.rank_limit
        return max(min(self.total, lower) - SLACK * self.total, 0.0), min(self.total, head + self.residual)

    def energy_rank_bounds(self, tau: float) -> tuple[int, int]:
        """``(k_lo, k_hi)`` with ``k_lo <= k_tau <= k_hi``, both in ``[1, p]``; ``(0, 0)`` for a zero matrix."""
        if not 0.0 < tau <= 1.0:
            raise LowrankError(f"tau must be in (0, 1], got {tau}")
        p = min(self.shape)
        if self.total == 0.0:
            return 0, 0
        target = torch.tensor([tau * self.total], dtype=torch.float64)
        cum = self._sketched()
        k_lo = int(torch.searchsorted(cum + self.residual, target, side="left")) + 1
        lower = cum - SLACK * self.total
        missing = float(target) - float(lower[-1])
        if missing <= 0.0:
            k_hi = int(torch.searchsorted(lower, target, side="left")) + 1
        elif self._residual_low > 0.0:
            k_hi = self.size + math.ceil(missing * self.rank_limit / self._residual_low)
        else:
            k_hi = p
        return min(k_lo, p), min(max(k_hi, k_lo), p)

    def captured_bounds(self, k: int) -> tuple[float, float]:
        """Bounds of ``E(k) / T``, the energy fraction kept by the best rank-``k`` approximation."""
        if self.total == 0.0:
            return 1.0, 1.0
        lower, upper = self.energy_bounds(k)
        return lower / self.total, upper / self.total

    def completed(self) -> torch.Tensor:
        """``s_i(B)`` followed by the residual spread evenly over the other ``p - l`` values: an estimate of the
        whole spectrum (for the effective rank; not a bound)."""
        s = self.svd.S.detach().cpu().to(torch.float64)
        rest = min(self.shape) - self.size
        if rest <= 0 or self.residual <= 0.0:
            return s
        return torch.cat([s, torch.full((rest,), math.sqrt(self.residual / rest), dtype=torch.float64)])


def range_basis(M: torch.Tensor, size: int, power: int, generator: torch.Generator) -> torch.Tensor:
    """Orthonormal ``Q (m, size)``, float64, approximating the range of ``M``'s top ``size`` singular vectors:
    ``Y = M Omega`` then ``power`` iterations ``Y <- M orth(M^T orth(Y))`` in ``M``'s dtype, ``Q = qr(Y)``."""
    omega = torch.randn(M.shape[1], size, generator=generator, dtype=torch.float64).to(M.device, M.dtype)
    Y = M @ omega
    for _ in range(power):
        Z = torch.linalg.qr(M.T @ torch.linalg.qr(Y)[0])[0]
        Y = M @ Z
    return torch.linalg.qr(Y.to(torch.float64))[0]


def sketch_svd(M: torch.Tensor, size: int, keep: int, generator: torch.Generator, power: int = POWER) -> Sketch:
    """The :class:`Sketch` of ``M (m, n)`` with ``l = size`` columns and the top ``keep <= l`` vectors.

    Args:
        M (Tensor): a real finite matrix (float32 or float64, any device); ``B`` and the totals are float64.
        size (int): sketch columns ``l``, ``1 <= l < min(m, n)``.
        keep (int): leading singular vectors returned (``U = Q U_B (m, keep)``, ``Vh (keep, n)``).
        generator: draws ``Omega``; power (int): power iterations (default 1).
    """
    X = checked_matrix(M, "M").detach()
    p = min(X.shape)
    size = checked_int(size, "size", 1, max(p - 1, 1))
    keep = checked_int(keep, "keep", 0, size)
    Q = range_basis(X, size, checked_int(power, "power", 0, 16), generator)
    B, total = Q.new_empty((size, X.shape[1])), 0.0
    for start in range(0, X.shape[1], BLOCK):  # float64 a block of columns at a time: no float64 copy of M
        block = X[:, start:start + BLOCK].to(torch.float64)
        B[:, start:start + BLOCK] = Q.T @ block
        total += float(block.pow(2).sum())
    Ub, S, Vh = torch.linalg.svd(B, full_matrices=False)
    residual = max(total - float(S.pow(2).sum()), 0.0) + SLACK * total
    svd = SVD(U=Q @ Ub[:, :keep], S=S, Vh=Vh[:keep])
    return Sketch(svd=svd, total=total, residual=residual, size=size, shape=(X.shape[0], X.shape[1]))


def worth_growing(sketch: Sketch, tau: float, cap: int) -> bool:
    """Whether a larger sketch (up to ``cap`` columns) can narrow the ``tau`` interval: the energy still missing,
    ``tau T - ||B||_F^2``, needs at least that over ``s_l(B)^2`` more directions (later values are about
    ``s_{l+1}(M) <~ s_l(B)``); when those do not fit under ``cap`` the level lies in the unsketched tail."""
    missing = tau * sketch.total - float(sketch.svd.S.pow(2).sum())
    if missing <= 0.0:
        return True
    last = float(sketch.svd.S[-1]) ** 2
    return last > 0.0 and sketch.size + missing / last <= cap


def adaptive_sketch(M: torch.Tensor, keep: int, generator: torch.Generator, tau: float = 0.9,
                    power: int = POWER) -> Sketch | None:
    """Sketch ``M`` with ``l = max(64, keep + 16)`` columns, doubling ``l`` while the ``tau`` energy rank's interval
    is wider than ``max(2, 10% of k_hi)`` and :func:`worth_growing`, up to ``cap = p / 4`` (beyond it the exact
    Gram route is about as cheap). None when even the first sketch would exceed the cap: use the exact route."""
    p = min(M.shape)
    cap = p // 4
    size = max(START, keep + OVERSAMPLE)
    if size > cap:
        return None
    while True:
        sketch = sketch_svd(M, size, keep, generator, power)
        lo, hi = sketch.energy_rank_bounds(tau)
        if hi - lo <= max(2, 0.1 * hi) or 2 * size > cap or not worth_growing(sketch, tau, cap):
            return sketch
        size *= 2
