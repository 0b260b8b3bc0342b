"""The dense decompositions one module's measures need.

A full delta with base metrics needs three: the spectrum of ``dW`` (all values, the top ``keep`` vectors), all of
W0's left singular vectors and values (intruders compare against every one; amplification's baseline uses the
top values), and W1's top ``k`` left singular vectors. They run one after the other, each with all of the
machine's BLAS threads (:mod:`lowrank.gram`); one at a time also bounds memory by one eigensolver's workspace.

Routes (:mod:`lowrank.gram`): ``"float32"`` plan: dW from its float64 Gram matrix, W0 and W1 from theirs, in
float64 (float32 would mix the vectors of small singular values, whose eigenvalue gaps are squared);
``"float64"`` plan: dense float64 SVDs throughout, the slow reference. ``fast`` plan (``--fast``): full deltas
sketched (:mod:`lowrank.sketch`: energy ranks as intervals), W0's top values sketched, no W0/W1 vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lowrank import spectra
from lowrank.analysis.basis_cache import cached_basis
from lowrank.gram import LeftBasis, gram_svd, left_basis, top_left_vectors
from lowrank.sketch import OVERSAMPLE, Sketch, adaptive_sketch, sketch_svd


@dataclass(frozen=True)
class Plan:
    """How modules are decomposed: compute ``dtype`` and ``device``, whether base metrics are wanted, how many
    leading singular vectors of dW to keep (0: values only) and the ``intruder_k`` of W1."""

    dtype: torch.dtype
    device: torch.device
    with_base: bool
    keep: int = 0
    intruder_k: int = 10
    fast: bool = False  # --fast: full deltas and W0 sketched (lowrank.sketch), seeded by ``seed``
    seed: int = 0
    cache: Path | None = None  # --cache: W0's left bases kept there by content (lowrank.analysis.basis_cache)

    @property
    def dense(self) -> bool:
        return self.dtype == torch.float64


@dataclass(frozen=True)
class BaseVectors:
    """Every left singular direction of W0 and its values (``basis``), and W1's top ``k`` left vectors ``u1``."""

    basis: LeftBasis
    u1: torch.Tensor


def delta_svd(delta: torch.Tensor, plan: Plan) -> spectra.SVD:
    """All singular values of ``delta`` and its top ``plan.keep`` vectors."""
    keep = min(plan.keep, *delta.shape)
    if plan.dense:
        return spectra.dense_svd(delta, torch.float64, compute_uv=keep > 0)
    return gram_svd(delta, keep)


def delta_spectrum(delta: torch.Tensor, plan: Plan) -> tuple[spectra.SVD, Sketch | None]:
    """:func:`delta_svd`, or with ``plan.fast`` the adaptive :class:`~lowrank.sketch.Sketch` of ``delta`` (its SVD
    holds the sketch's top-``l`` values, lower bounds); the exact route where a sketch would not be cheaper."""
    if plan.fast:
        sketch = adaptive_sketch(delta, min(plan.keep, *delta.shape), torch.Generator().manual_seed(plan.seed))
        if sketch is not None:
            return sketch.svd, sketch
    return delta_svd(delta, plan), None


def base_top_values(W0: torch.Tensor, plan: Plan) -> torch.Tensor:
    """With ``plan.fast``: W0's top ``keep`` singular values from a sketch (lower bounds, for amplification's
    baseline), or all of them from its Gram matrix where the matrix is small."""
    keep = max(min(plan.keep, *W0.shape), 1)
    size = keep + OVERSAMPLE
    if 4 * size > min(W0.shape):
        return gram_svd(W0, 0).S[:keep]
    return sketch_svd(W0, size, 0, torch.Generator().manual_seed(plan.seed)).svd.S[:keep]


def base_vectors(W0: torch.Tensor, plan: Plan) -> LeftBasis:
    """Every left singular direction of W0 and its values; read from ``plan.cache`` when it holds them."""
    def compute() -> LeftBasis:
        if plan.dense:
            svd = spectra.dense_svd(W0, torch.float64)
            return LeftBasis(svd.S, U=svd.U)
        return left_basis(W0, torch.float64)

    return compute() if plan.cache is None else cached_basis(W0, plan.cache, "svd64" if plan.dense else "gram64",
                                                               compute)


def top_vectors(W1: torch.Tensor, plan: Plan) -> torch.Tensor:
    k = min(plan.intruder_k, *W1.shape)
    return spectra.dense_svd(W1, torch.float64).U[:, :k] if plan.dense else top_left_vectors(W1, k)
