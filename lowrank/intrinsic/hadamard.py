"""The fast Walsh-Hadamard transform with an exact backward.

``hadamard_transform(x)`` computes ``y = x @ H_L`` along the last axis, where ``H_L`` is the *unnormalized*
Sylvester-Hadamard matrix of size ``L = 2^n`` (entries +-1, ``H_L @ H_L = L * I``, the same matrix as
``scipy.linalg.hadamard(L)``). ``H_L`` is symmetric, so the backward of ``y = H x`` is ``dx = H g``: the same
transform, *unscaled* (a known public implementation divides it by ``sqrt(L)``; that is wrong).

The transform is computed through the Kronecker factorization ``H_L = H_m1 (x) H_m2 (x) ... (x) H_mk`` with every
``m_i <= 16`` (the smallest factor first): with ``x`` viewed as ``(rows, m1, ..., mk)``, factor ``i`` is one
(batched) matrix product ``H_mi @ x.view(-1, m_i, m_{i+1} ... m_k)`` along its own axis, so no pass transposes or
copies the array. Cost ``L * sum(m_i)`` multiply-adds (at most ``4 L log2 L``), ``O(L)`` extra memory; on the
CPU faster than passes over factors of 128 that each end in a transposing copy (reports/intrinsic_speed.md).
"""

from __future__ import annotations

import functools

import torch

from lowrank.errors import LowrankError

_MAX_FACTOR = 16


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n >= 1 and n & (n - 1) == 0


def _factors(length: int) -> list[int]:
    """Split ``length = 2^n`` into powers of two no larger than ``_MAX_FACTOR``, the smallest first."""
    factors = []
    while length > 1:
        factor = min(length, _MAX_FACTOR)
        factors.append(factor)
        length //= factor
    return factors[::-1]


@functools.lru_cache(maxsize=64)
def _dense_hadamard(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(Cached) Sylvester construction ``H_2m = [[H_m, H_m], [H_m, -H_m]]``; ``size`` is a power of two."""
    matrix = torch.ones(1, 1, dtype=dtype, device=device)
    while matrix.shape[0] < size:
        matrix = torch.cat((torch.cat((matrix, matrix), 1), torch.cat((matrix, -matrix), 1)), 0)
    return matrix


def _fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized transform of the last axis of ``x`` (any leading shape), no autograd bookkeeping.

    ``x`` viewed as ``(rows, m1, ..., mk)``: pass ``i`` computes ``H_mi`` along axis ``i`` as
    ``H_mi @ x.view(-1, m_i, inner)`` (``inner = m_{i+1} ... m_k``); the last pass is ``x.view(-1, m_k) @ H_mk``.
    """
    y, inner = x.contiguous(), x.shape[-1]
    for factor in _factors(inner):
        h = _dense_hadamard(factor, y.dtype, y.device)
        inner //= factor
        y = y.reshape(-1, factor) @ h if inner == 1 else torch.matmul(h, y.reshape(-1, factor, inner))
    return y.reshape(x.shape)


class _HadamardFunction(torch.autograd.Function):
    """``y = H x``; backward ``H g`` (H symmetric, unnormalized: no 1/sqrt(L) anywhere)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D401 - autograd signature
        return _fwht(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _fwht(grad)


def hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized Walsh-Hadamard transform of the last axis.

    Args:
        x: tensor of shape ``(..., L)``, ``L`` a power of two, floating point.

    Returns:
        Tensor of the same shape: ``x @ H_L`` (``H_L`` symmetric, so also ``H_L x`` per row).

    Raises:
        LowrankError: if the last axis is not a power of two or ``x`` is not floating point.
    """
    if x.ndim == 0 or not is_power_of_two(x.shape[-1]):
        raise LowrankError(f"hadamard_transform needs a last axis of power-of-two length, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise LowrankError(f"hadamard_transform needs a floating-point tensor, got {x.dtype}")
    return _HadamardFunction.apply(x)
