"""``adapter_config.json`` as peft reads and writes it: the fields that decide what update an adapter applies.

peft writes one config per adapter; lowrank reads those of every peft version from 0.2 to 0.21 and tells the
update's form (:attr:`AdapterConfig.variant`):

- ``"lora"``: ``dW = s B A`` with ``s = alpha / r`` (``alpha / sqrt(r)`` with use_rslora), r and alpha per module
  from rank_pattern / alpha_pattern. Block-diagonal LoRA (``use_bdlora``) is this too, with A or B stored as
  its diagonal blocks; inits that leave the base unchanged (gaussian, eva, orthogonal, mica) as well.
- ``"adalora"`` (peft_type ADALORA): ``dW = alpha / (init_r + 1e-5) * B diag(E) A``, pruned ranks cut from the file.
- ``"dora"`` (use_dora): ``W' = m / ||W0 + s B A||_row * (W0 + s B A)``, so ``dW = W' - W0`` needs the base.
- ``"pissa"`` / ``"olora"``: the base was replaced by ``W0 - s B0 A0`` where ``B0 A0`` is W0's top-r SVD part
  (PiSSA) or its first r QR columns (OLoRA), so ``dW = s (B A - B0 A0)``, recomputable from the base exactly.
  Adapters converted at save (peft's path_initial_model_for_weight_conversion) say init_lora_weights=true and are
  plain LoRA of rank 2r.

Refused by name: foreign files (a model's config.json, MLX-LM, AdapterHub), other peft types, merged-QKV LoRA
(enable_lora), and inits whose starting point cannot be recomputed (randomized PiSSA, CorDA, LoftQ, LoRA-GA).
Every error names the file. Every adapter_config.json lowrank writes goes through :func:`write_adapter_config`;
:func:`lora_settings` composes the one of a plain LoRA adapter lowrank trains or extracts.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from lowrank import lora
from lowrank.errors import LowrankError
from lowrank.jsonfile import read_json_object
from lowrank.outputs import write_text_atomic

CONFIG_FILE = "adapter_config.json"
UNRECOVERABLE_INIT = {"pissa_niter": "randomized PiSSA (its starting point B0 A0 came from a random sketch)",
                      "corda": "CorDA (its starting point came from activation covariances)",
                      "loftq": "LoftQ (the base was quantized and corrected)",
                      "lora_ga": "LoRA-GA (its starting point came from gradients on data)"}


@dataclass(frozen=True)
class BlockDiagonal:
    """peft's ``use_bdlora``: modules whose full name contains one of ``a_side`` (``b_side``) store lora_A (lora_B)
    as ``nblocks`` diagonal blocks stacked along dim 0; the dense factor is ``block_diag(*chunk(W, nblocks))``."""

    a_side: tuple[str, ...]
    b_side: tuple[str, ...]
    nblocks: int

    def side(self, module: str) -> str | None:
        if any(pattern in module for pattern in self.a_side):
            return "A"
        return "B" if any(pattern in module for pattern in self.b_side) else None


@dataclass(frozen=True)
class AdapterConfig:
    """The fields of peft's LoraConfig (or AdaLoraConfig) that decide what an adapter's update is."""

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | str
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    lora_dropout: float = 0.0
    modules_to_save: tuple[str, ...] = ()
    base_model_name_or_path: str | None = None
    task_type: str | None = None
    variant: str = "lora"
    block_diagonal: BlockDiagonal | None = None
    lora_bias: bool = False
    path: str = ""

    def to_lora_config(self, module_names: list[str] | None = None) -> lora.LoraConfig:
        """The matching :class:`lora.LoraConfig` (plain LoRA only). peft fills a null or empty ``target_modules``
        with the architecture's defaults at load time; here the modules the adapter file holds (``module_names``)
        stand in for them."""
        if self.variant != "lora" or self.block_diagonal is not None:
            raise LowrankError(f"{self.path}: a {self.variant} adapter{' (block-diagonal)' * bool(self.block_diagonal)}"
                               " cannot be loaded into lowrank's LoRA layers; only plain LoRA can")
        if isinstance(self.target_modules, str):
            targets = lora.Targets(regex=self.target_modules)
        elif self.target_modules:
            targets = lora.Targets(suffixes=self.target_modules)
        elif module_names:
            targets = lora.Targets(suffixes=tuple(module_names))
        else:
            raise LowrankError(f"{self.path}: the config names no target_modules and the adapter file holds no module")
        return lora.LoraConfig(r=self.r, alpha=self.lora_alpha, targets=targets, rank_pattern=self.rank_pattern,
                               alpha_pattern=self.alpha_pattern, use_rslora=self.use_rslora,
                               dropout=self.lora_dropout, trainable_modules=self.modules_to_save)

    def rank_for(self, module: str) -> int:
        return int(lora.pattern_value(self.rank_pattern, module, self.r))

    def local_base(self) -> str | None:
        """``base_model_name_or_path`` when it names a local folder, else None (a hub name, or no name)."""
        named = self.base_model_name_or_path
        return named if named and Path(named).expanduser().is_dir() else None

    def scaling_for(self, module: str, rank: int) -> float:
        """peft's scaling: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA); AdaLoRA ``alpha / (init_r + 1e-5)``
        (``alpha`` 0 means ``init_r``), whatever rank pruning left."""
        alpha = float(lora.pattern_value(self.alpha_pattern, module, self.lora_alpha))
        if self.variant == "adalora":
            return (alpha if alpha > 0 else self.r) / (self.r + 1e-5)
        return alpha / (math.sqrt(rank) if self.use_rslora else rank)


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_adapter_config(folder: str | Path) -> AdapterConfig:
    """Parse and validate ``adapter_config.json``; refuse what lowrank cannot turn into the applied update."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise LowrankError(f"{folder} is not a peft adapter folder (no {CONFIG_FILE})")
    return parse_adapter_config(read_json_object(path), path)


