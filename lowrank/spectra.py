"""Pure linear algebra on weight updates: exact SVDs (factored for LoRA, dense for full deltas) and rank measures.

Subspace comparisons, amplification and intruder dimensions build on these in :mod:`lowrank.analysis.subspaces`.

Every function takes torch tensors and returns tensors, floats or frozen dataclasses; nothing here reads or writes
files. Inputs are validated up front and bad ones raise :class:`LowrankError` naming the shapes. Work is done in
float64 where it is cheap (factored SVDs, spectra, small products) and never in half precision.

Notation: an update ``dW`` of shape ``(m, n)`` has thin SVD ``dW = U diag(S) Vh`` with ``U (m, k)``, ``S (k,)``
descending and ``Vh (k, n)``, ``k = min(m, n)`` (or the rank bound ``min(m, n, r)`` of a LoRA update ``s B A``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg
import torch

from lowrank.errors import LowrankError

_FLOATS = (torch.float32, torch.float64)
_DENSE_TOP_LIMIT = 512  # at or below this min(m, n), top singular values come from a dense svdvals


@dataclass(frozen=True)
class SVD:
    """Thin SVD ``M = U @ diag(S) @ Vh``.

    Attributes:
        U (Tensor): left singular vectors, shape ``(m, g)``; ``g = k`` for a full thin SVD, ``g < k`` when only the
            leading vectors were kept, ``g = 0`` when only values were computed.
        S (Tensor): singular values, shape ``(k,)``, descending and ``>= 0``.
        Vh (Tensor): right singular vectors as rows, shape ``(g, n)``.
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor

    def __post_init__(self) -> None:
        if self.S.ndim != 1 or self.U.ndim != 2 or self.Vh.ndim != 2:
            raise LowrankError(f"SVD needs U 2-D, S 1-D, Vh 2-D; got {shapes_of(self.U, self.S, self.Vh)}")
        if self.U.shape[1] != self.Vh.shape[0] or self.U.shape[1] > self.S.shape[0]:
            raise LowrankError(f"SVD factors do not agree: {shapes_of(self.U, self.S, self.Vh)}")

    @property
    def has_vectors(self) -> bool:
        """True when U and Vh hold singular vectors (``compute_uv=True``), False when only S was computed."""
        return self.U.shape[1] > 0 or self.Vh.shape[0] > 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``, the shape of the matrix this is the SVD of."""
        return (self.U.shape[0], self.Vh.shape[1])

    def reconstruct(self) -> torch.Tensor:
        """``U @ diag(S) @ Vh``, shape ``(m, n)``."""
        if self.U.shape[1] != self.S.shape[0]:
            raise LowrankError("this SVD holds only some of its singular vectors, cannot reconstruct")
        return (self.U * self.S) @ self.Vh


def next_power_of_two(n: int) -> int:
    """Smallest ``2^k >= n`` (``n >= 1``)."""
    if n < 1:
        raise LowrankError(f"next_power_of_two needs a positive integer, got {n}")
    return 1 << (n - 1).bit_length()


def shapes_of(*tensors: torch.Tensor) -> str:
    """'(m, n), (k,)': the shapes of ``tensors``, for error messages."""
    return ", ".join(str(tuple(t.shape)) for t in tensors)


def checked_matrix(x: torch.Tensor, name: str, check_finite: bool = True) -> torch.Tensor:
    """``x`` itself if it is a non-empty, real, finite 2-D tensor; else LowrankError naming ``name`` and its shape."""
    if not isinstance(x, torch.Tensor):
        raise LowrankError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.numel() == 0:
        raise LowrankError(f"{name} must be a non-empty 2-D matrix, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise LowrankError(f"{name} must be a real floating-point matrix, got dtype {x.dtype}")
    if check_finite and not bool(torch.isfinite(x).all()):
        raise LowrankError(f"{name} of shape {tuple(x.shape)} contains NaN or Inf")
    return x


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in _FLOATS:
        raise LowrankError(f"dtype must be torch.float32 or torch.float64 (never half precision), got {dtype}")
    return dtype


def _spectrum(s: torch.Tensor) -> torch.Tensor:
    """Validate singular values (1-D, finite, >= 0, descending) and return them as float64."""
    if not isinstance(s, torch.Tensor) or s.ndim != 1:
        raise LowrankError(f"singular values must be a 1-D tensor, got shape {tuple(getattr(s, 'shape', ()))}")
    s = s.detach().to("cpu", torch.float64)  # spectra are short: CPU float64 everywhere
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise LowrankError(f"singular values of shape {tuple(s.shape)} must be finite and >= 0")
    if bool((s[1:] > s[:-1]).any()):
        raise LowrankError(f"singular values of shape {tuple(s.shape)} must be sorted descending")
    return s


def _normalized(s: torch.Tensor) -> torch.Tensor:
    """Validated spectrum divided by its largest value, so squares of tiny values do not underflow to 0."""
    s = _spectrum(s)
    return s / s[0] if s.numel() > 0 and s[0] > 0 else s


def checked_int(value: int, name: str, low: int, high: int) -> int:
    """``value`` if it is an integer in ``[low, high]``; else LowrankError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LowrankError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------- SVDs


