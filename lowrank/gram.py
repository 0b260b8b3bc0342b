"""Singular values and vectors from the eigendecomposition of the smaller Gram matrix: the fast exact route for
dense ``(m, n)`` matrices (symmetric eigensolvers, syevd, are several times faster than SVD, gesdd, on CPUs and
GPUs alike).

For ``M`` with ``p = min(m, n)``, ``G = M M^T`` (``m <= n``) or ``M^T M`` is ``p x p`` with eigenvalues ``s_i^2``.
Error bounds (float64, unit roundoff ``u = 1.1e-16``; backward-stable Gram product and eigensolver):

    |s_i^2 - s~_i^2| <= c p u s_1^2   =>   |s_i - s~_i| <= min(sqrt(c p u) s_1, c p u s_1^2 / s_i),

so every singular value is within about ``1e-6 s_1`` (``p = 8192``) and values above ``1e-3 s_1`` within
``1e-10 s_1``. The other side's vectors follow as ``M v_i / s_i`` (orthonormalized by a QR); a vector is accurate to
about ``u s_1^2 / (s_i gap_i)``, so the top ones, where the gaps are, are exact to solver precision. Vectors of
(near-)zero singular values are an arbitrary orthonormal completion, as they are for any SVD.
"""

from __future__ import annotations

import torch

from lowrank.spectra import SVD, checked_int, checked_matrix


def gram_svd(M: torch.Tensor, keep: int, dtype: torch.dtype = torch.float64) -> SVD:
    """All ``p = min(m, n)`` singular values of ``M (m, n)``, descending, and its top-``keep`` singular vectors.

    Args:
        M (Tensor): a real finite matrix (any float dtype, on any device; the work stays on that device).
        keep (int): how many leading singular vectors to return, ``0 <= keep <= p``; 0 computes values only.
        dtype: float64 (default; the bound above) or float32 (vectors only: values lose ``sqrt(u32) s_1``).

    Returns an :class:`SVD` with ``U (m, keep)``, ``S (p,)``, ``Vh (keep, n)``.
    """
    X = checked_matrix(M, "M").detach().to(dtype)
    m, n = X.shape
    keep = checked_int(keep, "keep", 0, min(m, n))
    wide = m <= n
    G = X @ X.T if wide else X.T @ X
    if keep == 0:
        values = torch.linalg.eigvalsh(G)
        return SVD(U=X.new_empty((m, 0)), S=_roots(values), Vh=X.new_empty((0, n)))
    values, vectors = torch.linalg.eigh(G)
    S = _roots(values)
    top = vectors[:, -keep:].flip(1)  # eigh sorts ascending
    if wide:
        return SVD(U=top, S=S, Vh=_other_side(X.T, top).T)
    return SVD(U=_other_side(X, top), S=S, Vh=top.T)


def left_singular_vectors(M: torch.Tensor, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """All left singular vectors ``U (m, p)`` and values ``S (p,)`` of ``M``, from its smaller Gram matrix."""
    svd = gram_svd(M, min(M.shape), dtype)
    return svd.U, svd.S


def _roots(values: torch.Tensor) -> torch.Tensor:
    return values.flip(0).clamp_min(0.0).sqrt()


def _other_side(X: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Orthonormal ``U`` with ``X V = U R``, ``R`` upper triangular with a non-negative diagonal: for exact
    singular vectors ``V`` that is ``u_i = X v_i / s_i``, and a valid completion where ``s_i = 0``."""
    Q, R = torch.linalg.qr(X @ V)
    signs = torch.where(torch.diagonal(R) < 0, -1.0, 1.0).to(Q.dtype)
    return Q * signs

