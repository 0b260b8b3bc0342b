"""The fast Walsh-Hadamard transform against scipy's dense Hadamard matrix, a numpy butterfly, and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from lowrank.errors import LowrankError
from lowrank.intrinsic.hadamard import hadamard_transform, is_power_of_two
from lowrank.spectra import next_power_of_two


def _butterfly(x: np.ndarray) -> np.ndarray:
    """Textbook in-place butterfly over the last axis, float64 (independent reference)."""
    y = x.astype(np.float64)
    length, h = y.shape[-1], 1
    while h < length:
        pairs = y.reshape(*y.shape[:-1], length // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        y = np.stack((a + b, a - b), axis=-2).reshape(x.shape)
        h *= 2
    return y


@pytest.mark.parametrize("length", [1, 2, 4, 64, 128, 256, 1024])
def test_matches_scipy_dense_hadamard(length):
    x = torch.randn(3, 2, length, dtype=torch.float64, generator=torch.Generator().manual_seed(length))
    dense = torch.from_numpy(scipy.linalg.hadamard(length).astype(np.float64))
    torch.testing.assert_close(hadamard_transform(x), x @ dense, rtol=0, atol=1e-10)


def test_long_transform_matches_butterfly_and_is_an_involution_up_to_L():
    length = 2**15  # three Kronecker factors (128 * 128 * 2)
    x = torch.randn(2, length, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = hadamard_transform(x)
    np.testing.assert_allclose(y.numpy(), _butterfly(x.numpy()), rtol=0, atol=1e-9)
    torch.testing.assert_close(hadamard_transform(y), length * x, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("length", [8, 256])
def test_gradcheck_float64(length):
    x = torch.randn(2, length, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(hadamard_transform, (x,), eps=1e-6, atol=1e-7)


def test_backward_is_the_unscaled_transform_of_the_gradient():
    length = 512
    x = torch.randn(length, dtype=torch.float64, requires_grad=True)
    g = torch.randn(length, dtype=torch.float64)
    hadamard_transform(x).backward(g)
    dense = torch.from_numpy(scipy.linalg.hadamard(length).astype(np.float64))
    torch.testing.assert_close(x.grad, dense @ g, rtol=0, atol=1e-10)  # not divided by sqrt(L)


def test_float32_close_to_float64():
    x = torch.randn(4, 4096, dtype=torch.float64)
    torch.testing.assert_close(hadamard_transform(x.float()).double(), hadamard_transform(x), rtol=1e-5, atol=1e-3)


def test_power_of_two_helpers():
    assert [next_power_of_two(n) for n in (1, 2, 3, 5, 199210)] == [1, 2, 4, 8, 262144]
    assert is_power_of_two(1) and is_power_of_two(1024) and not is_power_of_two(0) and not is_power_of_two(12)
    with pytest.raises(LowrankError):
        next_power_of_two(0)


def test_bad_input():
    with pytest.raises(LowrankError, match=r"power-of-two.*\(3, 12\)"):
        hadamard_transform(torch.zeros(3, 12))
    with pytest.raises(LowrankError, match="floating-point"):
        hadamard_transform(torch.zeros(4, dtype=torch.long))
