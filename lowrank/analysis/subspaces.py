"""Comparing subspaces of weight updates: the LoRA paper's subspace similarity phi (Eq. 4), principal angles,
Grassmann distance, the amplification factor (Hu et al. sec. 7) and intruder dimensions (Shuttleworth et al.).

Pure functions on torch tensors, built on :mod:`lowrank.spectra`; nothing here reads or writes files. Inputs are
validated up front and bad ones raise :class:`LowrankError` naming the shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowrank.analysis.record import Record
from lowrank.errors import LowrankError
from lowrank.gram import LeftBasis, left_basis, top_left_vectors
from lowrank.spectra import SVD, checked_int, checked_matrix, shapes_of, top_singular_values

_ORTHO_ATOL = 1e-3  # how far U^T U may be from I (max abs entry) for "orthonormal columns"


def _frame(U: torch.Tensor, cols: int, name: str) -> torch.Tensor:
    """First ``cols`` columns of ``U`` as float64, checked orthonormal (``|U^T U - I| <= 1e-3``)."""
    u = checked_matrix(U, name)[:, :cols].detach().to(torch.float64)
    gram = u.T @ u
    gram.diagonal().sub_(1.0)
    if float(gram.abs().max()) > _ORTHO_ATOL:
        raise LowrankError(f"{name} of shape {tuple(U.shape)} must have orthonormal columns (pass U or Vh.T, not Vh)")
    return u


def _similarity_inputs(U1: torch.Tensor, U2: torch.Tensor, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    checked_matrix(U1, "U1")
    checked_matrix(U2, "U2")
    if U1.shape[0] != U2.shape[0]:
        raise LowrankError(f"U1 and U2 must have the same number of rows; got {shapes_of(U1, U2)}")
    checked_int(i, "i", 1, U1.shape[1])
    checked_int(j, "j", 1, U2.shape[1])
    return _frame(U1, i, "U1"), _frame(U2.to(U1.device), j, "U2")


def subspace_similarity(U1: torch.Tensor, U2: torch.Tensor, i: int, j: int) -> float:
    """LoRA paper (Hu et al. 2021) Eq. 4: ``phi(i, j) = ||U1[:, :i]^T U2[:, :j]||_F^2 / min(i, j)``, in ``[0, 1]``.

    Equals the mean of ``cos^2`` of the ``min(i, j)`` principal angles between the two spans: 1 when one span
    contains the other, 0 when they are orthogonal; about ``max(i, j) / d`` for random subspaces.

    Args:
        U1 (Tensor): shape ``(d, p)``, orthonormal columns (e.g. left singular vectors ``U``, or ``Vh.T``).
        U2 (Tensor): shape ``(d, q)``, orthonormal columns.
        i (int): leading columns of ``U1`` to use, ``1 <= i <= p``.
        j (int): leading columns of ``U2`` to use, ``1 <= j <= q``.
    """
    u1, u2 = _similarity_inputs(U1, U2, i, j)
    return float((u1.T @ u2).pow(2).sum()) / min(i, j)


def subspace_similarity_grid(U1: torch.Tensor, U2: torch.Tensor, imax: int, jmax: int) -> torch.Tensor:
    """All ``phi(i, j)`` for ``1 <= i <= imax``, ``1 <= j <= jmax``; entry ``[i-1, j-1] = phi(i, j)``.

    With ``C = U1[:, :imax]^T U2[:, :jmax]``, ``||U1[:, :i]^T U2[:, :j]||_F^2`` is the 2-D prefix sum of ``C^2``,
    so the grid costs one ``(imax, jmax)`` product plus two cumulative sums. Returns float64, shape ``(imax, jmax)``.
    """
    u1, u2 = _similarity_inputs(U1, U2, imax, jmax)
    prefix = (u1.T @ u2).pow(2).cumsum(dim=0).cumsum(dim=1)
    i = torch.arange(1, imax + 1, dtype=torch.float64, device=prefix.device)
    j = torch.arange(1, jmax + 1, dtype=torch.float64, device=prefix.device)
    return prefix / torch.minimum(i[:, None], j[None, :])


def random_subspace_similarity(i: int, j: int, d: int) -> float:
    """Expected ``phi(i, j)`` between a uniformly random ``i``-dim and an independent ``j``-dim subspace of ``R^d``.

    ``E ||U1^T U2||_F^2 = i j / d`` (each of the ``j`` unit vectors keeps ``i / d`` of its squared norm in expectation),
    so ``E phi = i j / (d min(i, j)) = max(i, j) / d``: the noise level against which Eq. 4 values are read.
    """
    checked_int(d, "d", 1, 2**62)
    checked_int(i, "i", 1, d)
    checked_int(j, "j", 1, d)
    return max(i, j) / d


def orthonormal_basis(M: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the column space of ``M (d, p)``, float64, shape ``(d, rank)`` (as ``scipy.linalg.orth``).

    Rank counts singular values above ``s_max * eps * max(d, p)``. Raises LowrankError for a rank-0 matrix.
    """
    m = checked_matrix(M, "M").detach().to(torch.float64)
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    rank = int((s > s[0] * torch.finfo(torch.float64).eps * max(m.shape)).sum())
    if rank == 0:
        raise LowrankError(f"matrix of shape {tuple(M.shape)} is zero: its column space has no basis")
    return u[:, :rank]


