"""Was rank r enough? What the trained adapter could not reach, measured from the loss gradient (pure math).

A rank-``r`` LoRA update ``dW = s B A`` moves, to first order, only in the directions ``dB A + B dA``: matrices
whose columns lie in ``col(B)`` or whose rows lie in ``row(A)``. With ``Q_B``, ``Q_A`` orthonormal bases of
``col(B)`` and ``col(A^T)``, the part of the full weight gradient ``G = dL/dW`` that the adapter cannot follow is

    G_out = (I - Q_B Q_B^T) G (I - Q_A Q_A^T).

At a trained point the reachable part of ``G`` is small (training drove it down); ``G_out`` is what more rank
would buy: a gradient step restricted to the best rank-``r`` part of ``G_out`` lowers the loss by
``eta * sum_{i<=r} sigma_i(G_out)^2`` to first order. But ``G`` is a mean over a sample of training examples, and
at a trained point much of it is sampling noise. The statistic asks whether the top ``r`` directions outside the
adapter's reach hold more than noise would put there:

    signal_to_noise = sum_{i<=r} sigma_i(G_out)^2 / (r sigma^2 (sqrt(m - r) + sqrt(n - r))^2)

with ``sigma^2`` the noise variance of ``G``'s entries, estimated from two halves of the sample
(:func:`noise_energy`). Pure noise gives at most about 1; a direction that the next ``r`` ranks would follow
gives more. Over a model, numerators and denominators are summed over modules. The noise falls as ``1/n`` with the
sample size ``n``, so a weak direction becomes detectable with more examples. ``analyze --data`` reports it per
module, at the sample size :data:`CALIBRATED_EXAMPLES`, as evidence only: it no longer decides the rank verdict,
which comes from the probe's held-out losses at r, 2r and r/2 (:mod:`lowrank.advice.sufficiency.verdict`), because
against retraining the statistic turned out to be nearly a function of ``r`` alone (reports/rank_advice.md).

Also reported: ``doubling_gain = sum_{i<=r} sigma_i(G_out)^2 / sum_{i<=r} sigma_i(G0)^2``, the same descent
relative to what the first ``r`` directions found at the start of training (``G0``, at the base weights, trained
head kept). It varies across tasks with how far training went (from 0.0002 to 0.09 on the calibration tasks, with
doubling helping at both ends), so it is shown as evidence but does not decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowrank.errors import LowrankError
from lowrank.spectra import checked_matrix, top_singular_values

CALIBRATED_EXAMPLES = 256
CURVE_MAX = 64


@dataclass(frozen=True)
class GradientEvidence:
    """One module's gradient evidence at its trained point.

    Attributes:
        rank: the adapter rank ``r``.
        gradient_norm: ``||G||_F`` at the trained point.
        base_gradient_norm: ``||G0||_F`` at the base weights (same batches, same head).
        outside_fraction: ``||G_out||_F^2 / ||G||_F^2``, the share of the current gradient the adapter cannot follow.
        outside_energy: ``sum_{i<=r} sigma_i(G_out)^2`` (numerator of the doubling gain).
        start_energy: ``sum_{i<=r} sigma_i(G0)^2`` (denominator).
        gain_curve: ``sum_{i<=k} sigma_i(G_out)^2 / start_energy`` for ``k = 1 .. min(2r, 64)``: the first-order
            loss decrease that ``k`` more directions would buy, relative to the first ``r`` directions at the start.
    """

    rank: int
    gradient_norm: float
    base_gradient_norm: float
    outside_fraction: float
    outside_energy: float
    start_energy: float
    gain_curve: tuple[float, ...]
    noise_energy: float = 0.0

    @property
    def doubling_gain(self) -> float:
        return self.outside_energy / self.start_energy if self.start_energy > 0 else 0.0

    @property
    def signal_to_noise(self) -> float:
        """``outside_energy / noise_energy``: about 1 when what lies outside the adapter's reach is sampling noise."""
        return self.outside_energy / self.noise_energy if self.noise_energy > 0 else 0.0


