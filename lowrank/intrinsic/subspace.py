"""Train any ``nn.Module`` in a random subspace: ``theta = theta0 + P theta_d`` (DID) or, with SAID,
``theta_i = theta0_i + lambda_i [P theta_{d-m}]_i`` (one trained scale per parameter tensor, Aghajanyan et al. 2020).

:class:`SubspaceModel` is a plain ``nn.Module`` whose only parameters are ``theta_d`` (zeros at the start),
SAID's ``lambda`` (ones) and, optionally, parameters trained directly (e.g. a freshly initialized classifier head,
by name pattern). The wrapped model is not a submodule: its tensors are ``theta0``, used in place (no copy), frozen,
and absent from ``parameters()`` and ``state_dict()``; ``.to()``, ``.train()`` and ``.eval()`` still reach it.
The forward runs the wrapped model through ``torch.func.functional_call`` with the reparametrized tensors, so any
model works, Hugging Face ones included (tied weights stay tied).

With SAID, ``d`` counts every trained number of the subspace: ``theta_{d-m}`` has ``d - m`` entries and
``lambda`` has ``m``, the number of projected tensors (so ``d > m`` is required).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from lowrank.errors import LowrankError
from lowrank.intrinsic.projections import PROJECTIONS, make_projection

LAYOUTS = ("global", "per_tensor")


@dataclass(frozen=True)
class SubspaceConfig:
    """How to reparametrize a model.

    Args:
        d: subspace dimension (with ``said``, including the ``m`` per-tensor scales).
        projection: ``dense``, ``sparse`` or ``fastfood``.
        seed: seeds ``P`` (the same seed gives the same ``P`` on every device).
        said: add one trained scale per projected tensor (SAID); otherwise DID.
        layout: ``global``: one ``P`` over all ``D`` projected numbers, columns normalized over the whole network
            (Li et al.); ``per_tensor``: one ``P_i`` per tensor, scaled by ``sqrt(D_i / D)`` so columns still have
            unit norm overall (Aghajanyan et al.'s implementation).
        direct: glob patterns (``fnmatch``) of parameter names trained directly instead of projected.
        cache: keep a dense ``P`` in memory instead of regenerating it each step.
    """

    d: int
    projection: str = "fastfood"
    seed: int = 0
    said: bool = False
    layout: str = "global"
    direct: tuple[str, ...] = ()
    cache: bool = False

    def __post_init__(self) -> None:
        if self.d < 1:
            raise LowrankError(f"subspace dimension d must be >= 1, got {self.d}")
        if self.projection not in PROJECTIONS:
            raise LowrankError(f"unknown projection {self.projection!r}; expected one of {', '.join(PROJECTIONS)}")
        if self.layout not in LAYOUTS:
            raise LowrankError(f"unknown layout {self.layout!r}; expected one of {', '.join(LAYOUTS)}")


class PerTensorProjection(nn.Module):
    """``P theta_d = concat_i sqrt(D_i / D) P_i theta_d`` with an independent ``P_i`` (D_i x d) per tensor."""

    def __init__(self, kind: str, sizes: tuple[int, ...], d: int, seed: int, cache: bool) -> None:
        super().__init__()
        total = sum(sizes)
        seeds = torch.randint(0, 2**62, (len(sizes),), generator=torch.Generator().manual_seed(seed)).tolist()
        self.parts = nn.ModuleList(make_projection(kind, size, d, s, cache=cache) for size, s in zip(sizes, seeds))
        self.weights = tuple(math.sqrt(size / total) for size in sizes)
        self.D, self.d = total, d

    def forward(self, theta_d: torch.Tensor) -> torch.Tensor:
        return torch.cat([w * part(theta_d) for w, part in zip(self.weights, self.parts)])


def select_direct(names: list[str], patterns: tuple[str, ...]) -> set[str]:
    """Names matching any pattern; every pattern must match something."""
    chosen = set()
    for pattern in patterns:
        hits = {name for name in names if fnmatch.fnmatchcase(name, pattern)}
        if not hits:
            raise LowrankError(f"--direct pattern {pattern!r} matches no parameter (names look like {names[:4]})")
        chosen |= hits
    return chosen


def count_projected(model: nn.Module, direct: tuple[str, ...]) -> tuple[int, int]:
    """``(D, m)``: numbers and tensors of ``model`` that a subspace with these ``direct`` patterns projects."""
    named = list(model.named_parameters())
    chosen = select_direct([name for name, _ in named], direct)
    projected = [p for name, p in named if name not in chosen]
    return sum(p.numel() for p in projected), len(projected)


class SubspaceModel(nn.Module):
    """``model`` reparametrized in a random ``d``-dimensional subspace.

    ``forward(*args, **kwargs)`` has the wrapped model's signature and output.

    Attributes:
        projected_names / projected_shapes: the tensors moved by ``P`` (``D`` numbers in all), in order.
        direct_names: tensors trained directly (copies, held as this module's parameters).
        D: number of projected parameters; ``d``: trained subspace numbers (``theta_d`` + ``lambda``).

    Raises:
        LowrankError: if ``d > D``, SAID with ``d <= m``, or a ``direct`` pattern matches nothing.
    """

    def __init__(self, model: nn.Module, config: SubspaceConfig) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)
        model.requires_grad_(False)
        named = list(model.named_parameters())
        direct = select_direct([name for name, _ in named], config.direct)
        projected = [(name, p) for name, p in named if name not in direct]
        self.config = config
        self.projected_names = tuple(name for name, _ in projected)
        self.projected_shapes = tuple(tuple(p.shape) for _, p in projected)
        self.D = sum(p.numel() for _, p in projected)
        self.d = config.d
        if self.D == 0:
            raise LowrankError("no parameter left to project (every parameter matched --direct)")
        if config.d > self.D:
            raise LowrankError(f"subspace dimension d={config.d} is larger than the number of parameters D={self.D}")
        m = len(projected) if config.said else 0
        if config.d <= m:
            raise LowrankError(f"SAID needs d > {m} (one scale per projected tensor), got d={config.d}")
        device = named[0][1].device
        self.projection = self._build_projection(config, config.d - m).to(device)
        self.theta_d = nn.Parameter(torch.zeros(config.d - m, device=device))
        self.said_scales = nn.Parameter(torch.ones(m, device=device)) if config.said else None
        self.direct_names = tuple(name for name, _ in named if name in direct)
        self.direct_params = nn.ParameterList(
            [nn.Parameter(p.detach().clone()) for name, p in named if name in direct]
        )

    def _build_projection(self, config: SubspaceConfig, width: int) -> nn.Module:
        sizes = tuple(math.prod(shape) for shape in self.projected_shapes)
        if config.layout == "per_tensor":
            return PerTensorProjection(config.projection, sizes, width, config.seed, config.cache)
        return make_projection(config.projection, self.D, width, config.seed, cache=config.cache)

    @property
    def trained_count(self) -> int:
        """Numbers trained: ``d`` plus the directly trained tensors' sizes."""
        return self.d + sum(p.numel() for p in self.direct_params)

    def _apply(self, fn, recurse=True):
        self.model._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> "SubspaceModel":
        super().train(mode)
        self.model.train(mode)
        return self

    def parameters_dict(self) -> dict[str, torch.Tensor]:
        """The wrapped model's reparametrized tensors ``theta0 + P theta_d`` (plus the direct ones), by name."""
        with torch.autocast(device_type=self.theta_d.device.type, enabled=False):  # P in float32, never bf16
            delta = self.projection(self.theta_d)
        own = dict(self.model.named_parameters())
        params: dict[str, torch.Tensor] = {}
        start = 0
        for index, (name, shape) in enumerate(zip(self.projected_names, self.projected_shapes)):
            base = own[name]
            piece = delta[start : start + base.numel()].view(shape)
            start += base.numel()
            if self.said_scales is not None:
                piece = piece * self.said_scales[index]
            params[name] = base + piece.to(base.dtype)
        params.update(zip(self.direct_names, self.direct_params))
        return params

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.parameters_dict(), args, kwargs, tie_weights=True, strict=False)
