"""Tests of lowrank.spectra against float64 numpy/scipy references and exact cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowrank.errors import LowrankError
from lowrank.spectra import (
    SVD,
    Amplification,
    Intruders,
    amplification,
    dense_svd,
    effective_rank,
    energy_captured,
    energy_rank,
    grassmann_distance,
    intruder_dimensions,
    lora_svd,
    orthonormal_basis,
    principal_angles,
    random_subspace_similarity,
    stable_rank,
    subspace_similarity,
    subspace_similarity_grid,
    tail_ratio,
    top_singular_values,
)


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


def assert_svd_matches_numpy(svd: SVD, dense: np.ndarray) -> None:
    ref = np.linalg.svd(dense, compute_uv=False)
    k = svd.S.shape[0]
    scale = max(ref[0], 1e-300)
    np.testing.assert_allclose(svd.S.numpy(), ref[:k], rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(ref[k:], 0.0, atol=1e-6 * scale)  # nothing lost beyond the rank bound
    np.testing.assert_allclose(svd.reconstruct().numpy(), dense, rtol=0, atol=1e-6 * scale)
    eye = np.eye(k)
    np.testing.assert_allclose(svd.U.numpy().T @ svd.U.numpy(), eye, atol=1e-10)
    np.testing.assert_allclose(svd.Vh.numpy() @ svd.Vh.numpy().T, eye, atol=1e-10)


# ------------------------------------------------------------------------------------------------ lora_svd


@pytest.mark.parametrize(
    ("m", "n", "r", "scale"),
    [(64, 48, 4, 2.0), (48, 64, 8, 0.5), (100, 100, 16, 1.0), (10, 7, 12, 3.0), (5, 9, 30, -1.5), (1, 8, 2, 1.0)],
)
def test_lora_svd_equals_numpy_svd_of_dense_product(m, n, r, scale):
    B, A = randn(m, r, seed=1), randn(r, n, seed=2)
    svd = lora_svd(B, A, scale=scale)
    assert svd.U.shape == (m, min(m, n, r)) and svd.Vh.shape == (min(m, n, r), n)
    assert_svd_matches_numpy(svd, scale * (B @ A).numpy())


def test_lora_svd_rank_deficient_B():
    m, n, r = 40, 30, 6
    B = randn(m, r, seed=3)
    B[:, 3:] = B[:, :3] @ randn(3, 3, seed=4)  # rank 3
    A = randn(r, n, seed=5)
    svd = lora_svd(B, A, scale=2.0)
    assert_svd_matches_numpy(svd, 2.0 * (B @ A).numpy())
    assert float(svd.S[3]) < 1e-10 * float(svd.S[0])


def test_lora_svd_zero_B_gives_zero_values_and_float32_path():
    svd = lora_svd(torch.zeros(20, 4), randn(4, 10, seed=6).float())
    assert svd.S.dtype == torch.float64 and float(svd.S.abs().max()) == 0.0
    B, A = randn(30, 5, seed=7).float(), randn(5, 20, seed=8).float()
    svd32 = lora_svd(B, A, dtype=torch.float32)
    ref = np.linalg.svd((B.double() @ A.double()).numpy(), compute_uv=False)[:5]
    np.testing.assert_allclose(svd32.S.numpy(), ref, rtol=1e-5)


@settings(max_examples=40, deadline=None, database=None)
@given(m=st.integers(1, 24), n=st.integers(1, 24), r=st.integers(1, 32), seed=st.integers(0, 10_000))
def test_lora_svd_property(m, n, r, seed):
    B, A = randn(m, r, seed=seed), randn(r, n, seed=seed + 1)
    assert_svd_matches_numpy(lora_svd(B, A, scale=0.7), 0.7 * (B @ A).numpy())


def test_lora_svd_shape_errors_name_shapes():
    with pytest.raises(LowrankError, match=r"\(8, 4\).*\(3, 5\)"):
        lora_svd(torch.ones(8, 4), torch.ones(3, 5))
    with pytest.raises(LowrankError, match="2-D"):
        lora_svd(torch.ones(8), torch.ones(1, 5))
    with pytest.raises(LowrankError, match="half"):
        lora_svd(torch.ones(8, 2), torch.ones(2, 5), dtype=torch.bfloat16)
    with pytest.raises(LowrankError, match="NaN"):
        lora_svd(torch.full((8, 2), float("nan")), torch.ones(2, 5))
    with pytest.raises(LowrankError, match=r"A \(2, 5\) contains NaN or Inf"):
        lora_svd(torch.ones(8, 2), torch.full((2, 5), float("inf")))


# ----------------------------------------------------------------------------------------------- dense_svd


def test_dense_svd_matches_numpy_and_upcasts_half():
    x = randn(30, 20, seed=9)
    svd = dense_svd(x, dtype=torch.float64)
    assert_svd_matches_numpy(svd, x.numpy())
    vals = dense_svd(x.to(torch.bfloat16), compute_uv=False)
    assert vals.S.dtype == torch.float32 and not vals.has_vectors
    assert vals.U.shape == (30, 0) and vals.Vh.shape == (0, 20)
    ref = np.linalg.svd(x.to(torch.bfloat16).double().numpy(), compute_uv=False)
    np.testing.assert_allclose(vals.S.numpy(), ref, rtol=1e-5)
    with pytest.raises(LowrankError, match="values only"):
        vals.reconstruct()
    with pytest.raises(LowrankError, match="half"):
        dense_svd(x, dtype=torch.float16)


def test_top_singular_values_dense_and_lanczos_paths():
    small = randn(40, 30, seed=10)
    np.testing.assert_allclose(top_singular_values(small, 5, gen(0)).numpy(),
                               np.linalg.svd(small.numpy(), compute_uv=False)[:5], rtol=1e-12)
    big = randn(600, 520, seed=11)  # min dim > 512 and k small: ARPACK path
    ref = np.linalg.svd(big.numpy(), compute_uv=False)[:4]
    np.testing.assert_allclose(top_singular_values(big, 4, gen(0)).numpy(), ref, rtol=1e-10)


# ------------------------------------------------------------------------------------------- rank measures


@pytest.mark.parametrize("k", [1, 3, 10, 30])
def test_energy_rank_of_planted_rank_k(k):
    s_planted = [10.0 * 0.97**i for i in range(k)]  # the last value holds > 1% of the energy for k <= 30
    assert s_planted[-1] ** 2 > 0.01 * sum(v**2 for v in s_planted)
    s = dense_svd(planted(60, 50, s_planted, seed=k).float(), compute_uv=False).S  # float32, as in real use
    assert energy_rank(s, 0.99) == k
    flat = dense_svd(planted(60, 50, [3.0] * k, seed=k).float(), compute_uv=False).S
    assert energy_rank(flat, 0.99) == k
    assert energy_rank(flat, 0.9) == math.ceil(0.9 * k)


def test_energy_rank_exact_cases():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert energy_rank(s, 9 / 14) == 1
    assert energy_rank(s, 9 / 14 + 1e-9) == 2
    assert energy_rank(s, 13 / 14) == 2
    assert energy_rank(s, 1.0) == 3
    assert energy_rank(torch.zeros(5), 0.9) == 0
    assert energy_rank(torch.tensor([2.0, 2.0, 0.0, 0.0]), 1.0) == 2
    for bad in (0.0, 1.5):
        with pytest.raises(LowrankError, match="tau"):
            energy_rank(s, bad)
    with pytest.raises(LowrankError, match="descending"):
        energy_rank(torch.tensor([1.0, 2.0]), 0.9)


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=30), st.floats(0.01, 1.0))
def test_energy_rank_is_smallest_k_reaching_tau(values, tau):
    s = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
    k = energy_rank(s, tau)
    if float(s.sum()) == 0.0:
        assert k == 0
        return
    s_np = np.array(sorted(values, reverse=True))
    e = np.cumsum((s_np / s_np[0]) ** 2)  # normalized: tiny values must not underflow to zero energy
    assert e[k - 1] >= tau * e[-1] * (1 - 1e-12)
    assert k == 1 or e[k - 2] < tau * e[-1]
    assert energy_captured(s, k) >= tau * (1 - 1e-12)


def test_energy_captured_is_eckart_young():
    x = randn(30, 25, seed=12)
    svd = dense_svd(x, dtype=torch.float64)
    for k in (1, 5, 25):
        approx = (svd.U[:, :k] * svd.S[:k]) @ svd.Vh[:k]
        kept = 1 - float(torch.linalg.matrix_norm(x - approx) ** 2 / torch.linalg.matrix_norm(x) ** 2)
        assert energy_captured(svd.S, k) == pytest.approx(kept, abs=1e-12)
    assert energy_captured(svd.S, 100) == 1.0
    assert energy_captured(torch.zeros(3), 1) == 1.0


@pytest.mark.parametrize("k", [1, 2, 7, 64])
def test_effective_rank_of_k_equal_values_is_k(k):
    s = torch.cat([torch.full((k,), 2.5), torch.zeros(5)])
    assert effective_rank(s) == pytest.approx(k, rel=1e-12)


def test_effective_rank_reference_and_zero():
    s = np.array([4.0, 2.0, 1.0, 0.5])
    p = s / s.sum()
    assert effective_rank(torch.tensor(s)) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert effective_rank(torch.zeros(4)) == 0.0


def test_stable_rank_exact_cases():
    assert stable_rank(torch.full((6,), 3.0)) == pytest.approx(6.0)
    assert stable_rank(torch.tensor([2.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert stable_rank(torch.tensor([2.0, 1.0])) == pytest.approx(1.25)
    x = randn(20, 15, seed=13)
    s = dense_svd(x, dtype=torch.float64, compute_uv=False).S
    fro2, spec = float(torch.linalg.matrix_norm(x) ** 2), float(torch.linalg.matrix_norm(x, ord=2))
    assert stable_rank(s) == pytest.approx(fro2 / spec**2, rel=1e-12)
    assert stable_rank(torch.zeros(3)) == 0.0


def test_tail_ratio():
    s = torch.tensor([4.0, 2.0, 1.0, 0.0])
    assert tail_ratio(s, 1) == 1.0
    assert tail_ratio(s, 3) == 0.25
    assert tail_ratio(s, 4) == 0.0
    assert tail_ratio(s, 9) == 0.0
    assert tail_ratio(torch.zeros(2), 1) == 0.0
    with pytest.raises(LowrankError, match="r must be"):
        tail_ratio(s, 0)


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


def test_svd_record_validates_factor_shapes():
    with pytest.raises(LowrankError, match=r"\(5, 3\), \(2,\), \(2, 4\)"):
        SVD(U=torch.zeros(5, 3), S=torch.zeros(2), Vh=torch.zeros(2, 4))
    svd = SVD(U=torch.zeros(5, 2), S=torch.zeros(2), Vh=torch.zeros(2, 4))
    assert svd.shape == (5, 4) and svd.has_vectors