def noise_energy(first: torch.Tensor, second: torch.Tensor, r: int) -> float:
    """What pure sampling noise would put into the top ``r`` singular values of ``G_out``.

    ``G_1``, ``G_2`` are the mean gradients of two halves of the sample, ``G = (G_1 + G_2) / 2``. Their difference
    holds no signal: per entry ``E (G_1 - G_2)^2 = 4 sigma^2`` with ``sigma^2`` the noise variance of ``G``. A
    ``p x q`` matrix of such noise (``p = m - r``, ``q = n - r`` for the part outside the adapter's reach) has
    singular values up to ``sigma (sqrt(p) + sqrt(q))`` (Marchenko-Pastur), so its top ``r`` hold at most
    ``r sigma^2 (sqrt(p) + sqrt(q))^2``.
    """
    m, n = first.shape
    sigma2 = float(((first.to(torch.float64) - second.to(torch.float64)) ** 2).sum()) / (4 * m * n)
    p, q = max(m - r, 1), max(n - r, 1)
    return r * sigma2 * (p ** 0.5 + q ** 0.5) ** 2


def _orthonormal(M: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of ``M``'s column space (rank-deficient factors reach fewer than ``r`` directions)."""
    u, s, _ = torch.linalg.svd(M, full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return u[:, :0]
    return u[:, s > s[0] * max(M.shape) * torch.finfo(M.dtype).eps]


def outside_part(G: torch.Tensor, B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``(I - Q_B Q_B^T) G (I - Q_A Q_A^T)`` for ``G (m, n)``, ``B (m, r)``, ``A (r, n)``, in float64."""
    G = checked_matrix(G, "G").to(torch.float64)
    B, A = checked_matrix(B, "B").to(torch.float64), checked_matrix(A, "A").to(torch.float64)
    if B.shape[0] != G.shape[0] or A.shape[1] != G.shape[1] or B.shape[1] != A.shape[0]:
        raise LowrankError(f"G {tuple(G.shape)} needs B (m, r) and A (r, n) with m, n of G; got B "
                           f"{tuple(B.shape)} and A {tuple(A.shape)}")
    q_b, q_a = _orthonormal(B), _orthonormal(A.T)
    left = G - q_b @ (q_b.T @ G)
    return left - (left @ q_a) @ q_a.T


def module_evidence(G: torch.Tensor, G0: torch.Tensor, B: torch.Tensor, A: torch.Tensor,
                    halves: tuple[torch.Tensor, torch.Tensor] | None = None) -> GradientEvidence:
    """The gradient evidence of one LoRA module from the full gradients at the trained point (``G``) and at the base
    (``G0``); ``halves``, the trained-point gradients of the two halves of the sample, add the noise energy."""
    if G.shape != G0.shape:
        raise LowrankError(f"G {tuple(G.shape)} and G0 {tuple(G0.shape)} must have the same shape")
    r = A.shape[0]
    out = outside_part(G, B, A)
    G0 = checked_matrix(G0, "G0").to(torch.float64)
    k = min(max(r, min(2 * r, CURVE_MAX)), *out.shape)
    generator = torch.Generator().manual_seed(0)
    s_out = top_singular_values(out, k, generator)  # only the top 2r are needed: exact, without a full SVD
    s_start = top_singular_values(G0, min(r, *G0.shape), generator)
    start = float((s_start[:r] ** 2).sum())
    cumulative = torch.cumsum(s_out[:CURVE_MAX] ** 2, 0)
    norm2 = float((G.to(torch.float64) ** 2).sum())
    return GradientEvidence(rank=r, gradient_norm=norm2 ** 0.5, base_gradient_norm=float(G0.norm()),
                            outside_fraction=float((out ** 2).sum()) / norm2 if norm2 > 0 else 0.0,
                            outside_energy=float((s_out[:r] ** 2).sum()), start_energy=start,
                            gain_curve=tuple(float(c) / start if start > 0 else 0.0 for c in cumulative),
                            noise_energy=noise_energy(*halves, r) if halves is not None else 0.0)


def model_signal_to_noise(evidence: list[GradientEvidence]) -> float:
    """Summed over modules: ``sum outside_energy / sum noise_energy``."""
    noise = sum(s.noise_energy for s in evidence)
    return sum(s.outside_energy for s in evidence) / noise if noise > 0 else 0.0


def model_doubling_gain(evidence: list[GradientEvidence]) -> float:
    """Summed over modules: ``sum outside_energy / sum start_energy``."""
    start = sum(s.start_energy for s in evidence)
    return sum(s.outside_energy for s in evidence) / start if start > 0 else 0.0