def raw_adapter_config(folder: str | Path) -> dict:
    """The JSON object of ``folder``'s ``adapter_config.json`` as stored (every field, unvalidated)."""
    return read_json_object(Path(folder) / CONFIG_FILE)


def lora_settings(*, task_type: str | None, base_model_name_or_path: str, r: int, lora_alpha: float,
                  target_modules: list[str] | str, rank_pattern: dict, alpha_pattern: dict, use_rslora: bool,
                  lora_dropout: float, fan_in_fan_out: bool, init_lora_weights: bool | str, bias: str,
                  modules_to_save: list[str] | None) -> dict:
    """The ``adapter_config.json`` of a plain peft LoRA adapter that lowrank writes (trained or extracted): the given
    fields, in this order, with ``peft_type`` LORA, no DoRA and ``inference_mode``."""
    return {"peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_model_name_or_path,
            "r": r, "lora_alpha": lora_alpha, "target_modules": target_modules, "rank_pattern": rank_pattern,
            "alpha_pattern": alpha_pattern, "use_rslora": use_rslora, "lora_dropout": lora_dropout,
            "fan_in_fan_out": fan_in_fan_out, "init_lora_weights": init_lora_weights, "bias": bias,
            "modules_to_save": modules_to_save, "use_dora": False, "inference_mode": True}


def write_adapter_config(folder: str | Path, settings: dict) -> None:
    """Write ``settings`` as ``folder``'s ``adapter_config.json``, atomically, indented as peft writes it."""
    write_text_atomic(Path(folder) / CONFIG_FILE, json.dumps(settings, indent=2) + "\n")


def parse_adapter_config(raw: dict, path: Path) -> AdapterConfig:
    """Validate the JSON object of an ``adapter_config.json`` (``path`` names it in messages: the file, or where
    an adapter held in memory would write it)."""
    _refuse_foreign(raw, path)
    peft_type = str(raw.get("peft_type", "LORA")).upper()
    try:
        config = _parse(raw, peft_type, path)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise LowrankError(f"{path}: malformed {peft_type} config ({type(error).__name__}: {error})") from None
    _check_values(config, path)
    return config


def _check_values(config: AdapterConfig, path: Path) -> None:
    """Ranks >= 1, finite alphas, patterns that compile as peft's ``(.*\\.)?(pattern)$`` regex, module names as
    strings."""
    for name, modules in (("target_modules", config.target_modules), ("modules_to_save", config.modules_to_save)):
        if not isinstance(modules, str) and not all(isinstance(m, str) for m in modules):
            raise LowrankError(f"{path}: {name} must be a list of module names, got {list(modules)}")
    alphas = [config.lora_alpha, *config.alpha_pattern.values()]
    if config.r < 1 or any(v < 1 for v in config.rank_pattern.values()):
        raise LowrankError(f"{path}: ranks must be >= 1, got r={config.r}, rank_pattern {config.rank_pattern}")
    if not all(math.isfinite(a) for a in alphas):
        raise LowrankError(f"{path}: lora_alpha and alpha_pattern must be finite numbers, got {alphas}")
    for pattern in [*config.rank_pattern, *config.alpha_pattern]:
        try:
            re.compile(rf"(.*\.)?({pattern})$")
        except re.error as error:
            raise LowrankError(f"{path}: pattern {pattern!r} is not a valid regular expression ({error})") from None
    if config.block_diagonal is not None and config.block_diagonal.nblocks < 1:
        raise LowrankError(f"{path}: use_bdlora nblocks must be >= 1, got {config.block_diagonal.nblocks}")


