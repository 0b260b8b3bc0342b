"""Random projections ``P: R^d -> R^D`` for training in a subspace, all regenerated from a seed.

Every projection is an ``nn.Module`` with no parameters and only non-persistent buffers, built on the CPU from
``(D, d, seed)`` so the same seed gives the same ``P`` on every device; a checkpoint of a subspace run needs only
``theta_d`` and the seed. Columns of ``P`` have unit norm (exactly for dense and sparse, in expectation for
Fastfood), so ``||P theta_d|| ~ ||theta_d||`` whatever ``D`` is (Li et al. 2018).

- :class:`DenseProjection`: i.i.d. Gaussian ``D x d``, columns normalized over the whole network. Generated in
  row chunks of about 4 MB from one seeded generator; by default regenerated in every forward and backward
  (memory ``O(D + chunk)``, time ``O(D d)`` random numbers per step); ``cache=True`` keeps the ``D x d`` matrix
  (memory ``O(D d)``, same numbers, much faster for small ``D d``).
- :class:`SparseProjection`: very sparse random projection (Li, Hastie and Church 2006) as in Li et al. 2018:
  about ``sqrt(D)`` nonzeros ``+-1/sqrt(n_j)`` per column; memory ``O(d sqrt(D))``.
- :class:`FastfoodProjection`: ``V = H G Pi H B`` (Le et al. 2013) per block of ``L = 2^ceil(log2 D)`` inputs,
  memory ``O(L)`` per block; ``d > L`` stacks ``ceil(d / L)`` independent blocks, never truncating ``theta_d``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lowrank.errors import LowrankError
from lowrank.intrinsic.fastfood import fastfood_rows, inverse_permutation, tiled_index
from lowrank.spectra import next_power_of_two

PROJECTIONS = ("dense", "sparse", "fastfood")
_CHUNK_ELEMENTS = 1 << 20


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


class Projection(nn.Module):
    """Base class: ``forward(theta_d: (d,)) -> (D,)``, linear in ``theta_d``, no trainable parameters."""

    kind = "base"

    def __init__(self, D: int, d: int, seed: int) -> None:
        super().__init__()
        if D < 1 or d < 1:
            raise LowrankError(f"a projection needs D >= 1 and d >= 1, got D={D}, d={d}")
        self.D, self.d, self.seed = D, d, seed

    def _check(self, theta_d: torch.Tensor) -> None:
        if theta_d.shape != (self.d,):
            raise LowrankError(f"{self.kind} projection expects theta_d of shape ({self.d},), got {tuple(theta_d.shape)}")

    def extra_repr(self) -> str:
        return f"D={self.D}, d={self.d}, seed={self.seed}"


class _RegeneratedGaussian(torch.autograd.Function):
    """``y = G v`` with ``G`` (D x d) regenerated chunk by chunk in forward and backward, never held whole."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, projection: "DenseProjection") -> torch.Tensor:
        ctx.projection = projection
        return torch.cat([chunk.to(v.device, v.dtype) @ v for chunk in projection.chunks()])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        projection = ctx.projection
        total = torch.zeros(projection.d, dtype=grad.dtype, device=grad.device)
        start = 0
        for chunk in projection.chunks():
            rows = chunk.shape[0]
            total += chunk.to(grad.device, grad.dtype).T @ grad[start : start + rows]
            start += rows
        return total, None


