"""Many runs of one MLP trained together: one module, a leading run axis, stacked matrix products.

A run-batched module has an attribute ``runs = R`` and maps ``x: (R, B, n0)`` to logits ``(R, B, nk)``; run ``r``
sees only its own rows ``x[r]`` and its own parameters, so the loss ``sum_r mean_b CE_rb`` has, for each run, the
gradient of that run alone, and Adam (elementwise) on the stacked tensors is ``R`` independent Adams.

- :class:`BatchedMLP`: direct training, ``h_r = x_r W_r^T + b_r`` per layer (``torch.baddbmm``), ReLU between.
- :class:`BatchedSubspaceMLP`: the runs of :class:`~lowrank.intrinsic.subspace.SubspaceModel` (same ``theta0``,
  same ``P`` per run: it is built from them), ``theta_r = theta0_r + P_r theta_d,r`` (DID) or with SAID's scales.
  ``theta_d`` is one ``(R, d_max)`` tensor; entries ``j >= d_r`` are multiplied by a 0/1 mask, so their gradient
  and their Adam update are exactly 0 and run ``r`` trains ``d_r`` numbers.
- :class:`StackedFastfood`: ``R`` Fastfood transforms ``[H G_r Pi_r H B_r x_r]_{:D} s_r`` (one block each) as
  :func:`~lowrank.intrinsic.fastfood.fastfood_rows` of an ``(R, w)`` array (``w = 2^ceil(log2 max_r d_r)``);
  other projections are applied run by run and stacked.

Only MLPs (``lowrank.mlp.MLP``) with the global layout and no directly trained tensors are batched; anything else
(Hugging Face models, ``per_tensor``, ``--direct``) trains one run at a time through the same loop.
"""

from __future__ import annotations

import torch
from torch import nn

from lowrank.errors import LowrankError
from lowrank.intrinsic.fastfood import fastfood_rows, tiled_index
from lowrank.intrinsic.projections import FastfoodProjection
from lowrank.spectra import next_power_of_two
from lowrank.intrinsic.subspace import SubspaceModel
from lowrank.mlp import MLP


def batchable(model: nn.Module, wrapped: SubspaceModel | None = None) -> bool:
    """True when runs of ``model`` (optionally as this subspace model) can be stacked: an MLP, global ``P``,
    nothing trained directly."""
    if not isinstance(model, MLP):
        return False
    return wrapped is None or (wrapped.config.layout == "global" and not wrapped.direct_names)


def _mlp_forward(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """``x: (R, B, n0)``, ``weights[i]: (R, n_{i+1}, n_i)``, ``biases[i]: (R, n_{i+1})`` -> ``(R, B, nk)``."""
    for index, (weight, bias) in enumerate(zip(weights, biases)):
        x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        if index < len(weights) - 1:
            x = torch.relu(x)
    return x


def _check_same_shape(models: list[MLP]) -> None:
    if not models or any(not isinstance(m, MLP) or m.sizes != models[0].sizes for m in models):
        raise LowrankError("batched runs need at least one MLP, all of the same sizes")


class BatchedMLP(nn.Module):
    """``R`` MLPs of the same sizes trained directly; parameters are stacked copies of theirs."""

    def __init__(self, models: list[MLP]) -> None:
        super().__init__()
        _check_same_shape(models)
        self.runs, self.sizes = len(models), models[0].sizes
        layers = len(self.sizes) - 1
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m.layers[i].weight.detach() for m in models])) for i in range(layers))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m.layers[i].bias.detach() for m in models])) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mlp_forward(x, list(self.weights), list(self.biases))


class StackedFastfood(nn.Module):
    """``R`` one-block Fastfood projections of the same ``D``: ``(R, L) -> (R, D)``, the same numbers as each
    :class:`~lowrank.intrinsic.projections.FastfoodProjection` applied to its own row."""

    def __init__(self, projections: list[FastfoodProjection]) -> None:
        super().__init__()
        self.D, self.L = projections[0].D, projections[0].L
        if any(p.D != self.D or p.n_blocks != 1 for p in projections):
            raise LowrankError("stacked fastfood needs one block per run and the same D")
        self.width = next_power_of_two(max(p.d for p in projections))
        offsets = [r * self.L for r in range(len(projections))]
        self.register_buffer("signs", torch.cat([p.signs for p in projections]), persistent=False)
        self.register_buffer("gauss", torch.cat([p.gauss for p in projections]), persistent=False)
        perm = torch.cat([p.perm + o for p, o in zip(projections, offsets)])
        self.register_buffer("gather", tiled_index(perm, self.L, self.width), persistent=False)
        self.register_buffer("inverse", torch.cat([p.inverse + o for p, o in zip(projections, offsets)]),
                             persistent=False)

    def forward(self, padded: torch.Tensor) -> torch.Tensor:
        """``padded: (R, width)``, row ``r`` holding ``theta_d,r`` then zeros -> ``(R, D)``."""
        return fastfood_rows(padded, self.signs, self.gather, self.inverse, self.gauss, self.D)


class _PerRun(nn.Module):
    """Any projections, applied run by run to their first ``d_r`` entries and stacked: ``(R, d_max) -> (R, D)``."""

    def __init__(self, projections: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(projections)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.stack([part(theta[r, : part.d]) for r, part in enumerate(self.parts)])


class BatchedSubspaceMLP(nn.Module):
    """The runs ``wrapped[r]`` (subspace models of MLPs of the same sizes) as one module with a run axis."""

    def __init__(self, wrapped: list[SubspaceModel]) -> None:
        super().__init__()
        models = [w.model for w in wrapped]
        _check_same_shape(models)
        if not all(batchable(w.model, w) for w in wrapped) or len({w.D for w in wrapped}) != 1:
            raise LowrankError("batched subspace runs need MLPs with the global layout and no direct tensors")
        self.runs, self.D = len(wrapped), wrapped[0].D
        self.shapes = wrapped[0].projected_shapes
        widths = [w.theta_d.numel() for w in wrapped]
        self.width = max(widths)
        mask = torch.zeros(self.runs, self.width)
        for r, width in enumerate(widths):
            mask[r, :width] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("theta0", torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()])
                                                    for m in models]), persistent=False)
        projections = [w.projection for w in wrapped]
        if all(isinstance(p, FastfoodProjection) and p.n_blocks == 1 for p in projections):
            self.projection = StackedFastfood(projections)
        else:
            self.projection = _PerRun(projections)
        self.theta_d = nn.Parameter(torch.zeros(self.runs, self.width))
        said = [w.said_scales is not None for w in wrapped]
        if any(said) and not all(said):
            raise LowrankError("batched subspace runs must be all SAID or all DID")
        self.said_scales = nn.Parameter(torch.ones(self.runs, len(self.shapes))) if all(said) else None

    def delta(self) -> torch.Tensor:
        """``(R, D)``: ``P_r theta_d,r`` (times SAID's per-tensor scale) for every run."""
        theta = self.theta_d * self.mask
        if isinstance(self.projection, StackedFastfood):
            theta = nn.functional.pad(theta, (0, self.projection.width - self.width))
        delta = self.projection(theta)
        if self.said_scales is None:
            return delta
        sizes = [torch.Size(shape).numel() for shape in self.shapes]
        scale = torch.repeat_interleave(self.said_scales, torch.tensor(sizes, device=delta.device), dim=1)
        return delta * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.theta0 + self.delta()
        tensors, start = [], 0
        for shape in self.shapes:
            size = torch.Size(shape).numel()
            tensors.append(flat[:, start : start + size].reshape(self.runs, *shape))
            start += size
        return _mlp_forward(x, tensors[0::2], tensors[1::2])
