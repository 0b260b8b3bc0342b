"""lowrank.sketch: the a posteriori energy-rank intervals always hold the exact (float64 numpy) energy ranks, on
known spectra (flat, decaying, noise plus planted low rank, exactly low rank) and over a seed sweep; sketched
singular values never exceed the true ones; the adaptive loop grows only while growing can help."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from linalg_cases import gen, orthonormal, randn

from lowrank.errors import LowrankError
from lowrank.sketch import SLACK, adaptive_sketch, sketch_svd

LEVELS = (0.5, 0.9, 0.99)


def exact_rank(s: np.ndarray, tau: float) -> int:
    cum = np.cumsum(s.astype(np.float64) ** 2)
    return int(np.argmax(cum >= tau * cum[-1])) + 1


def with_spectrum(m: int, n: int, s: np.ndarray, seed: int) -> torch.Tensor:
    k = len(s)
    return (orthonormal(m, k, seed) * torch.from_numpy(s)) @ orthonormal(n, k, seed + 1).T


SPECTRA = {
    "flat": lambda p: np.ones(p),
    "geometric": lambda p: 0.97 ** np.arange(p),
    "power law": lambda p: 1.0 / np.arange(1, p + 1),
    "steep": lambda p: 0.5 ** np.arange(p),
    "rank 5": lambda p: np.r_[np.linspace(3, 1, 5), np.zeros(p - 5)],
}


def check(M: torch.Tensor, sketch) -> None:
    s = np.linalg.svd(M.double().numpy(), compute_uv=False)
    for tau in LEVELS:
        lo, hi = sketch.energy_rank_bounds(tau)
        assert lo <= exact_rank(s, tau) <= hi, (tau, lo, exact_rank(s, tau), hi)
    sb = sketch.svd.S.numpy()
    assert np.all(sb <= s[: len(sb)] * (1 + 1e-12) + 1e-12 * s[0])  # s_i(B) <= s_i(M)
    assert sketch.total == pytest.approx(float((s**2).sum()), rel=1e-12)
    for k in (1, 7, sketch.size, sketch.size + 5, min(M.shape)):
        low, high = sketch.captured_bounds(k)
        assert low <= float((s[:k] ** 2).sum() / (s**2).sum()) <= high + 1e-12


@pytest.mark.parametrize("name", SPECTRA)
@pytest.mark.parametrize("shape", [(300, 200), (160, 400)])
def test_intervals_hold_the_exact_energy_ranks_on_known_spectra(name, shape):
    M = with_spectrum(*shape, SPECTRA[name](min(shape)), seed=3)
    for size, power in ((16, 0), (32, 1), (48, 2)):
        check(M, sketch_svd(M, size, 4, gen(size), power))


def test_noise_plus_planted_low_rank_float32():
    planted = randn(400, 8, seed=1) @ randn(8, 256, seed=2)
    M = (0.3 * planted + randn(400, 256, seed=3)).float()
    for power in (0, 1, 2):
        check(M, sketch_svd(M, 40, 8, gen(power), power))


@pytest.mark.parametrize("seed", range(25))
def test_seed_sweep_on_random_matrices(seed):
    g = gen(seed)
    m, n = int(torch.randint(60, 240, (1,), generator=g)), int(torch.randint(60, 240, (1,), generator=g))
    decay = float(torch.rand(1, generator=g)) * 0.1
    s = np.exp(-decay * np.arange(min(m, n))) * (1 + 0.1 * np.random.default_rng(seed).random(min(m, n)))
    M = with_spectrum(m, n, np.sort(s)[::-1].copy(), seed)
    size = int(torch.randint(4, min(m, n) // 2, (1,), generator=g))
    check(M, sketch_svd(M, size, min(4, size), gen(seed + 100), seed % 3))


def test_exactly_low_rank_gives_exact_ranks_and_values():
    s = np.r_[np.linspace(5, 1, 6), np.zeros(194)]
    M = with_spectrum(300, 200, s, seed=7)
    sketch = sketch_svd(M, 20, 6, gen(0), 1)
    for tau in LEVELS:
        lo, hi = sketch.energy_rank_bounds(tau)
        assert lo == hi == exact_rank(s, tau)
    assert np.allclose(sketch.svd.S[:6].numpy(), s[:6], rtol=1e-10)
    assert sketch.residual <= 2 * SLACK * sketch.total + 1e-20
    top = sketch.svd.U[:, :6].T @ M @ sketch.svd.Vh[:6].T  # vectors: U^T M V = diag(s)
    assert torch.allclose(top, torch.diag(torch.from_numpy(s[:6])), atol=1e-10)


def test_flat_tail_bound_makes_the_upper_end_finite():
    M = randn(600, 400, seed=5)  # pure noise: k90 far beyond any sketch
    sketch = sketch_svd(M, 32, 0, gen(0), 1)
    s = np.linalg.svd(M.numpy(), compute_uv=False)
    lo, hi = sketch.energy_rank_bounds(0.9)
    assert lo <= exact_rank(s, 0.9) <= hi < 400


def test_adaptive_sketch_grows_until_narrow_and_stops_when_hopeless():
    decaying = with_spectrum(1200, 1000, 0.93 ** np.arange(1000), seed=2)
    sketch = adaptive_sketch(decaying, 8, gen(0))
    lo, hi = sketch.energy_rank_bounds(0.9)
    assert hi - lo <= max(2, 0.1 * hi) and sketch.size >= 64
    check(decaying, sketch)
    noise = randn(1200, 1000, seed=4)
    assert adaptive_sketch(noise, 8, gen(0)).size == 64  # the 90% level lies far in the unsketched tail
    assert adaptive_sketch(randn(200, 200, seed=1), 8, gen(0)) is None  # p / 4 < 64: use the exact route


def test_seeded_and_validated():
    M = randn(120, 90, seed=1)
    a, b = sketch_svd(M, 10, 2, gen(4)), sketch_svd(M, 10, 2, gen(4))
    assert torch.equal(a.svd.S, b.svd.S)
    with pytest.raises(LowrankError):
        sketch_svd(M, 90, 2, gen(0))
    with pytest.raises(LowrankError):
        a.energy_rank_bounds(1.5)
    zero = sketch_svd(torch.zeros(50, 40), 8, 0, gen(0))
    assert zero.energy_rank_bounds(0.9) == (0, 0)