def _parse(raw: dict, peft_type: str, path: Path) -> AdapterConfig:
    targets = raw.get("target_modules")
    adalora = peft_type == "ADALORA"
    return AdapterConfig(
        r=int(raw["init_r"] if adalora else raw.get("r", 8)), lora_alpha=float(raw.get("lora_alpha", 8)),
        target_modules=targets if isinstance(targets, str) else tuple(targets or ()),
        rank_pattern={} if adalora else {k: int(v) for k, v in (raw.get("rank_pattern") or {}).items()},
        alpha_pattern={k: float(v) for k, v in (raw.get("alpha_pattern") or {}).items()},
        use_rslora=bool(raw.get("use_rslora", False)), fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)),
        lora_dropout=float(raw.get("lora_dropout") or 0.0), modules_to_save=_names(raw.get("modules_to_save")),
        base_model_name_or_path=raw.get("base_model_name_or_path"), task_type=raw.get("task_type"),
        variant="adalora" if adalora else _variant(raw, path), block_diagonal=_block_diagonal(raw),
        lora_bias=bool(raw.get("lora_bias", False)), path=str(path))


def _names(value) -> tuple[str, ...]:
    """A list of module names, or one name given as a string (not its characters)."""
    return (value,) if isinstance(value, str) else tuple(value or ())


def _refuse_foreign(raw: dict, path: Path) -> None:
    """Name what a file that is not a peft LoRA config is."""
    what = None
    if "lora_parameters" in raw or "fine_tune_type" in raw:
        what = "an MLX-LM adapter config (mlx_lm.lora), whose weights use MLX's own layout"
    elif isinstance(raw.get("config"), dict) and ("architecture" in raw["config"] or "model_class" in raw):
        what = "an AdapterHub (adapters library) config"
    elif "model_type" in raw and "peft_type" not in raw and "r" not in raw:
        what = f"a model's config.json (model_type {raw['model_type']!r}), not an adapter's"
    elif "peft_type" not in raw and "r" not in raw:
        what = "not a peft adapter config (no peft_type and no 'r' field)"
    if what:
        raise LowrankError(f"{path} is {what}; expected the adapter_config.json that peft's save_pretrained writes")
    peft_type = str(raw.get("peft_type", "LORA")).upper()
    if peft_type not in ("LORA", "ADALORA"):
        raise LowrankError(f"{path}: peft_type {peft_type} is not a LoRA adapter; lowrank reads LORA (incl. DoRA, "
                           "PiSSA, OLoRA) and ADALORA adapters")
    if raw.get("enable_lora"):
        raise LowrankError(f"{path}: enable_lora={raw['enable_lora']!r} (old peft's merged-QKV LoRA) splits one "
                           "lora_B over several output blocks; lowrank does not read it (current peft cannot load "
                           "it either)")


def _variant(raw: dict, path: Path) -> str:
    init = str(raw.get("init_lora_weights", True)).lower()
    for prefix, what in UNRECOVERABLE_INIT.items():
        if init.startswith(prefix):
            raise LowrankError(f"{path}: init_lora_weights={raw['init_lora_weights']!r} is {what}: the update "
                               "dW = s(BA - B0A0) cannot be recovered from the adapter and the base. Save it with "
                               "peft's path_initial_model_for_weight_conversion to get a plain LoRA adapter")
    if raw.get("use_dora"):
        if init in ("pissa", "olora"):
            raise LowrankError(f"{path}: DoRA on a {init} init is not read")
        return "dora"
    return init if init in ("pissa", "olora") else "lora"


def _block_diagonal(raw: dict) -> BlockDiagonal | None:
    settings = raw.get("use_bdlora")
    if not settings:
        return None
    if not isinstance(settings, dict):
        raise TypeError(f"use_bdlora must be an object, got {settings!r}")
    return BlockDiagonal(a_side=tuple(settings.get("target_modules_bd_a") or ()),
                         b_side=tuple(settings.get("target_modules_bd_b") or ()),
                         nblocks=int(settings.get("nblocks", 1)))
