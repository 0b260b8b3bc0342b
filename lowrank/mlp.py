"""Fully connected ReLU networks named by a spec string: ``mlp:784,200,200,10``.

``mlp:n0,n1,...,nk`` is ``Linear(n0, n1) -> ReLU -> ... -> Linear(n_{k-1}, nk)`` (no activation after the last
layer), the networks of Li et al. 2018's MNIST experiments. Parameter count
``D = sum_i (n_i + 1) n_{i+1}``; e.g. ``mlp:784,200,200,10`` has D = 199,210.

A saved network is a folder: ``config.json`` = ``{"model_type": "lowrank-mlp", "sizes": [n0, ..., nk]}`` and
``model.safetensors`` with ``layers.{i}.weight`` (n_{i+1}, n_i) and ``layers.{i}.bias`` (n_{i+1},).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lowrank.errors import LowrankError
from lowrank.jsonfile import read_json_object
from lowrank.outputs import write_text_atomic

PREFIX = "mlp:"
MODEL_TYPE = "lowrank-mlp"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


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


def is_mlp_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder whose config.json says ``"model_type": "lowrank-mlp"``.

    Raises:
        LowrankError: when config.json exists but is not a JSON object.
    """
    config = Path(path).expanduser() / CONFIG_FILE
    return config.is_file() and read_json_object(config).get("model_type") == MODEL_TYPE


def save_mlp(model: MLP, folder: str | Path) -> None:
    """Write ``model`` into the existing ``folder`` as config.json + model.safetensors."""
    folder = Path(folder)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {"model_type": MODEL_TYPE, "sizes": list(model.sizes)}
    write_text_atomic(folder / CONFIG_FILE, json.dumps(config) + "\n")


def load_mlp(folder: str | Path) -> MLP:
    """The network saved by :func:`save_mlp` in ``folder`` (safetensors only, never pickle).

    Raises:
        LowrankError: config.json malformed (not lowrank-mlp, bad sizes), weights missing, unreadable or of the
            wrong shapes.
    """
    folder = Path(folder).expanduser()
    config = read_json_object(folder / CONFIG_FILE)
    sizes = config.get("sizes")
    if config.get("model_type") != MODEL_TYPE:
        raise LowrankError(f"{folder / CONFIG_FILE}: model_type is {config.get('model_type')!r}, not {MODEL_TYPE!r}")
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)):
        raise LowrankError(f"{folder / CONFIG_FILE}: sizes must be a list of at least two positive integers, "
                           f"got {sizes!r}")
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as error:
        raise LowrankError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file: {error}") from None
    model = MLP(tuple(sizes))
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if found != expected:
        wrong = sorted(set(found.items()) ^ set(expected.items()))[:3]
        raise LowrankError(f"{folder / WEIGHTS_FILE} does not hold an mlp of sizes {sizes}: mismatched {wrong}")
    model.load_state_dict(tensors)
    return model
