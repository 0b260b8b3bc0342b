"""Tests of lowrank.spectra against float64 numpy/scipy references and exact cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowrank.errors import LowrankError
from lowrank.spectra import (
    SVD,
    dense_svd,
    effective_rank,
    energy_captured,
    energy_rank,
    lora_svd,
    stable_rank,
    tail_ratio,
    top_singular_values,
)
from linalg_cases import gen, planted, randn


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
    with pytest.raises(LowrankError, match="only some of its singular vectors"):
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


def test_svd_record_validates_factor_shapes():
    with pytest.raises(LowrankError, match=r"\(5, 3\), \(2,\), \(2, 4\)"):
        SVD(U=torch.zeros(5, 3), S=torch.zeros(2), Vh=torch.zeros(2, 4))
    svd = SVD(U=torch.zeros(5, 2), S=torch.zeros(2), Vh=torch.zeros(2, 4))
    assert svd.shape == (5, 4) and svd.has_vectors