def lora_svd(B: torch.Tensor, A: torch.Tensor, scale: float = 1.0, dtype: torch.dtype = torch.float64) -> SVD:
    """Exact thin SVD of a LoRA update ``dW = scale * B @ A`` without forming ``dW``.

    .. math::
        B = Q_B R_B,\\quad A^T = Q_A R_A,\\quad \\text{scale}\\, R_B R_A^T = U_c\\, \\mathrm{diag}(S)\\, V_c^T
        \\;\\Rightarrow\\; dW = (Q_B U_c)\\, \\mathrm{diag}(S)\\, (V_c^T Q_A^T)

    Cost ``O((m + n) r^2)`` instead of ``O(m n min(m, n))``. Works for ``r > min(m, n)`` and rank-deficient factors
    (Householder QR keeps ``Q`` orthonormal; the lost rank shows up as zero singular values).

    Args:
        B (Tensor): shape ``(m, r)``, the up-projection (peft ``lora_B.weight``).
        A (Tensor): shape ``(r, n)``, the down-projection (peft ``lora_A.weight``).
        scale (float): the LoRA scaling, e.g. ``alpha / r`` or ``alpha / sqrt(r)``. Default 1.0.
        dtype: float32 or float64 (default) for the computation and the result.

    Returns:
        SVD with ``U (m, k)``, ``S (k,)``, ``Vh (k, n)``, ``k = min(m, n, r)``, on ``B``'s device. Raises
        LowrankError unless ``B``, ``A`` are finite real matrices with ``B.shape[1] == A.shape[0]``.
    """
    checked_matrix(B, "B", check_finite=False)  # checked on the small core below: NaN/Inf in B or A propagates there
    checked_matrix(A, "A", check_finite=False)
    if B.shape[1] != A.shape[0]:
        raise LowrankError(f"B @ A needs B (m, r) and A (r, n); got B {tuple(B.shape)} and A {tuple(A.shape)}")
    if not math.isfinite(scale):
        raise LowrankError(f"scale must be finite, got {scale}")
    dtype = _float_dtype(dtype)
    q_b, r_b = torch.linalg.qr(B.detach().to(dtype), mode="reduced")
    q_a, r_a = torch.linalg.qr(A.detach().to(device=B.device, dtype=dtype).T, mode="reduced")
    core = scale * (r_b @ r_a.T)
    if not bool(torch.isfinite(core).all()):
        raise LowrankError(f"B {tuple(B.shape)} or A {tuple(A.shape)} contains NaN or Inf (or scale * B @ A overflows)")
    u_c, s, vh_c = torch.linalg.svd(core, full_matrices=False)
    return SVD(U=q_b @ u_c, S=s, Vh=vh_c @ q_a.T)


def dense_svd(delta: torch.Tensor, dtype: torch.dtype = torch.float32, compute_uv: bool = True) -> SVD:
    """Exact thin SVD of a dense matrix, ``delta = U diag(S) Vh`` (``torch.linalg.svd`` / ``svdvals``).

    ``delta (m, n)`` is upcast to ``dtype`` (float32 default, or float64; never bf16/fp16) on its own device (CUDA
    when it is there). Returns ``k = min(m, n)`` values; with ``compute_uv=False`` only ``S`` is computed and ``U``,
    ``Vh`` are empty, shapes ``(m, 0)``, ``(0, n)``. Raises LowrankError for a non-finite or non-2-D ``delta``.
    """
    x = checked_matrix(delta, "delta").detach().to(_float_dtype(dtype))
    if compute_uv:
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        return SVD(U=u, S=s, Vh=vh)
    m, n = x.shape
    return SVD(U=x.new_empty((m, 0)), S=torch.linalg.svdvals(x), Vh=x.new_empty((0, n)))


