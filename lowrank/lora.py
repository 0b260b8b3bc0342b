"""LoRA as Hu et al. (2021) define it: h = W0 x + s * B A x, W0 frozen, B starting at zero.

A :class:`LoraLayer` wraps one ``nn.Linear``, transformers ``Conv1D`` (GPT-2; weight stored (in, out)) or
``nn.Embedding``. :func:`inject` chooses the modules, :func:`merge` / :func:`unmerge` fold s*B@A into W0 and back,
and :func:`mark_trainable` freezes everything but the adapters and the modules a user names (e.g. a new head).
Names and semantics follow peft, so lowrank's layers map one-to-one onto peft's saved adapters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from lowrank.errors import LowrankError, check_regex
from lowrank.lora_function import lora_linear

HEAD_NAMES = ("lm_head", "classifier", "score", "qa_outputs")
CONFIG_ATTRIBUTE = "lowrank_lora_config"  # where :func:`inject` leaves its LoraConfig on the model


@dataclass(frozen=True)
class Targets:
    """Which modules get a LoRA: exactly one of name suffixes (peft's list semantics: the full name equals the
    suffix or ends with ``"." + suffix``), a regex matched against the full name (``re.fullmatch``), or every
    linear layer except the output head."""

    suffixes: tuple[str, ...] = ()
    regex: str = ""
    all_linear: bool = False

    def __post_init__(self) -> None:
        chosen = [bool(self.suffixes), bool(self.regex), self.all_linear]
        if sum(chosen) != 1:
            raise LowrankError("targets: give exactly one of module suffixes, a regex, or all-linear")
        if self.regex:
            check_regex("target regex", self.regex)

    @classmethod
    def parse(cls, text: str) -> "Targets":
        """``"all-linear"``, ``"re:<regex>"`` or a comma-separated list of suffixes such as ``"query,value"``."""
        if text == "all-linear":
            return cls(all_linear=True)
        if text.startswith("re:"):
            return cls(regex=text[3:])
        return cls(suffixes=tuple(part.strip() for part in text.split(",") if part.strip()))


@dataclass(frozen=True)
class LoraConfig:
    """Args:
        r: default rank (>= 1).
        alpha: default lora_alpha; the update is scaled by alpha / r, or alpha / sqrt(r) with ``use_rslora``.
        targets: which modules to adapt.
        rank_pattern / alpha_pattern: peft semantics, ``{pattern: value}``; the first pattern with
            ``re.match(rf"(.*\\.)?({pattern})$", module_name)`` overrides r / alpha for that module.
        use_rslora: rank-stabilized scaling alpha / sqrt(r) (Kalajdzievski 2023).
        dropout: dropout on the LoRA branch's input (linear layers only, as in peft).
        init: ``"kaiming"`` (peft's default: kaiming-uniform A) or ``"gaussian"`` (the paper: A ~ N(0, 1/r));
            B starts at zero either way (embeddings: A zero, B Gaussian, as in peft).
        trainable_modules: modules trained in full beside the adapters (peft's modules_to_save), e.g. a new head.
    """

    r: int
    alpha: float
    targets: Targets
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    use_rslora: bool = False
    dropout: float = 0.0
    init: str = "kaiming"
    trainable_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.r < 1 or any(v < 1 for v in self.rank_pattern.values()):
            raise LowrankError(f"rank must be >= 1, got {self.r} (rank_pattern {self.rank_pattern})")
        if self.alpha <= 0 or any(v <= 0 for v in self.alpha_pattern.values()):
            raise LowrankError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise LowrankError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in ("kaiming", "gaussian"):
            raise LowrankError(f"init must be 'kaiming' or 'gaussian', got {self.init!r}")

    def rank_for(self, name: str) -> int:
        return int(pattern_value(self.rank_pattern, name, self.r))

    def alpha_for(self, name: str) -> float:
        return float(pattern_value(self.alpha_pattern, name, self.alpha))

    def scaling_for(self, name: str) -> float:
        r = self.rank_for(name)
        return self.alpha_for(name) / (math.sqrt(r) if self.use_rslora else r)


def pattern_value(patterns: dict, name: str, default: float) -> float:
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", name):
            return value
    return default


class LoraLayer(nn.Module):
    """h = base(x) + s * B A dropout(x), with s = alpha / r (or alpha / sqrt(r)).

    Linear and Conv1D layers run through :func:`lowrank.lora_function.lora_linear`: one autograd Function, the
    base and low-rank products accumulated into one output, saving only x and x A^T.
    Precision policy: the factors are float32 when the base weight is bf16 or fp16 (and the base dtype otherwise);
    the products run in the compute dtype (autocast's, else x's), so a bf16 model trains float32 master factors
    with bf16 arithmetic (measured against bf16 factors and peft's float32 arithmetic: reports/training_speed.md).

    Args:
        base_layer: ``nn.Linear`` (weight (out, in)), ``Conv1D`` (weight (in, out)) or ``nn.Embedding``
            (weight (num_embeddings, dim)); frozen by :func:`mark_trainable`.
        r, scaling, dropout, init: see :class:`LoraConfig`.
    Shapes: ``lora_A`` (r, in), ``lora_B`` (out, r); for an embedding in = num_embeddings and out = dim, and
    dW = s (B A)^T has the weight's shape (num_embeddings, dim).
    """

    def __init__(self, base_layer: nn.Module, r: int, scaling: float, dropout: float = 0.0,
                 init: str = "kaiming", generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.kind = layer_kind(base_layer)
        weight = base_layer.weight
        if self.kind == "linear":
            in_features, out_features = weight.shape[1], weight.shape[0]
        else:  # conv1d (in, out) and embedding (num_embeddings, dim) store the input side first
            in_features, out_features = weight.shape[0], weight.shape[1]
        self.r, self.scaling, self.merged = r, scaling, False
        dtype = torch.float32 if weight.dtype in (torch.bfloat16, torch.float16) else weight.dtype
        self.lora_A = nn.Parameter(torch.zeros(r, in_features, dtype=dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, dtype=dtype, device=weight.device))
        self.dropout_p = dropout if self.kind != "embedding" else 0.0
        self._initialize(init, generator)

    def _initialize(self, init: str, generator: torch.Generator | None) -> None:
        """Draw on the CPU (where ``generator`` lives) in float32 and copy: the same factors on every device."""
        with torch.no_grad():
            if self.kind == "embedding":
                self.lora_B.copy_(torch.empty(self.lora_B.shape).normal_(generator=generator))
            elif init == "gaussian":
                self.lora_A.copy_(torch.empty(self.lora_A.shape).normal_(0.0, 1.0 / self.r, generator=generator))
            else:  # kaiming_uniform_(a=sqrt(5)) as in nn.Linear and peft: bound = 1 / sqrt(fan_in)
                bound = 1.0 / math.sqrt(self.lora_A.shape[1])
                self.lora_A.copy_(torch.empty(self.lora_A.shape).uniform_(-bound, bound, generator=generator))

    def delta_weight(self) -> torch.Tensor:
        """s * B A in the layout of ``base_layer.weight``."""
        delta = self.scaling * (self.lora_B @ self.lora_A)
        return delta if self.kind == "linear" else delta.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        if self.kind == "embedding":
            out = self.base_layer(x)
            after_a = F.embedding(x, self.lora_A.T, padding_idx=self.base_layer.padding_idx)
            return out + self.scaling * (after_a @ self.lora_B.T)
        weight = self.base_layer.weight if self.kind == "linear" else self.base_layer.weight.T
        return lora_linear(x, weight, self.base_layer.bias, self.lora_A, self.lora_B, self.scaling,
                           self.dropout_p, self.training)


def _conv1d() -> type:
    """transformers' Conv1D, imported on first use (importing transformers costs seconds)."""
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def layer_kind(module: nn.Module) -> str:
    """'linear', 'conv1d' or 'embedding'; raises for anything LoRA cannot wrap."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _conv1d()):
        return "conv1d"
    if isinstance(module, nn.Embedding):
        return "embedding"
    raise LowrankError(f"LoRA wraps Linear, Conv1D or Embedding layers, not {type(module).__name__}")


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, _conv1d()))


def head_names(model: nn.Module) -> set[str]:
    """Full names of the output head(s): the output embeddings and modules named like a task head."""
    names = {name for name, _ in model.named_modules() if name.split(".")[-1] in HEAD_NAMES}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names |= {name for name, module in model.named_modules() if output is not None and module is output}
    return names


def select_targets(model: nn.Module, targets: Targets, exclude: tuple[str, ...] = ()) -> list[str]:
    """Full names of the modules that ``targets`` selects, in model order.

    Raises LowrankError when nothing matches (listing the candidate linear-layer suffixes) or when a match is a
    module LoRA cannot wrap.
    """
    excluded = head_names(model) if targets.all_linear else set()
    excluded |= {name for name, _ in model.named_modules() if is_under(name, exclude)}
    chosen = []
    for name, module in model.named_modules():
        if not name or name in excluded or isinstance(module, LoraLayer) or is_under(name, ("base_layer",)):
            continue
        if targets.all_linear:
            hit = _is_linear(module)
        elif targets.regex:
            hit = re.fullmatch(targets.regex, name) is not None
        else:
            hit = any(name == s or name.endswith("." + s) for s in targets.suffixes)
        if hit:
            layer_kind(module)
            chosen.append(name)
    if not chosen:
        candidates = sorted({n.split(".")[-1] for n, m in model.named_modules() if _is_linear(m)})
        raise LowrankError(f"targets {_describe(targets)} match no module; linear layers here: {', '.join(candidates)}")
    return chosen


def is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    """True when a dotted component run of ``name`` equals one of ``prefixes`` (e.g. classifier in bert.classifier)."""
    return any(re.search(rf"(^|\.){re.escape(p)}($|\.)", name) for p in prefixes)


def _describe(targets: Targets) -> str:
    return "all-linear" if targets.all_linear else (f"re:{targets.regex}" if targets.regex else ",".join(targets.suffixes))


def inject(model: nn.Module, config: LoraConfig, generator: torch.Generator | None = None) -> list[str]:
    """Replace each selected module by a :class:`LoraLayer` in place; return the adapted module names. The model
    keeps ``config`` as ``model.lowrank_lora_config`` (:data:`CONFIG_ATTRIBUTE`), so that its adapter can be saved
    or analyzed in memory later with its own alpha, rsLoRA flag and trained modules."""
    names = select_targets(model, config.targets, exclude=config.trainable_modules)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = LoraLayer(getattr(parent, child), config.rank_for(name), config.scaling_for(name),
                          config.dropout, config.init, generator)
        setattr(parent, child, layer)
    setattr(model, CONFIG_ATTRIBUTE, config)
    return names


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """Adapted module name -> its LoraLayer."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def mark_trainable(model: nn.Module, trainable_modules: tuple[str, ...] = ()) -> int:
    """Freeze all parameters except LoRA factors and those under ``trainable_modules``; return the trainable count.

    Raises LowrankError if a named trainable module does not exist.
    """
    names = [name for name, _ in model.named_modules()]
    for wanted in trainable_modules:
        if not any(is_under(n, (wanted,)) for n in names):
            raise LowrankError(f"trainable module {wanted!r} not found in the model")
    count = 0
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        param.requires_grad_(leaf in ("lora_A", "lora_B") or is_under(name.rpartition(".")[0], trainable_modules))
        count += param.numel() if param.requires_grad else 0
    return count


@torch.no_grad()
def merge(model: nn.Module) -> None:
    """W0 <- W0 + s B A for every unmerged LoRA layer (the forward is unchanged up to float rounding)."""
    for layer in lora_layers(model).values():
        if not layer.merged:
            layer.base_layer.weight += layer.delta_weight().to(layer.base_layer.weight.dtype)
            layer.merged = True


@torch.no_grad()
def unmerge(model: nn.Module) -> None:
    """W0 <- W0 - s B A for every merged LoRA layer."""
    for layer in lora_layers(model).values():
        if layer.merged:
            layer.base_layer.weight -= layer.delta_weight().to(layer.base_layer.weight.dtype)
            layer.merged = False


def unwrap(model: nn.Module) -> None:
    """Merge every LoRA layer and put the plain base modules back, leaving an ordinary model."""
    merge(model)
    for name, layer in lora_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base_layer)
    if hasattr(model, CONFIG_ATTRIBUTE):
        delattr(model, CONFIG_ATTRIBUTE)