class DenseProjection(Projection):
    """Gaussian ``P = G diag(1 / ||G[:, j]||)`` with ``G_ij ~ N(0, 1)``, shape ``(D, d)``.

    Args:
        D: output size (the number of projected parameters).
        d: subspace dimension.
        seed: seeds the one CPU generator that yields ``G`` row chunk after row chunk.
        cache: keep ``P`` in memory (``4 D d`` bytes) instead of regenerating it in every forward/backward.
    """

    kind = "dense"

    def __init__(self, D: int, d: int, seed: int, cache: bool = False) -> None:
        super().__init__(D, d, seed)
        self.chunk_rows = max(1, _CHUNK_ELEMENTS // d)
        self.cache = cache
        matrix = torch.empty(D, d) if cache else None
        squares = torch.zeros(d, dtype=torch.float64)
        start = 0
        for chunk in self.chunks():
            squares += chunk.double().square().sum(0)
            if matrix is not None:
                matrix[start : start + chunk.shape[0]] = chunk
            start += chunk.shape[0]
        self.register_buffer("inverse_norms", squares.rsqrt().float(), persistent=False)
        if matrix is not None:
            self.register_buffer("matrix", matrix.mul_(self.inverse_norms), persistent=False)

    def chunks(self):
        """Yield the unnormalized Gaussian ``G`` in row chunks (CPU, float32), the same numbers every time.

        Every chunk is written into one reused buffer (no allocator churn): use it before taking the next.
        """
        generator = _generator(self.seed)
        buffer = torch.empty(min(self.chunk_rows, self.D), self.d)
        for start in range(0, self.D, self.chunk_rows):
            rows = min(self.chunk_rows, self.D - start)
            yield torch.randn(rows, self.d, generator=generator, out=buffer[:rows])

    def forward(self, theta_d: torch.Tensor) -> torch.Tensor:
        self._check(theta_d)
        if self.cache:
            return self.matrix @ theta_d
        return _RegeneratedGaussian.apply(theta_d * self.inverse_norms.to(theta_d.device, theta_d.dtype), self)


class SparseProjection(Projection):
    """Very sparse random projection: column ``j`` holds ``n_j ~ Binomial(D, 1/sqrt(D))`` (at least 1) distinct
    random rows with values ``+-1 / sqrt(n_j)``, so every column has unit norm exactly.

    ``forward`` is a scatter-add: ``y[rows] += values * theta_d[cols]``; memory ``O(d sqrt(D))``.
    """

    kind = "sparse"

    def __init__(self, D: int, d: int, seed: int) -> None:
        super().__init__(D, d, seed)
        generator = _generator(seed)
        density = min(1.0, 1.0 / math.sqrt(D))
        counts = torch.binomial(torch.full((d,), float(D)), torch.full((d,), density), generator=generator)
        counts = counts.long().clamp(min=1)
        cols = torch.repeat_interleave(torch.arange(d), counts)
        rows = torch.randint(0, D, (cols.numel(),), generator=generator)
        keys = torch.unique(cols * D + rows)
        cols, rows = keys // D, keys % D
        per_column = torch.bincount(cols, minlength=d).float()
        signs = torch.randint(0, 2, (keys.numel(),), generator=generator).float() * 2 - 1
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.register_buffer("values", signs * per_column[cols].rsqrt(), persistent=False)

    def forward(self, theta_d: torch.Tensor) -> torch.Tensor:
        self._check(theta_d)
        out = torch.zeros(self.D, dtype=theta_d.dtype, device=theta_d.device)
        return out.index_add(0, self.rows, self.values * theta_d[self.cols])


class FastfoodProjection(Projection):
    """Fastfood: ``P theta_d = sum_b s_b [H G_b Pi_b H B_b x_b]_{:D}``.

    ``x_b`` is block ``b`` of ``theta_d`` zero-padded to ``n_blocks * L`` (``L = 2^ceil(log2 D)``,
    ``n_blocks = ceil(d / L)``); ``B_b`` random +-1, ``Pi_b`` a random permutation, ``G_b`` i.i.d. N(0, 1),
    ``H`` the unnormalized Walsh-Hadamard matrix. Every column of ``H G Pi H B`` has norm ``sqrt(L) ||G||``, and
    keeping ``D`` of ``L`` rows leaves a fraction ``D / L`` of its square in expectation, so
    ``s_b = 1 / (sqrt(L ||G_b||^2) sqrt(D / L))`` gives columns of unit norm in expectation (Li et al. 2018).

    Computed by :func:`lowrank.intrinsic.fastfood.fastfood_rows` (two length-``L`` transforms per forward and
    backward: the first ``H`` acts on only ``width = 2^ceil(log2 d)`` nonzero entries when ``d < L``).
    Buffers per block: ``B`` and ``s G`` (float32), ``Pi``, its inverse and its tiled form (int32): ``20 L`` bytes.
    """

    kind = "fastfood"

    def __init__(self, D: int, d: int, seed: int) -> None:
        super().__init__(D, d, seed)
        self.L = next_power_of_two(D)
        self.n_blocks = -(-d // self.L)
        if self.n_blocks * self.L >= 2**31:
            raise LowrankError(f"fastfood with D={D}, d={d} needs {self.n_blocks} blocks of {self.L}: too large")
        generator = _generator(seed)
        signs, perms, gauss = [], [], []
        for block in range(self.n_blocks):
            signs.append(torch.randint(0, 2, (self.L,), generator=generator).float() * 2 - 1)
            perms.append(torch.randperm(self.L, generator=generator) + block * self.L)
            g = torch.randn(self.L, generator=generator, dtype=torch.float64)
            scale = 1.0 / (math.sqrt(self.L * g.square().sum().item()) * math.sqrt(D / self.L))
            gauss.append((g * scale).float())
        self.register_buffer("signs", torch.stack(signs), persistent=False)
        self.register_buffer("perm", torch.cat(perms).int(), persistent=False)
        self.register_buffer("inverse", inverse_permutation(self.perm), persistent=False)
        self.register_buffer("gauss", torch.stack(gauss), persistent=False)
        self.width = next_power_of_two(d) if self.n_blocks == 1 else self.L
        self.register_buffer("gather", tiled_index(self.perm, self.L, self.width), persistent=False)

    def forward(self, theta_d: torch.Tensor) -> torch.Tensor:
        self._check(theta_d)
        x = torch.nn.functional.pad(theta_d, (0, self.n_blocks * self.width - self.d)).view(self.n_blocks, self.width)
        return fastfood_rows(x, self.signs, self.gather, self.inverse, self.gauss, self.D).sum(0)


def make_projection(kind: str, D: int, d: int, seed: int, cache: bool = False) -> Projection:
    """Build a projection by name (``dense``, ``sparse`` or ``fastfood``); ``cache`` applies to ``dense`` only.

    Raises:
        LowrankError: for an unknown ``kind`` or non-positive sizes.
    """
    if kind == "dense":
        return DenseProjection(D, d, seed, cache=cache)
    if kind == "sparse":
        return SparseProjection(D, d, seed)
    if kind == "fastfood":
        return FastfoodProjection(D, d, seed)
    raise LowrankError(f"unknown projection {kind!r}; expected one of {', '.join(PROJECTIONS)}")