def top_singular_values(M: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """The ``k`` largest singular values of ``M (m, n)``, descending, float64, exact to solver precision.

    Small matrices (``min(m, n) <= 512``) or ``k`` near ``min(m, n)`` use a dense ``svdvals``; larger ones use
    ARPACK Lanczos (``scipy.sparse.linalg.svds``, converged to machine precision, starting vector drawn from
    ``generator``), which needs only products with ``M`` and ``M^T``. Requires ``1 <= k <= min(m, n)``.
    """
    checked_matrix(M, "M")
    p = min(M.shape)
    checked_int(k, "k", 1, p)
    if not bool(M.any()):  # ARPACK cannot start from a zero matrix
        return torch.zeros(k, dtype=torch.float64)
    if p <= _DENSE_TOP_LIMIT or 2 * k >= p:
        return torch.linalg.svdvals(M.detach().to(torch.float64))[:k].cpu()
    v0 = torch.randn(p, generator=generator, dtype=torch.float64).numpy()
    s = scipy.sparse.linalg.svds(M.detach().cpu().to(torch.float64).numpy(), k=k, v0=v0, tol=0,
                                 return_singular_vectors=False)
    return torch.from_numpy(np.sort(s)[::-1].copy())


# ------------------------------------------------------------------------------------------- rank measures


def energy_rank(s: torch.Tensor, tau: float) -> int:
    """Smallest ``k`` with ``sum(s[:k]^2) >= tau * sum(s^2)``: the rank that keeps a fraction ``tau`` of energy.

    ``s`` holds singular values (descending, ``>= 0``), ``tau`` is in ``(0, 1]``. Returns an int in ``[1, len(s)]``;
    0 for a zero matrix (the rank-0 approximation is already exact).
    """
    if not 0.0 < tau <= 1.0:
        raise LowrankError(f"tau must be in (0, 1], got {tau}")
    cum = torch.cumsum(_normalized(s) ** 2, dim=0)
    if cum.numel() == 0 or cum[-1] == 0:
        return 0
    target = torch.tensor([tau], dtype=torch.float64) * cum[-1]
    return min(int(torch.searchsorted(cum, target, side="left")) + 1, cum.numel())


def energy_captured(s: torch.Tensor, k: int) -> float:
    """``sum(s[:k]^2) / sum(s^2)``: the fraction of ``||M||_F^2`` kept by the best rank-``k`` approximation.

    By Eckart-Young ``||M - M_k||_F^2 = sum(s[k:]^2)``. ``k`` larger than ``len(s)`` keeps everything. A zero
    matrix gives 1.0 (its rank-0 approximation is exact), consistent with :func:`energy_rank` returning 0.
    """
    s = _normalized(s)
    k = checked_int(k, "k", 0, 2**62)
    total = float((s**2).sum())
    return 1.0 if total == 0.0 else float((s[:k] ** 2).sum()) / total


def effective_rank(s: torch.Tensor) -> float:
    """Roy & Vetterli (2007) effective rank ``exp(-sum_i p_i log p_i)``, ``p = s / sum(s)`` (L1, not squares).

    Equals ``k`` for ``k`` equal non-zero singular values; between 1 and the rank otherwise; 0 for a zero matrix.
    """
    s = _spectrum(s)
    total = float(s.sum())
    if total == 0.0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(-float((p * torch.log(p)).sum()))


def stable_rank(s: torch.Tensor) -> float:
    """Stable rank ``||M||_F^2 / ||M||_2^2 = sum(s^2) / s[0]^2``, in ``[1, rank]``; 0 for a zero matrix."""
    s = _normalized(s)
    return 0.0 if s.numel() == 0 or s[0] == 0 else float((s**2).sum())


def tail_ratio(s: torch.Tensor, r: int) -> float:
    """``s[r-1] / s[0]``: the ``r``-th singular value relative to the largest (1-based ``r >= 1``).

    A matrix with fewer than ``r`` singular values has ``s_r = 0``, so ``r > len(s)`` gives 0.0; so does a zero
    matrix. A small ratio at the LoRA rank ``r`` means the last directions carry little of the update.
    """
    s = _spectrum(s)
    r = checked_int(r, "r", 1, 2**62)
    if r > s.numel() or s[0] == 0:
        return 0.0
    return float(s[r - 1] / s[0])
