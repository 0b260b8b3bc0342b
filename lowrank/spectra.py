"""Pure linear algebra on weight updates: SVDs, rank measures, subspace comparisons, amplification, intruders.

Every function takes torch tensors and returns tensors, floats or frozen dataclasses; nothing here reads or writes
files. Inputs are validated up front and bad ones raise :class:`LowrankError` naming the shapes. Work is done in
float64 where it is cheap (factored SVDs, spectra, small products) and never in half precision.

Notation: an update ``dW`` of shape ``(m, n)`` has thin SVD ``dW = U diag(S) Vh`` with ``U (m, k)``, ``S (k,)``
descending and ``Vh (k, n)``, ``k = min(m, n)`` (or the rank bound ``min(m, n, r)`` of a LoRA update ``s B A``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import scipy.sparse.linalg
import torch

from lowrank.errors import LowrankError

_FLOATS = (torch.float32, torch.float64)
_ORTHO_ATOL = 1e-3  # how far U^T U may be from I (max abs entry) for "orthonormal columns"
_DENSE_TOP_LIMIT = 512  # at or below this min(m, n), top singular values come from a dense svdvals


@dataclass(frozen=True)
class SVD:
    """Thin SVD ``M = U @ diag(S) @ Vh``.

    Attributes:
        U (Tensor): left singular vectors, shape ``(m, k)``; shape ``(m, 0)`` when only values were computed.
        S (Tensor): singular values, shape ``(k,)``, descending and ``>= 0``.
        Vh (Tensor): right singular vectors as rows, shape ``(k, n)``; ``(0, n)`` when only values were computed.
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor

    def __post_init__(self) -> None:
        if self.S.ndim != 1 or self.U.ndim != 2 or self.Vh.ndim != 2:
            raise LowrankError(f"SVD needs U 2-D, S 1-D, Vh 2-D; got {_shapes(self.U, self.S, self.Vh)}")
        if self.has_vectors and (self.U.shape[1] != self.S.shape[0] or self.Vh.shape[0] != self.S.shape[0]):
            raise LowrankError(f"SVD factors do not agree: {_shapes(self.U, self.S, self.Vh)}")

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
        if not self.has_vectors:
            raise LowrankError("this SVD holds singular values only (compute_uv=False), cannot reconstruct")
        return (self.U * self.S) @ self.Vh


def _shapes(*tensors: torch.Tensor) -> str:
    return ", ".join(str(tuple(t.shape)) for t in tensors)


def _matrix(x: torch.Tensor, name: str, check_finite: bool = True) -> torch.Tensor:
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


def _count(value: int, name: str, low: int, high: int) -> int:
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
    _matrix(B, "B", check_finite=False)  # checked on the small core below: NaN/Inf in B or A propagates there
    _matrix(A, "A", check_finite=False)
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
    x = _matrix(delta, "delta").detach().to(_float_dtype(dtype))
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
    _matrix(M, "M")
    p = min(M.shape)
    _count(k, "k", 1, p)
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
    k = _count(k, "k", 0, 2**62)
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
    r = _count(r, "r", 1, 2**62)
    if r > s.numel() or s[0] == 0:
        return 0.0
    return float(s[r - 1] / s[0])


# --------------------------------------------------------------------------------------- subspace geometry


def _frame(U: torch.Tensor, cols: int, name: str) -> torch.Tensor:
    """First ``cols`` columns of ``U`` as float64, checked orthonormal (``|U^T U - I| <= 1e-3``)."""
    u = _matrix(U, name)[:, :cols].detach().to(torch.float64)
    gram = u.T @ u
    gram.diagonal().sub_(1.0)
    if float(gram.abs().max()) > _ORTHO_ATOL:
        raise LowrankError(f"{name} of shape {tuple(U.shape)} must have orthonormal columns (pass U or Vh.T, not Vh)")
    return u


