"""Exact test matrices shared by the spectra and subspaces tests: seeded Gaussians, orthonormal frames, the two
halves of a normalized Hadamard matrix (orthogonal subspaces), and matrices with planted singular values."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def orthonormal(d: int, k: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(randn(d, k, seed=seed))[0]


def hadamard_halves(d: int) -> tuple[torch.Tensor, torch.Tensor]:
    h = torch.from_numpy(scipy.linalg.hadamard(d).astype(np.float64)) / math.sqrt(d)
    return h[:, : d // 2], h[:, d // 2 :]


def planted(m: int, n: int, s: list[float], seed: int) -> torch.Tensor:
    """Matrix with exactly the singular values s (rest zero) and random singular vectors."""
    k = len(s)
    return orthonormal(m, k, seed) @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ orthonormal(n, k, seed + 1).T