def principal_angles(Q1: torch.Tensor, Q2: torch.Tensor) -> torch.Tensor:
    """Principal angles between ``span(Q1)`` and ``span(Q2)``, radians in ``[0, pi/2]``, ascending, float64.

    Both inputs are orthonormalized first (any full-column-rank or rank-deficient basis works). With orthonormal
    ``Q1 (d, p)``, ``Q2 (d, q)``: ``cos theta_i = sigma_i(Q1^T Q2)``; angles with ``cos^2 >= 1/2`` come from
    ``sin theta = sigma(Q2 - Q1 Q1^T Q2)`` for accuracy near 0 (Knyazev & Argentati; ``scipy.linalg.subspace_angles``,
    whose output this matches sorted ascending). Returns ``min(rank Q1, rank Q2)`` angles.

    Raises LowrankError if the row counts differ or an input is zero.
    """
    checked_matrix(Q1, "Q1")
    checked_matrix(Q2, "Q2")
    if Q1.shape[0] != Q2.shape[0]:
        raise LowrankError(f"Q1 and Q2 must have the same number of rows; got {shapes_of(Q1, Q2)}")
    a, b = orthonormal_basis(Q1), orthonormal_basis(Q2.to(Q1.device))
    if a.shape[1] < b.shape[1]:
        a, b = b, a  # angles are symmetric; project the smaller basis onto the larger one
    cross = a.T @ b
    cos = torch.linalg.svdvals(cross).clamp(0.0, 1.0)  # descending -> angles ascending
    sin = torch.linalg.svdvals(b - a @ cross).clamp(0.0, 1.0).flip(0)  # ascending -> angles ascending
    return torch.where(cos**2 >= 0.5, torch.arcsin(sin), torch.arccos(cos))


def grassmann_distance(angles: torch.Tensor) -> float:
    """Geodesic distance on the Grassmannian, ``||theta||_2 = sqrt(sum theta_i^2)``, from :func:`principal_angles`."""
    if not isinstance(angles, torch.Tensor) or angles.ndim != 1:
        raise LowrankError(f"angles must be a 1-D tensor, got shape {tuple(getattr(angles, 'shape', ()))}")
    a = angles.detach().to(torch.float64)
    if not bool(((a >= 0) & (a <= math.pi / 2 + 1e-12)).all()):
        raise LowrankError(f"principal angles of shape {tuple(angles.shape)} must lie in [0, pi/2]")
    return float(torch.linalg.vector_norm(a))


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Amplification(Record):
    """Result of :func:`amplification`: ``||dW||_F``, ``||U^T W0 V||_F`` for dW's, W0's own and random top-r frames,
    and ``factor = delta_norm / projected_norm`` (LoRA paper section 7, Table 7)."""

    delta_norm: float
    projected_norm: float
    factor: float
    w_top_projected_norm: float
    random_projected_norm: float