def _similarity_inputs(U1: torch.Tensor, U2: torch.Tensor, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    _matrix(U1, "U1")
    _matrix(U2, "U2")
    if U1.shape[0] != U2.shape[0]:
        raise LowrankError(f"U1 and U2 must have the same number of rows; got {_shapes(U1, U2)}")
    _count(i, "i", 1, U1.shape[1])
    _count(j, "j", 1, U2.shape[1])
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
    _count(d, "d", 1, 2**62)
    _count(i, "i", 1, d)
    _count(j, "j", 1, d)
    return max(i, j) / d


def orthonormal_basis(M: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the column space of ``M (d, p)``, float64, shape ``(d, rank)`` (as ``scipy.linalg.orth``).

    Rank counts singular values above ``s_max * eps * max(d, p)``. Raises LowrankError for a rank-0 matrix.
    """
    m = _matrix(M, "M").detach().to(torch.float64)
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
    _matrix(Q1, "Q1")
    _matrix(Q2, "Q2")
    if Q1.shape[0] != Q2.shape[0]:
        raise LowrankError(f"Q1 and Q2 must have the same number of rows; got {_shapes(Q1, Q2)}")
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


class _Record:
    """to_dict/from_dict for the frozen result dataclasses below (tuples become lists in JSON)."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict):
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise LowrankError(f"{cls.__name__} record lacks keys {missing}")
        return cls(**{n: tuple(data[n]) if isinstance(data[n], list) else data[n] for n in names})


@dataclass(frozen=True)
class Amplification(_Record):
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


def amplification(delta: SVD, W0: torch.Tensor, r: int, generator: torch.Generator, draws: int = 8) -> Amplification:
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

    Raises LowrankError on mismatched shapes, an SVD without vectors, a zero ``dW`` or a zero projection.
    """
    if not delta.has_vectors:
        raise LowrankError("amplification needs singular vectors (dense_svd with compute_uv=True)")
    w0 = _matrix(W0, "W0").detach().to(torch.float64)
    if tuple(w0.shape) != delta.shape:
        raise LowrankError(f"W0 has shape {tuple(w0.shape)} but dW has shape {delta.shape}")
    _count(r, "r", 1, delta.S.shape[0])
    _count(draws, "draws", 1, 10_000)
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
    top = top_singular_values(w0, r, generator)
    return Amplification(delta_norm=delta_norm, projected_norm=projected, factor=delta_norm / projected,
                         w_top_projected_norm=float(torch.linalg.vector_norm(top)),
                         random_projected_norm=sum(rand) / draws)


@dataclass(frozen=True)
class Intruders(_Record):
    """Result of :func:`intruder_dimensions`: ``max_cos[i] = max_j |<u_i(W1), u_j(W0)>|`` for W1's top-``k`` left
    singular vectors, ``count`` of those below ``epsilon``, and ``floor = 1/sqrt(m)``, the least possible max_cos
    when W0's left singular vectors span ``R^m`` (``m <= n``)."""

    count: int
    max_cos: tuple[float, ...]
    k: int
    epsilon: float
    floor: float


def intruder_dimensions(W0: torch.Tensor, W1: torch.Tensor, k: int = 10, epsilon: float = 0.5,
                        dtype: torch.dtype = torch.float32) -> Intruders:
    """Count top singular directions of ``W1`` that are new relative to all singular directions of ``W0``.

    .. math::
        c_i = \\max_j |u_i(W_1)^T u_j(W_0)|,\\ i \\le k;\\qquad \\text{count} = \\#\\{i : c_i < \\epsilon\\}

    ``u_j(W0)`` ranges over all ``min(m, n)`` left singular vectors of W0 (a dense SVD, on W0's device). LoRA at
    small rank produces such intruders; full fine-tuning rarely does.

    Args:
        W0 (Tensor): pre-trained weight, shape ``(m, n)``.
        W1 (Tensor): fine-tuned weight, same shape.
        k (int): top singular vectors of W1 to examine, ``1 <= k <= min(m, n)``. Default 10.
        epsilon (float): cosine threshold in ``(0, 1]``. Default 0.5 (the paper's code).
        dtype: float32 (default) or float64 for the SVDs.

    Raises LowrankError on mismatched shapes or out-of-range ``k``/``epsilon``.
    """
    _matrix(W0, "W0")
    _matrix(W1, "W1")
    if W0.shape != W1.shape:
        raise LowrankError(f"W0 and W1 must have the same shape; got {_shapes(W0, W1)}")
    _count(k, "k", 1, min(W0.shape))
    if not 0.0 < epsilon <= 1.0:
        raise LowrankError(f"epsilon must be in (0, 1], got {epsilon}")
    u0 = dense_svd(W0, dtype=dtype).U
    u1 = dense_svd(W1.to(W0.device), dtype=dtype).U[:, :k]
    max_cos = tuple(float(c) for c in (u1.T @ u0).abs().amax(dim=1).cpu())
    return Intruders(count=sum(c < epsilon for c in max_cos), max_cos=max_cos, k=k, epsilon=epsilon,
                     floor=1.0 / math.sqrt(W0.shape[0]))
