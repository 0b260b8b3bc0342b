"""Fully connected ReLU networks named by a spec string: ``mlp:784,200,200,10``.

``mlp:n0,n1,...,nk`` is ``Linear(n0, n1) -> ReLU -> ... -> Linear(n_{k-1}, nk)`` (no activation after the last
layer), the networks of Li et al. 2018's MNIST experiments. Parameter count
``D = sum_i (n_i + 1) n_{i+1}``; e.g. ``mlp:784,200,200,10`` has D = 199,210.
"""

from __future__ import annotations

import torch
from torch import nn

from lowrank.errors import LowrankError

PREFIX = "mlp:"


def is_mlp_spec(name: str) -> bool:
    """True when ``name`` starts with ``mlp:`` (then :func:`parse_mlp_spec` validates the rest)."""
    return name.startswith(PREFIX)


def parse_mlp_spec(spec: str) -> tuple[int, ...]:
    """``"mlp:784,200,10"`` -> ``(784, 200, 10)``.

    Raises:
        LowrankError: without the ``mlp:`` prefix, with fewer than two sizes, or with a size that is not a
            positive integer.
    """
    if not is_mlp_spec(spec):
        raise LowrankError(f"model spec {spec!r} does not start with {PREFIX!r} (example: mlp:784,200,200,10)")
    parts = spec[len(PREFIX) :].split(",")
    try:
        sizes = tuple(int(part) for part in parts)
    except ValueError:
        raise LowrankError(f"model spec {spec!r}: sizes must be integers separated by commas") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise LowrankError(f"model spec {spec!r}: needs at least two positive sizes (input and output)")
    return sizes


class MLP(nn.Module):
    """``forward(x: (batch, n0)) -> logits (batch, nk)``; ReLU between the linear layers."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.sizes = sizes
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def build_mlp(spec: str, seed: int) -> MLP:
    """Build the network of ``spec`` with PyTorch's default initialization, drawn from ``seed``.

    The global RNG is forked, so the caller's random state is untouched.
    """
    sizes = parse_mlp_spec(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(sizes)
