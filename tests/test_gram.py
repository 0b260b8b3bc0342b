"""lowrank.gram and the decomposition routes against float64 numpy on matrices with known spectra, including
ill-conditioned ones; the read-ahead thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowrank.analysis.decompose import Plan, base_vectors, delta_svd, top_vectors
from lowrank.analysis.prefetch import prefetched
from lowrank.analysis.subspaces import intruders_from
from lowrank.gram import gram_svd, left_basis, top_left_vectors


def planted(m: int, n: int, spectrum: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``U diag(spectrum) V^T`` with random orthonormal U, V (float64), and U, V."""
    rng = np.random.default_rng(seed)
    p = len(spectrum)
    U = np.linalg.qr(rng.standard_normal((m, p)))[0]
    V = np.linalg.qr(rng.standard_normal((n, p)))[0]
    return torch.from_numpy((U * spectrum) @ V.T), U, V


SPECTRA = {"flat": np.linspace(2.0, 1.0, 40), "decaying": 0.7 ** np.arange(40),
           "ill-conditioned": np.logspace(0, -12, 40), "rank 5 of 40": np.r_[np.linspace(3, 1, 5), np.zeros(35)]}


@pytest.mark.parametrize("name", SPECTRA)
@pytest.mark.parametrize("shape", [(40, 90), (90, 40)])
@pytest.mark.parametrize("keep", [5, 15])  # the CPU's three eigensolver calls: syevr's top 5, syevd's all 40
def test_gram_route_is_within_its_stated_bound(name, shape, keep):
    spectrum = SPECTRA[name]
    M, U, V = planted(*shape, spectrum)
    svd = gram_svd(M, keep=keep)
    assert svd.U.shape == (shape[0], keep) and svd.Vh.shape == (keep, shape[1])
    p = min(shape)
    bound = np.sqrt(10 * p * np.finfo(float).eps) * spectrum[0]  # sqrt(c p u) s_1
    large = spectrum > 1e-3 * spectrum[0]  # values above 1e-3 s_1: within c p u s_1^2 / s_i
    for values in (svd.S.numpy(), gram_svd(M, keep=0).S.numpy()):  # with vectors, and values alone
        assert np.max(np.abs(values - spectrum)) <= bound
        assert np.all(np.abs(values - spectrum)[large] <= 10 * p * np.finfo(float).eps * spectrum[0] ** 2
                      / spectrum[large])
    gaps = np.abs(np.diff(spectrum[:6]))
    if name != "flat" and gaps.min() > 0.01:  # well-separated top vectors are exact up to sign
        np.testing.assert_allclose(np.abs(np.sum(svd.U.numpy()[:, :5] * U[:, :5], axis=0)), 1.0, atol=1e-9)
        np.testing.assert_allclose(np.abs(np.sum(svd.Vh.numpy()[:5].T * V[:, :5], axis=0)), 1.0, atol=1e-9)
    basis = left_basis(M)
    coordinates = basis.coordinates(torch.from_numpy(U[:, :5]))  # U^T u_i: +-1 at i for the top, distinct values
    if name == "decaying":
        np.testing.assert_allclose(np.abs(coordinates.numpy()[:5]), np.eye(5), atol=1e-9)
    if shape[0] <= shape[1]:
        np.testing.assert_allclose(basis.U.T @ basis.U, np.eye(p), atol=1e-10)  # an orthonormal frame


def test_top_left_vectors_alone_equal_the_full_routes_and_float32_is_close():
    M, U, _ = planted(90, 40, 0.7 ** np.arange(40), seed=4)
    for X, reference in ((M, U[:, :6]), (M.T.contiguous(), None)):
        top = top_left_vectors(X, 6)
        reference = reference if reference is not None else gram_svd(X, 6).U.numpy()
        np.testing.assert_allclose(np.abs(np.sum(top.numpy() * reference, axis=0)), 1.0, atol=1e-9)
    single = top_left_vectors(M, 6, torch.float32)
    assert single.dtype == torch.float32
    np.testing.assert_allclose(np.abs(np.sum(single.double().numpy() * U[:, :6], axis=0)), 1.0, atol=1e-3)


def test_gram_values_agree_with_dense_float64_svd_to_1e_5_of_the_largest():
    generator = torch.Generator().manual_seed(1)
    M = 2e-4 * torch.randn(300, 16, generator=generator) @ torch.randn(16, 120, generator=generator) \
        + 1e-3 * torch.randn(300, 120, generator=generator)
    reference = np.linalg.svd(M.double().numpy(), compute_uv=False)
    fast = delta_svd(M, Plan(torch.float32, torch.device("cpu"), True, keep=8)).S.numpy()
    dense = delta_svd(M, Plan(torch.float64, torch.device("cpu"), True, keep=8)).S.numpy()
    assert np.max(np.abs(fast - reference)) <= 1e-5 * reference[0]
    assert np.max(np.abs(dense - reference)) <= 1e-12 * reference[0]


def test_intruders_from_the_gram_route_equal_those_from_dense_svds():
    """On a W0 whose singular values are distinct (gaps of 15%, a 2e3 range); within a cluster of equal values
    the vectors, and so max_cos, are not unique for any solver."""
    generator = torch.Generator().manual_seed(2)
    W0 = planted(64, 48, 0.85 ** np.arange(48), seed=3)[0]
    W1 = W0 + 0.5 * torch.randn(64, 3, generator=generator, dtype=torch.float64) @ torch.randn(
        3, 48, generator=generator, dtype=torch.float64)
    plan = Plan(torch.float32, torch.device("cpu"), True, intruder_k=10)
    check_intruders(W0, W1, plan)  # tall: the implicit basis U = W0 V / S
    check_intruders(W0.T.contiguous(), W1.T.contiguous(), plan)  # wide: the explicit basis


def check_intruders(W0, W1, plan):
    fast = intruders_from(base_vectors(W0, plan), top_vectors(W1, plan), 0.5)
    u_ref0, u_ref1 = np.linalg.svd(W0.numpy(), full_matrices=False)[0], np.linalg.svd(W1.numpy())[0][:, :10]
    reference = np.abs(u_ref1.T @ u_ref0).max(axis=1)
    np.testing.assert_allclose(fast.max_cos, reference, atol=1e-9)
    assert fast.count == int((reference < 0.5).sum())


def test_prefetch_keeps_order_raises_where_it_failed_and_stops_when_closed():
    assert list(prefetched(iter(range(20)), depth=2)) == list(range(20))

    def failing():
        yield 1
        raise ValueError("bad shard")

    items = prefetched(failing())
    assert next(items) == 1
    with pytest.raises(ValueError, match="bad shard"):
        next(items)
    produced = []

    def endless():
        for i in range(10**6):
            produced.append(i)
            yield i

    items = prefetched(endless())
    assert next(items) == 0
    items.close()
    assert len(produced) < 10