def _random_frame(d: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random orthonormal ``(d, r)`` frame: Q of the QR of a Gaussian matrix."""
    return torch.linalg.qr(torch.randn(d, r, generator=generator, dtype=torch.float64))[0]


def amplification(delta: SVD, W0: torch.Tensor, r: int, generator: torch.Generator, draws: int = 8,
                  w0_top: torch.Tensor | None = None) -> Amplification:
    """Amplification factor of an update ``dW = U diag(S) Vh`` relative to the pre-trained ``W0`` (Hu et al. sec. 7).

    .. math::
        \\text{factor} = \\frac{\\|\\Delta W\\|_F}{\\|U_r^T W_0 V_r\\|_F},\\qquad U_r = U[:, :r],\\ V_r = Vh[:r]^T

    The paper reports about 21.5 at r=4 and 1.9 at r=64 (GPT-3 layer 48, Wq): dW amplifies directions that W0
    has but does not emphasize. Baselines: W0's own top-``r`` directions give ``sqrt(sum_{i<=r} s_i(W0)^2)``;
    random frames give about ``r ||W0||_F / sqrt(m n)``.

    Args:
        delta (SVD): SVD of ``dW`` with vectors, ``U (m, k)``, ``Vh (k, n)``; its ``S`` gives ``||dW||_F``.
        W0 (Tensor): the pre-trained weight, shape ``(m, n)``.
        r (int): number of directions, ``1 <= r <= k``.
        generator (torch.Generator): draws the random frames (and the Lanczos start for large ``W0``).
        draws (int): random frames averaged for ``random_projected_norm``. Default 8.
        w0_top (Tensor): W0's singular values when already known (descending, at least ``r``); else its top ``r``
            are computed here.

    Raises LowrankError on mismatched shapes, an SVD without vectors, a zero ``dW`` or a zero projection.
    """
    if not delta.has_vectors:
        raise LowrankError("amplification needs singular vectors (dense_svd with compute_uv=True)")
    w0 = checked_matrix(W0, "W0").detach().to(torch.float64)
    if tuple(w0.shape) != delta.shape:
        raise LowrankError(f"W0 has shape {tuple(w0.shape)} but dW has shape {delta.shape}")
    checked_int(r, "r", 1, delta.U.shape[1])
    checked_int(draws, "draws", 1, 10_000)
    u = delta.U[:, :r].detach().to(w0.device, torch.float64)
    v = delta.Vh[:r].detach().to(w0.device, torch.float64).T
    delta_norm = float(torch.linalg.vector_norm(delta.S.detach().to(torch.float64)))
    projected = float(torch.linalg.matrix_norm(u.T @ w0 @ v))
    if delta_norm == 0.0 or projected == 0.0:
        raise LowrankError(f"amplification is undefined: ||dW||_F = {delta_norm}, ||U^T W0 V||_F = {projected}")
    m, n = w0.shape
    rand = [
        float(torch.linalg.matrix_norm(_random_frame(m, r, generator).to(w0.device).T @ w0
                                       @ _random_frame(n, r, generator).to(w0.device)))
        for _ in range(draws)
    ]
    top = w0_top[:r].to(torch.float64) if w0_top is not None else top_singular_values(w0, r, generator)
    return Amplification(delta_norm=delta_norm, projected_norm=projected, factor=delta_norm / projected,
                         w_top_projected_norm=float(torch.linalg.vector_norm(top)),
                         random_projected_norm=sum(rand) / draws)


@dataclass(frozen=True)
class Intruders(Record):
    """Result of :func:`intruder_dimensions`: ``max_cos[i] = max_j |<u_i(W1), u_j(W0)>|`` for W1's top-``k`` left
    singular vectors, ``count`` of those below ``epsilon``, and ``floor = 1/sqrt(m)``, the least possible max_cos
    when W0's left singular vectors span ``R^m`` (``m <= n``)."""

    count: int
    max_cos: tuple[float, ...]
    k: int
    epsilon: float
    floor: float


def intruder_dimensions(W0: torch.Tensor, W1: torch.Tensor, k: int = 10, epsilon: float = 0.5,
                        dtype: torch.dtype = torch.float64) -> Intruders:
    """Count top singular directions of ``W1`` that are new relative to all singular directions of ``W0``.

    .. math::
        c_i = \\max_j |u_i(W_1)^T u_j(W_0)|,\\ i \\le k;\\qquad \\text{count} = \\#\\{i : c_i < \\epsilon\\}

    ``u_j(W0)`` ranges over all ``min(m, n)`` left singular vectors of W0. Both sides come from the eigenvectors of
    the smaller Gram matrix (:mod:`lowrank.gram`, on W0's device), W1's top ``k`` only. LoRA at small rank produces
    such intruders; full fine-tuning rarely does.

    Args:
        W0 (Tensor): pre-trained weight, shape ``(m, n)``.
        W1 (Tensor): fine-tuned weight, same shape.
        k (int): top singular vectors of W1 to examine, ``1 <= k <= min(m, n)``. Default 10.
        epsilon (float): cosine threshold in ``(0, 1]``. Default 0.5 (the paper's code).
        dtype: float64 (default) or float32 for the eigendecompositions.

    Raises LowrankError on mismatched shapes or out-of-range ``k``/``epsilon``.
    """
    checked_matrix(W0, "W0")
    checked_matrix(W1, "W1")
    if W0.shape != W1.shape:
        raise LowrankError(f"W0 and W1 must have the same shape; got {shapes_of(W0, W1)}")
    checked_int(k, "k", 1, min(W0.shape))
    return intruders_from(left_basis(W0, dtype), top_left_vectors(W1.to(W0.device), k, dtype), epsilon)


def intruders_from(basis: LeftBasis, u1: torch.Tensor, epsilon: float = 0.5) -> Intruders:
    """:func:`intruder_dimensions` from decompositions already made: W0's left directions ``basis``
    (:func:`lowrank.gram.left_basis`) and W1's top ``k`` left singular vectors ``u1 (m, k)``."""
    if not 0.0 < epsilon <= 1.0:
        raise LowrankError(f"epsilon must be in (0, 1], got {epsilon}")
    max_cos = tuple(float(c) for c in basis.coordinates(u1.to(basis.S.device)).abs().amax(dim=0).cpu())
    return Intruders(count=sum(c < epsilon for c in max_cos), max_cos=max_cos, k=u1.shape[1], epsilon=epsilon,
                     floor=1.0 / math.sqrt(u1.shape[0]))
