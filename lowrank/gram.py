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

Where the work runs: on a GPU, torch (a gemm for ``G``, cusolver's syevd). On the CPU, LAPACK through scipy with
its BLAS threads: ``G`` by syrk (one triangle, half a gemm's flops), all eigenvalues by syevd without vectors,
all vectors by syevd, only the top ``k`` vectors by syevr (MRRR: the tridiagonal reduction plus ``k`` vectors, no
full back-transformation), and all values with the top ``k`` vectors from one reduction (sytrd, sterf, stemr).
Each route was chosen by measurement on 2 cores (reports/analyze_benchmarks.md, `python
benchmarks/bench_gram_routes.py`). scipy's LAPACK calls hold the GIL, so they run one after the other, each on every
core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from lowrank.errors import LowrankError
from lowrank.spectra import SVD, checked_int, checked_matrix


CHUNK = 1024  # rows (or columns) of M upcast at a time: no full float64 copy of M is ever held


def gram_svd(M: torch.Tensor, keep: int, dtype: torch.dtype = torch.float64) -> SVD:
    """All ``p = min(m, n)`` singular values of ``M (m, n)``, descending, and its top-``keep`` singular vectors.

    Args:
        M (Tensor): a real finite matrix (any float dtype, on any device; the work stays on that device).
        keep (int): how many leading singular vectors to return, ``0 <= keep <= p``; 0 computes values only.
        dtype: float64 (default; the bound above) or float32 (vectors only: values lose ``sqrt(u32) s_1``).

    Returns an :class:`SVD` with ``U (m, keep)``, ``S (p,)``, ``Vh (keep, n)``.
    """
    X = checked_matrix(M, "M").detach()
    m, n = X.shape
    keep = checked_int(keep, "keep", 0, min(m, n))
    wide = m <= n
    G = _gram(X if wide else X.T, dtype)
    values, top = _eigen(G, keep)
    S = _roots(values)
    if keep == 0:
        return SVD(U=X.new_empty((m, 0), dtype=dtype), S=S, Vh=X.new_empty((0, n), dtype=dtype))
    if wide:
        return SVD(U=top, S=S, Vh=_other_side(X.T, top).T)
    return SVD(U=_other_side(X, top), S=S, Vh=top.T)


def top_left_vectors(M: torch.Tensor, k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The top ``k`` left singular vectors of ``M (m, n)``, ``(m, k)`` in ``dtype``, without the other values
    (what intruder dimensions need of W1); accuracy as :func:`gram_svd`'s vectors."""
    X = checked_matrix(M, "M").detach()
    m, n = X.shape
    k = checked_int(k, "k", 1, min(m, n))
    top = _eigen(_gram(X if m <= n else X.T, dtype), k, values=False)[1]
    return top if m <= n else _other_side(X, top)


@dataclass(frozen=True)
class LeftBasis:
    """All ``p = min(m, n)`` left singular directions of ``M`` and its values ``S``: held as ``U (m, p)`` when
    ``m <= n``, and implicitly as ``U = M V diag(1/S)`` (``V (n, p)``) when ``m > n``, which saves forming and
    orthonormalizing an ``(m, n)`` matrix. Directions of values below ``1e-12 s_1`` count as absent."""

    S: torch.Tensor
    U: torch.Tensor | None = None
    V: torch.Tensor | None = None
    M: torch.Tensor | None = None

    def coordinates(self, X: torch.Tensor) -> torch.Tensor:
        """``U^T X``, shape ``(p, k)``, for ``X (m, k)``."""
        X = X.to(self.S.dtype)
        if self.U is not None:
            return self.U.T @ X
        inverse = torch.where(self.S > 1e-12 * self.S[0], 1.0 / self.S, torch.zeros_like(self.S))
        return (self.V.T @ _times(self.M.T, X, self.S.dtype)) * inverse.unsqueeze(1)


def left_basis(M: torch.Tensor, dtype: torch.dtype = torch.float64) -> LeftBasis:
    """Every left singular direction of ``M`` (see :class:`LeftBasis`) from the eigenvectors of its smaller Gram
    matrix in ``dtype``."""
    X = checked_matrix(M, "M").detach()
    m, n = X.shape
    G = _gram(X if m <= n else X.T, dtype)
    values, vectors = _eigen(G, G.shape[0])
    S = _roots(values)
    return LeftBasis(S, U=vectors) if m <= n else LeftBasis(S, V=vectors, M=X)


def _gram(X: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``X X^T`` in ``dtype``, accumulated over column blocks of ``X`` upcast one at a time. On the CPU only its lower
    triangle is formed (syrk), which is all :func:`_eigen` reads."""
    m = X.shape[0]
    if X.device.type != "cpu":
        G = torch.zeros(m, m, dtype=dtype, device=X.device)
        for start in range(0, X.shape[1], CHUNK):
            block = X[:, start:start + CHUNK].to(dtype)
            G.addmm_(block, block.T)
        return G
    syrk = scipy.linalg.get_blas_funcs("syrk", dtype=_NUMPY[dtype])
    G = np.zeros((m, m), dtype=_NUMPY[dtype], order="F")
    for start in range(0, X.shape[1], CHUNK):
        block = X[:, start:start + CHUNK].to(dtype).contiguous().numpy()  # (m, c); its transpose is column-major
        G = syrk(1.0, block.T, beta=1.0, c=G, trans=1, lower=1, overwrite_c=1)
    return torch.from_numpy(G)


def _eigen(G: torch.Tensor, top: int, values: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """All eigenvalues of the symmetric ``G (p, p)`` (lower triangle read), ascending, and the eigenvectors of its
    ``top`` largest as columns, largest first (``(p, 0)`` for ``top = 0``); with ``values=False`` the eigenvalues
    are not computed (None) when that saves work."""
    p = G.shape[0]
    if G.device.type != "cpu":
        if top == 0:
            return torch.linalg.eigvalsh(G), G.new_empty((p, 0))
        vals, vectors = torch.linalg.eigh(G)
        return vals, vectors[:, -top:].flip(1)
    A = G.numpy()
    if top == 0:
        vals = scipy.linalg.eigh(A, lower=True, eigvals_only=True, driver="evd", check_finite=False)
        return torch.from_numpy(vals), G.new_empty((p, 0))
    if 4 * top > p:  # most vectors: syevd with all of them
        vals, vectors = scipy.linalg.eigh(A, lower=True, driver="evd", check_finite=False)
        return torch.from_numpy(vals), torch.from_numpy(vectors[:, -top:][:, ::-1].copy())
    if values:
        vals, vectors = _values_and_top(A, top)
        return torch.from_numpy(vals), torch.from_numpy(vectors[:, ::-1].copy())
    vectors = scipy.linalg.eigh(A, lower=True, driver="evr", subset_by_index=[p - top, p - 1],
                                check_finite=False)[1]
    return None, torch.from_numpy(vectors[:, ::-1].copy())


def _values_and_top(A: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """All eigenvalues (ascending) and the eigenvectors of the ``top`` largest (ascending) of the symmetric ``A``
    (lower triangle read), from one tridiagonal reduction ``A = Q T Q^T`` (sytrd): values of T by sterf, its top
    vectors by stemr (MRRR), carried back by Q's reflectors (ormqr on ``A[1:, :-1]``, as LAPACK's ormtr does for a
    lower triangle). syevd's values plus syevr's vectors would reduce A twice."""
    p = A.shape[0]
    sytrd, sytrd_lwork, sterf, stemr, ormqr = scipy.linalg.get_lapack_funcs(
        ("sytrd", "sytrd_lwork", "sterf", "stemr", "ormqr"), (A,))
    reduced, diagonal, off, tau, info = sytrd(A, lower=1, lwork=int(sytrd_lwork(p, lower=1)[0]))
    _lapack_ok("sytrd", info)
    vals, info = sterf(diagonal, off)
    _lapack_ok("sterf", info)
    found, _, Z, info = stemr(diagonal, np.r_[off, 0.0], 3, 0.0, 0.0, p - top + 1, p)  # range 3: by index
    _lapack_ok("stemr", info if found == top else -1)
    Z = np.asfortranarray(Z[:, :top])
    reflectors = reduced[1:, :-1]
    work = int(ormqr("L", "N", reflectors, tau, Z[1:], -1)[1][0])
    Z[1:], _, info = ormqr("L", "N", reflectors, tau, np.asfortranarray(Z[1:]), work)
    _lapack_ok("ormqr", info)
    return vals, Z


def _lapack_ok(routine: str, info: int) -> None:
    if info != 0:
        raise LowrankError(f"LAPACK {routine} failed (info {info}) on a Gram matrix")


_NUMPY = {torch.float64: np.float64, torch.float32: np.float32}


def _times(X: torch.Tensor, V: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``X @ V`` in ``dtype``, over row blocks of ``X`` upcast one at a time."""
    out = torch.empty(X.shape[0], V.shape[1], dtype=dtype, device=X.device)
    for start in range(0, X.shape[0], CHUNK):
        out[start:start + CHUNK] = X[start:start + CHUNK].to(dtype) @ V.to(dtype)
    return out


def _roots(values: torch.Tensor) -> torch.Tensor:
    return values.flip(0).clamp_min(0.0).sqrt()


def _other_side(X: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Orthonormal ``U`` with ``X V = U R``, ``R`` upper triangular with a non-negative diagonal: for exact
    singular vectors ``V`` that is ``u_i = X v_i / s_i``, and a valid completion where ``s_i = 0``."""
    Q, R = torch.linalg.qr(_times(X, V, V.dtype))
    signs = torch.where(torch.diagonal(R) < 0, -1.0, 1.0).to(Q.dtype)
    return Q * signs
