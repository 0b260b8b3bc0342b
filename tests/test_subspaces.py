"""Subspace similarity, principal angles, amplification and intruders against scipy/numpy and exact cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowrank.errors import LowrankError
from lowrank.spectra import dense_svd, lora_svd
from lowrank.analysis.subspaces import (
    Amplification,
    Intruders,
    amplification,
    grassmann_distance,
    intruder_dimensions,
    orthonormal_basis,
    principal_angles,
    random_subspace_similarity,
    subspace_similarity,
    subspace_similarity_grid,
)
from linalg_cases import gen, hadamard_halves, orthonormal, randn


# --------------------------------------------------------------------------------------- subspace geometry


def test_subspace_similarity_exact_cases():
    u = orthonormal(32, 8, seed=14)
    for i, j in [(1, 1), (3, 8), (8, 8)]:
        assert subspace_similarity(u, u, i, j) == pytest.approx(1.0, abs=1e-12)
    h1, h2 = hadamard_halves(32)
    assert subspace_similarity(h1, h2, 16, 16) == pytest.approx(0.0, abs=1e-12)
    assert subspace_similarity(h1, h1, 16, 4) == pytest.approx(1.0, abs=1e-12)


def test_subspace_similarity_is_mean_cos2_of_principal_angles():
    u1, u2 = orthonormal(40, 10, seed=15), orthonormal(40, 6, seed=16)
    for i, j in [(10, 6), (4, 6), (7, 2), (1, 1)]:
        theta = principal_angles(u1[:, :i], u2[:, :j])
        assert subspace_similarity(u1, u2, i, j) == pytest.approx(float((torch.cos(theta) ** 2).mean()), abs=1e-12)


def test_subspace_similarity_errors():
    u = orthonormal(16, 4, seed=17)
    with pytest.raises(LowrankError, match=r"\(16, 4\), \(15, 4\)"):
        subspace_similarity(u, orthonormal(15, 4, seed=18), 2, 2)
    with pytest.raises(LowrankError, match="j must be"):
        subspace_similarity(u, u, 2, 5)
    with pytest.raises(LowrankError, match="orthonormal"):
        subspace_similarity(u, 2 * u, 2, 2)


def test_random_baseline_matches_monte_carlo():
    d, i, j, draws = 64, 8, 3, 400
    q1 = torch.linalg.qr(torch.randn(draws, d, i, generator=gen(40), dtype=torch.float64))[0]
    q2 = torch.linalg.qr(torch.randn(draws, d, j, generator=gen(41), dtype=torch.float64))[0]
    phis = (q1.transpose(1, 2) @ q2).pow(2).sum(dim=(1, 2)) / min(i, j)
    assert float(phis.mean()) == pytest.approx(random_subspace_similarity(i, j, d), rel=0.05)
    for t in range(3):  # the batched Monte Carlo phi is the library's phi
        assert subspace_similarity(q1[t], q2[t], i, j) == pytest.approx(float(phis[t]), abs=1e-12)
    assert random_subspace_similarity(8, 3, 64) == 0.125
    with pytest.raises(LowrankError, match="i must be"):
        random_subspace_similarity(65, 1, 64)


def test_grid_equals_pairwise():
    u1, u2 = orthonormal(30, 9, seed=19), orthonormal(30, 7, seed=20)
    grid = subspace_similarity_grid(u1, u2, 9, 5)
    assert grid.shape == (9, 5)
    expected = [[subspace_similarity(u1, u2, i, j) for j in range(1, 6)] for i in range(1, 10)]
    np.testing.assert_allclose(grid.numpy(), np.array(expected), atol=1e-13)
    assert float(grid.min()) >= 0.0 and float(grid.max()) <= 1.0 + 1e-12


def test_principal_angles_equal_scipy():
    for seed, (d, p, q) in enumerate([(20, 5, 3), (20, 3, 5), (12, 6, 6), (50, 10, 1)]):
        a, b = randn(d, p, seed=seed), randn(d, q, seed=seed + 50)
        ours = principal_angles(a, b).numpy()
        np.testing.assert_allclose(ours, np.sort(scipy.linalg.subspace_angles(a.numpy(), b.numpy())), atol=1e-12)


def test_principal_angles_exact_cases():
    a = randn(24, 5, seed=21)
    same = principal_angles(a, a @ randn(5, 5, seed=22))  # same span, different basis
    np.testing.assert_allclose(same.numpy(), 0.0, atol=1e-7)
    h1, h2 = hadamard_halves(16)
    np.testing.assert_allclose(principal_angles(h1, h2).numpy(), math.pi / 2, atol=1e-12)
    assert grassmann_distance(principal_angles(h1, h2)) == pytest.approx(math.pi / 2 * math.sqrt(8))
    b = randn(24, 3, seed=23)
    np.testing.assert_allclose(principal_angles(a, b).numpy(), principal_angles(b, a).numpy(), atol=1e-12)
    # small angle resolved accurately: e2 rotated by 1e-9 against e2
    q1 = torch.eye(4, dtype=torch.float64)[:, :2]
    q2 = q1.clone()
    q2[:, 1] = torch.tensor([0.0, math.cos(1e-9), math.sin(1e-9), 0.0], dtype=torch.float64)
    assert float(principal_angles(q1, q2)[1]) == pytest.approx(1e-9, rel=1e-6)


def test_principal_angles_rank_deficient_and_errors():
    a = randn(10, 3, seed=24)
    a = torch.cat([a, a[:, :1] + a[:, 1:2]], dim=1)  # 4 columns, rank 3
    assert orthonormal_basis(a).shape == (10, 3)
    assert principal_angles(a, randn(10, 5, seed=25)).shape == (3,)
    with pytest.raises(LowrankError, match=r"\(10, 4\), \(9, 2\)"):
        principal_angles(a, randn(9, 2, seed=26))
    with pytest.raises(LowrankError, match="zero"):
        principal_angles(a, torch.zeros(10, 2))
    with pytest.raises(LowrankError, match="pi/2"):
        grassmann_distance(torch.tensor([2.0]))


@settings(max_examples=30, deadline=None, database=None)
@given(d=st.integers(2, 16), p=st.integers(1, 8), q=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_principal_angles_property(d, p, q, seed):
    a, b = randn(d, min(p, d), seed=seed), randn(d, min(q, d), seed=seed + 1)
    ab, ba = principal_angles(a, b), principal_angles(b, a)
    assert ab.shape == (min(p, q, d),)
    assert bool((ab[1:] >= ab[:-1]).all()) and float(ab.min()) >= 0.0 and float(ab.max()) <= math.pi / 2
    np.testing.assert_allclose(ab.numpy(), ba.numpy(), atol=1e-10)
    # scipy 1.17 picks arccos for small angles when its cos^2 >= 1/2 mask is asymmetric (mask in cos order, applied
    # in angle order), so it is accurate to about sqrt(eps) only; the spans share min(p, q) + ... - d dimensions
    # exactly, and those angles must come out 0 to rounding here.
    np.testing.assert_allclose(ab.numpy(), np.sort(scipy.linalg.subspace_angles(a.numpy(), b.numpy())), atol=1e-7)
    shared = max(0, min(p, d) + min(q, d) - d)
    np.testing.assert_allclose(ab[:shared].numpy(), 0.0, atol=1e-12)


# ----------------------------------------------------------------------------------- amplification, intruders


def test_amplification_constructed_case():
    m, n, r = 40, 30, 3
    w = torch.tensor([10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64)
    P, Q = orthonormal(m, 10, seed=27), orthonormal(n, 10, seed=28)
    W0 = (P * w) @ Q.T
    # dW lives on W0's singular directions 7, 8, 9 (W0 values 1.0, 0.5, 0.25), so U^T W0 V = diag(1, .5, .25)
    dW = (P[:, 7:] * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)) @ Q[:, 7:].T
    result = amplification(dense_svd(dW, dtype=torch.float64), W0, r, gen(0))
    assert result.delta_norm == pytest.approx(math.sqrt(14.0), rel=1e-10)
    assert result.projected_norm == pytest.approx(math.sqrt(1.0 + 0.25 + 0.0625), rel=1e-10)
    assert result.factor == pytest.approx(math.sqrt(14.0) / math.sqrt(1.3125), rel=1e-10)
    assert result.w_top_projected_norm == pytest.approx(math.sqrt(100.0 + 64.0 + 36.0), rel=1e-10)
    expected_random = r * float(torch.linalg.matrix_norm(W0)) / math.sqrt(m * n)  # sqrt(E ||U^T W0 V||_F^2)
    assert result.random_projected_norm == pytest.approx(expected_random, rel=0.5)
    assert Amplification.from_dict(result.to_dict()) == result


def test_amplification_factored_svd_and_errors():
    W0, B, A = randn(20, 12, seed=29), randn(20, 2, seed=30), randn(2, 12, seed=31)
    via_lora = amplification(lora_svd(B, A), W0, 2, gen(1))
    via_dense = amplification(dense_svd(B @ A, dtype=torch.float64), W0, 2, gen(1))
    assert via_lora.factor == pytest.approx(via_dense.factor, rel=1e-9)
    with pytest.raises(LowrankError, match=r"\(20, 13\).*\(20, 12\)"):
        amplification(lora_svd(B, A), randn(20, 13, seed=32), 2, gen(1))
    with pytest.raises(LowrankError, match="r must be"):
        amplification(lora_svd(B, A), W0, 3, gen(1))
    with pytest.raises(LowrankError, match="singular vectors"):
        amplification(dense_svd(B @ A, compute_uv=False), W0, 1, gen(1))


def _spectrum_with_gaps(m: int, n: int, seed: int) -> torch.Tensor:
    s = torch.linspace(20.0, 1.0, min(m, n), dtype=torch.float64)
    return (orthonormal(m, min(m, n), seed) * s) @ orthonormal(n, min(m, n), seed + 1).T


def test_no_intruders_under_small_perturbation():
    W0 = _spectrum_with_gaps(128, 96, seed=33)
    W1 = W0 + 1e-3 * randn(128, 96, seed=35)
    result = intruder_dimensions(W0.float(), W1.float(), k=10)
    assert result.count == 0 and min(result.max_cos) > 0.99
    assert result.floor == pytest.approx(1 / math.sqrt(128))


def test_rank_one_spike_is_one_intruder():
    m, n = 96, 128  # m <= n: W0's left singular vectors span R^m, so floor = 1/sqrt(m) holds
    W0 = _spectrum_with_gaps(m, n, seed=36)
    u = orthonormal(m, 1, seed=38)[:, 0]
    v = orthonormal(n, 1, seed=39)[:, 0]
    W1 = W0 + 100.0 * torch.outer(u, v)
    result = intruder_dimensions(W0, W1, k=10, epsilon=0.5, dtype=torch.float64)
    assert result.count == 1
    assert result.max_cos[0] < 0.5 and min(result.max_cos[1:]) > 0.5
    # independent check of the spike's max |cos| with numpy
    u0 = np.linalg.svd(W0.numpy(), full_matrices=False)[0]
    u1 = np.linalg.svd(W1.numpy(), full_matrices=False)[0][:, 0]
    assert result.max_cos[0] == pytest.approx(np.abs(u1 @ u0).max(), abs=1e-10)
    assert result.max_cos[0] >= result.floor
    assert Intruders.from_dict(result.to_dict()) == result


def test_intruder_errors():
    with pytest.raises(LowrankError, match=r"\(8, 6\), \(8, 5\)"):
        intruder_dimensions(torch.ones(8, 6), torch.ones(8, 5))
    with pytest.raises(LowrankError, match="k must be"):
        intruder_dimensions(torch.ones(8, 6), torch.ones(8, 6), k=7)
    with pytest.raises(LowrankError, match="epsilon"):
        intruder_dimensions(torch.ones(8, 6), torch.ones(8, 6), k=3, epsilon=0.0)
    with pytest.raises(LowrankError, match="lacks keys"):
        Intruders.from_dict({"count": 1})
