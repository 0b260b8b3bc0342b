"""Random projections: exact construction, unit-norm columns, near-orthogonality, d > L stacking, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from lowrank.errors import LowrankError
from lowrank.intrinsic.projections import (PROJECTIONS, DenseProjection, FastfoodProjection, SparseProjection,
                                           make_projection)


pytestmark = pytest.mark.usefixtures("one_thread")


def materialize(projection) -> torch.Tensor:
    """P as a dense (D, d) float64 matrix, column by column through the forward (the module is linear)."""
    eye = torch.eye(projection.d)
    return torch.stack([projection(eye[j]) for j in range(projection.d)], dim=1).double()


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_linear_and_reproducible_from_seed(kind):
    p = make_projection(kind, 700, 30, seed=3)
    x, y = torch.randn(30), torch.randn(30)
    torch.testing.assert_close(p(2 * x - y), 2 * p(x) - p(y), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(make_projection(kind, 700, 30, seed=3)(x), p(x))
    assert not torch.allclose(make_projection(kind, 700, 30, seed=4)(x), p(x))
    assert list(p.parameters()) == [] and p.state_dict() == {}


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_dense_and_sparse_columns_have_exactly_unit_norm(kind):
    norms = materialize(make_projection(kind, 900, 40, seed=0)).norm(dim=0)
    torch.testing.assert_close(norms, torch.ones(40, dtype=torch.float64), rtol=0, atol=1e-5)


def test_fastfood_columns_have_unit_norm_in_expectation():
    # D = 600 is far from L = 1024, so each column keeps a random fraction of its norm; the mean over seeds is 1.
    squares = torch.stack([materialize(FastfoodProjection(600, 20, seed)).square().sum(0) for seed in range(25)])
    assert abs(squares.mean().item() - 1.0) < 0.02
    assert 0.7 < squares.min().item() and squares.max().item() < 1.3


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_columns_are_near_orthogonal(kind):
    D, d = 4096, 40
    P = materialize(make_projection(kind, D, d, seed=1))
    P = P / P.norm(dim=0)
    cosines = (P.T @ P - torch.eye(d, dtype=torch.float64)).abs()
    assert cosines.max().item() < 6 / math.sqrt(D)  # random unit vectors: |cos| ~ 1/sqrt(D)
    assert cosines.mean().item() < 1.5 / math.sqrt(D)


def _fastfood_reference(p: FastfoodProjection) -> np.ndarray:
    """sum_b [H diag(sG_b) Pi_b H diag(B_b)]_{:D, block b} in float64 from the module's buffers and scipy's H."""
    H = scipy.linalg.hadamard(p.L).astype(np.float64)
    blocks = []
    for b in range(p.n_blocks):
        perm = p.perm.long().numpy()[b * p.L : (b + 1) * p.L] - b * p.L
        Pi = np.zeros((p.L, p.L))
        Pi[np.arange(p.L), perm] = 1.0
        V = H @ np.diag(p.gauss[b].double().numpy()) @ Pi @ H @ np.diag(p.signs[b].double().numpy())
        blocks.append(V[: p.D])
    return np.concatenate(blocks, axis=1)[:, : p.d]


@pytest.mark.parametrize(("D", "d"), [(100, 20), (128, 128), (100, 300)])
def test_fastfood_equals_its_dense_formula(D, d):
    p = FastfoodProjection(D, d, seed=7)
    np.testing.assert_allclose(materialize(p).numpy(), _fastfood_reference(p), rtol=1e-4, atol=1e-5)


def test_fastfood_scale_makes_full_columns_exactly_sqrt_L_G_times_scale():
    p = FastfoodProjection(128, 16, seed=2)  # D = L: nothing dropped, every column has norm exactly 1
    torch.testing.assert_close(materialize(p).norm(dim=0), torch.ones(16, dtype=torch.float64), rtol=1e-5, atol=0)


def test_fastfood_d_larger_than_L_stacks_blocks_and_never_truncates():
    p = FastfoodProjection(100, 300, seed=0)
    assert (p.L, p.n_blocks) == (128, 3)
    last = torch.zeros(300)
    last[-1] = 1.0
    assert p(last).norm().item() > 0.5  # the last coordinate of theta_d moves theta
    theta = torch.zeros(300, requires_grad=True)
    w = torch.randn(100)
    (p(theta) @ w).backward()
    expected = materialize(p).T @ w.double()
    torch.testing.assert_close(theta.grad.double(), expected, rtol=1e-4, atol=1e-5)
    assert (theta.grad[256:].abs() > 0).all()
    assert torch.linalg.matrix_rank(materialize(p)).item() == 100


@pytest.mark.parametrize(("D", "d"), [(50, 70), (100, 20)])  # two blocks; one block whose input is 32 of L = 128
def test_fastfood_gradient_via_gradcheck(D, d):
    p = FastfoodProjection(D, d, seed=0).double()
    theta = torch.randn(d, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(p, (theta,))


def test_dense_regenerated_equals_cached_and_gradcheck():
    cached, regenerated = DenseProjection(300, 12, 5, cache=True), DenseProjection(300, 12, 5, cache=False)
    x = torch.randn(12)
    torch.testing.assert_close(regenerated(x), cached(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.matrix.double(), materialize(regenerated), rtol=1e-6, atol=1e-7)
    theta = torch.randn(12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(regenerated, (theta,))
    assert regenerated.state_dict() == {} and "matrix" not in dict(regenerated.named_buffers())


def test_sparse_density_is_about_one_over_sqrt_D():
    p = SparseProjection(10_000, 50, seed=0)
    per_column = p.rows.numel() / 50
    assert 80 < per_column < 120  # sqrt(10000) = 100


def test_full_rank_at_d_equals_D():
    for kind in PROJECTIONS:
        P = materialize(make_projection(kind, 64, 64, seed=0))
        assert torch.linalg.matrix_rank(P).item() == 64, kind


def test_bad_input():
    with pytest.raises(LowrankError, match="unknown projection 'gaussian'"):
        make_projection("gaussian", 10, 2, 0)
    with pytest.raises(LowrankError, match="D >= 1 and d >= 1"):
        make_projection("dense", 10, 0, 0)
    with pytest.raises(LowrankError, match=r"theta_d of shape \(4,\)"):
        make_projection("fastfood", 10, 4, 0)(torch.zeros(5))
