"""Gradient sufficiency signals (lowrank.advice.sufficiency.gradient_evidence) against float64 numpy."""

import numpy as np
import pytest
import torch

from lowrank.advice.sufficiency.gradient_evidence import model_doubling_gain, module_evidence, outside_part
from lowrank.errors import LowrankError


def _reference_outside(G, B, A):
    qb, _ = np.linalg.qr(B)
    qa, _ = np.linalg.qr(A.T)
    left = np.eye(G.shape[0]) - qb @ qb.T
    right = np.eye(G.shape[1]) - qa @ qa.T
    return left @ G @ right


def test_outside_part_matches_projector_formula():
    rng = np.random.default_rng(0)
    G, B, A = rng.normal(size=(12, 9)), rng.normal(size=(12, 3)), rng.normal(size=(3, 9))
    got = outside_part(torch.tensor(G), torch.tensor(B), torch.tensor(A)).numpy()
    np.testing.assert_allclose(got, _reference_outside(G, B, A), atol=1e-12)


def test_reachable_gradient_has_no_outside_part():
    """A gradient of the form B X + Y A (what dB A + B dA can follow) lies entirely within reach."""
    rng = np.random.default_rng(1)
    B, A = rng.normal(size=(10, 2)), rng.normal(size=(2, 7))
    G = B @ rng.normal(size=(2, 7)) + rng.normal(size=(10, 2)) @ A
    assert np.abs(outside_part(torch.tensor(G), torch.tensor(B), torch.tensor(A)).numpy()).max() < 1e-10


def test_doubling_gain_counts_top_r_outside_energy_over_top_r_start_energy():
    rng = np.random.default_rng(2)
    G, G0 = rng.normal(size=(16, 12)), rng.normal(size=(16, 12))
    B, A = rng.normal(size=(16, 2)), rng.normal(size=(2, 12))
    signals = module_evidence(torch.tensor(G), torch.tensor(G0), torch.tensor(B), torch.tensor(A))
    s_out = np.linalg.svd(_reference_outside(G, B, A), compute_uv=False)
    s0 = np.linalg.svd(G0, compute_uv=False)
    assert signals.doubling_gain == pytest.approx((s_out[:2] ** 2).sum() / (s0[:2] ** 2).sum(), rel=1e-10)
    assert signals.outside_fraction == pytest.approx((s_out ** 2).sum() / (G ** 2).sum(), rel=1e-10)
    assert len(signals.gain_curve) == 4 and signals.gain_curve[1] == pytest.approx(signals.doubling_gain)
    assert model_doubling_gain([signals, signals]) == pytest.approx(signals.doubling_gain)


def test_signal_to_noise_is_about_one_for_noise_and_large_for_a_planted_direction():
    """Two halves of a sample share the signal and differ in noise; the noise energy comes from their difference."""
    generator = torch.Generator().manual_seed(0)
    m, n, r = 200, 150, 4
    B = torch.randn(m, r, generator=generator, dtype=torch.float64)
    A = torch.randn(r, n, generator=generator, dtype=torch.float64)
    ratios = []
    for strength in (0.0, 5.0):
        u = torch.randn(m, 1, generator=generator, dtype=torch.float64)
        v = torch.randn(1, n, generator=generator, dtype=torch.float64)
        signal = strength * (u @ v) / (u.norm() * v.norm())
        first = signal + 0.05 * torch.randn(m, n, generator=generator, dtype=torch.float64)
        second = signal + 0.05 * torch.randn(m, n, generator=generator, dtype=torch.float64)
        signals = module_evidence((first + second) / 2, torch.ones(m, n, dtype=torch.float64), B, A, (first, second))
        ratios.append(signals.signal_to_noise)
    assert 0.5 < ratios[0] <= 1.05 and ratios[1] > 5


def test_shape_mismatch_is_refused():
    with pytest.raises(LowrankError, match="needs B"):
        outside_part(torch.zeros(4, 5), torch.zeros(3, 2), torch.zeros(2, 5))


def test_rank_deficient_factors_reach_only_their_true_directions():
    rng = np.random.default_rng(3)
    G = rng.normal(size=(12, 9))
    B = np.outer(rng.normal(size=12), np.ones(3))  # rank 1 although r = 3
    A = rng.normal(size=(3, 9))
    qb = np.linalg.svd(B, full_matrices=False)[0][:, :1]
    qa, _ = np.linalg.qr(A.T)
    expected = (np.eye(12) - qb @ qb.T) @ G @ (np.eye(9) - qa @ qa.T)
    got = outside_part(torch.tensor(G), torch.tensor(B), torch.tensor(A)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
