"""Real-world ``adapter_config.json`` files turned into fixtures with real peft (a test helper, not a test module).

Each file under ``tests/data/adapter_configs`` (see SOURCES.md there) was committed to a public repository by someone
else. :func:`build_fixture` writes its bytes into a temporary folder, loads it with peft's own loader
(``PeftConfig.from_pretrained``, exactly as ``PeftModel.from_pretrained`` would), wraps a tiny random-init model of the
same architecture with ``get_peft_model``, gives every adapter tensor random values (B starts at zero; DoRA's
magnitude and AdaLoRA's E are perturbed too), saves the base model and the adapter, and then overwrites the saved
``adapter_config.json`` with the original bytes, so the reader under test sees the real file.

The reference is peft's own update per adapted module in float64: ``get_delta_weight`` for LoRA and AdaLoRA, merged
weight minus base weight (``merge_and_unload`` on a float64 copy) for DoRA, and its singular values from numpy.
When peft cannot load or apply a file (foreign files, AdaLoRA without ``total_step``, no target module present) the
fixture records peft's error and carries plausible LoRA weights, so that the file's config is the only thing wrong.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adapter_corpus_models import architecture_for, build_model, save_base

CORPUS = Path(__file__).parent / "data" / "adapter_configs"
ADAPTER = "default"


def corpus_files() -> list[Path]:
    """The corpus's config files in file-name order."""
    return sorted(CORPUS.glob("*.json"))


@dataclass(frozen=True)
class Fixture:
    """One corpus file built into an adapter folder and a base folder.

    ``reference`` maps each module peft adapted (its path in the model, no peft prefix) to the singular values of the
    update peft applies, descending, float64. ``peft_error`` is set when peft could not load the file
    (``config_loads`` False: lowrank must refuse it) or could not apply it to the tiny model; the adapter folder then
    holds the original file beside plain Llama LoRA weights, and ``reference`` describes those weights.
    ``peft_type`` is None for files that are not peft configs at all.
    """

    source: Path
    adapter: Path
    base: Path
    architecture: str
    peft_type: str | None
    options: str
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    full_modules: tuple[str, ...] = ()
    peft_error: str | None = None
    config_loads: bool = True

    @property
    def must_refuse(self) -> bool:
        """peft's own loader rejects the file (not a peft config, or invalid for peft): lowrank must refuse it."""
        return not self.config_loads

    @property
    def lora_like(self) -> bool:
        """True when peft built a LoRA-family adapter (LoRA, DoRA, AdaLoRA) from the file itself."""
        return self.peft_error is None and self.peft_type in ("LORA", "ADALORA")


def _options(raw: dict) -> str:
    """A short human summary of the options that make a config notable."""
    if "peft_type" not in raw:
        return "not a peft config (keys: " + ", ".join(sorted(raw)[:4]) + ")"
    parts = [str(raw["peft_type"])]
    if raw.get("peft_type") == "LORA" or raw.get("peft_type") == "ADALORA":
        parts.append(f"r={raw.get('r')} alpha={raw.get('lora_alpha')}")
        targets = raw.get("target_modules")
        parts.append("targets=" + (",".join(sorted(targets)) if isinstance(targets, list) else repr(targets)))
    for key in ("use_dora", "use_rslora", "fan_in_fan_out"):
        if raw.get(key):
            parts.append(key)
    if raw.get("fan_in_fan_out", False) is None:
        parts.append("fan_in_fan_out=null")
    for key in ("rank_pattern", "alpha_pattern", "layers_to_transform", "modules_to_save", "exclude_modules"):
        if raw.get(key):
            parts.append(f"{key}={raw[key]}")
    if isinstance(raw.get("init_lora_weights"), str):
        parts.append(f"init={raw['init_lora_weights']}")
    return "; ".join(parts)


def _randomize(wrapped, seed: int) -> None:
    """Random values for every adapter tensor; DoRA magnitudes are scaled around their start, trained copies of
    ``modules_to_save`` get a small perturbation (a trained head differs from the base)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if "lora_magnitude_vector" in name:
                param.mul_(1 + 0.2 * noise)
            elif "lora_" in name:
                param.copy_(noise / math.sqrt(max(param.shape[-1], 1)))
            elif "modules_to_save" in name:
                param.add_(0.01 * noise)


def _lora_layers(wrapped) -> dict:
    """Modules where peft injected the adapter, by their path in the wrapped model (no ``base_model.model.``)."""
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in wrapped.base_model.model.named_modules()
            if isinstance(module, LoraLayer) and (ADAPTER in module.lora_A or ADAPTER in module.lora_embedding_A)}


def _reference(wrapped) -> dict[str, np.ndarray]:
    """Singular values of the update peft applies per adapted module, computed in float64."""
    wrapped = wrapped.double()
    layers = _lora_layers(wrapped)
    dora = any(module.use_dora.get(ADAPTER, False) for module in layers.values())
    merged = copy.deepcopy(wrapped).merge_and_unload() if dora else None
    reference = {}
    with torch.no_grad():
        for name, module in layers.items():
            if merged is not None:
                delta = merged.get_submodule(name).weight - module.get_base_layer().weight
            else:
                delta = module.get_delta_weight(ADAPTER)
            matrix = delta.reshape(delta.shape[0], -1).numpy()
            reference[name] = np.linalg.svd(matrix, compute_uv=False)
    return reference


def _full_modules(wrapped) -> tuple[str, ...]:
    """Modules peft trains in full (``modules_to_save`` wrappers), by path."""
    from peft.utils.other import ModulesToSaveWrapper

    return tuple(sorted(name for name, module in wrapped.base_model.model.named_modules()
                        if isinstance(module, ModulesToSaveWrapper)))


def _fallback(folder: Path, raw_bytes: bytes) -> dict[str, np.ndarray]:
    """Fill ``folder`` with a Llama base and an adapter folder holding the original config beside plausible plain
    LoRA weights (q_proj, v_proj), for files peft cannot load or apply; returns those weights' reference spectra."""
    from peft import LoraConfig, get_peft_model

    model = build_model("llama", None)
    save_base(model, folder / "base")
    wrapped = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    _randomize(wrapped, 0)
    wrapped.save_pretrained(folder / "adapter")
    (folder / "adapter" / "adapter_config.json").write_bytes(raw_bytes)
    return _reference(wrapped)


def _quiet():
    """Silence peft's and transformers' warnings about the odd configs (they are the point of the corpus)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("peft").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def build_fixture(source: Path, folder: Path) -> Fixture:
    """Build ``source`` (a corpus file) under ``folder``: ``folder/adapter`` and ``folder/base``; see the module doc."""
    from peft import PeftConfig, get_peft_model

    _quiet()
    raw_bytes = source.read_bytes()
    raw = json.loads(raw_bytes)
    architecture = architecture_for(source.name, raw)
    summary = dict(source=source, adapter=folder / "adapter", architecture=architecture,
                   peft_type=raw.get("peft_type"), options=_options(raw))
    original = folder / "original"
    original.mkdir(parents=True)
    (original / "adapter_config.json").write_bytes(raw_bytes)
    summary["base"] = folder / "base"
    try:
        config = PeftConfig.from_pretrained(str(original))
    except (TypeError, ValueError, KeyError) as error:
        return Fixture(reference=_fallback(folder, raw_bytes), peft_error=_describe(error), config_loads=False,
                       **summary)
    config.inference_mode = False
    model = build_model(architecture, raw.get("task_type"))
    save_base(model, folder / "base")
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as error:
        return Fixture(reference=_fallback(folder, raw_bytes), peft_error=_describe(error), **summary)
    _randomize(wrapped, zlib.crc32(source.name.encode()))
    wrapped.save_pretrained(folder / "adapter")
    (folder / "adapter" / "adapter_config.json").write_bytes(raw_bytes)
    if raw.get("peft_type") not in ("LORA", "ADALORA"):
        return Fixture(**summary)
    return Fixture(reference=_reference(wrapped), full_modules=_full_modules(wrapped), **summary)


def _describe(error: Exception) -> str:
    """peft's error as one short line."""
    return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"


def max_relative_error(reported: list[float], reference: np.ndarray) -> float:
    """Largest difference between two spectra relative to the largest reference value; the shorter is padded with
    zeros (a rank-r update has zeros beyond r; r may also exceed the matrix's smaller side)."""
    length = max(len(reported), len(reference))
    a = np.zeros(length)
    b = np.zeros(length)
    a[:len(reported)] = reported
    b[:len(reference)] = reference
    scale = max(float(b.max(initial=0.0)), 1e-300)
    return float(np.abs(a - b).max(initial=0.0) / scale)


@dataclass(frozen=True)
class Outcome:
    """What lowrank did with one fixture: ``exact`` (every module's spectrum within 1e-6 of peft's, same module
    set), ``refused`` (exit 2, one ``Error:`` line naming the adapter), or ``wrong`` with what went wrong."""

    kind: str
    detail: str
    max_error: float | None = None


TOLERANCE = 1e-6


def run_lowrank(fixture: Fixture):
    """``lowrank analyze ADAPTER --base BASE --json - --dtype float64`` through click's CliRunner."""
    from click.testing import CliRunner

    from lowrank_cli.analyze_cmd import analyze
    from lowrank_cli.main import cli

    cli.add_command(analyze)
    args = ["analyze", str(fixture.adapter), "--base", str(fixture.base), "--json", "-", "--dtype", "float64"]
    return CliRunner().invoke(cli, args)


def judge(fixture: Fixture, result) -> Outcome:
    """Classify lowrank's answer on ``fixture`` against peft's reference (see :class:`Outcome`)."""
    if result.exit_code != 0:
        return _judge_refusal(fixture, result)
    if fixture.must_refuse:
        return Outcome("wrong", f"analyzed a file peft rejects ({fixture.peft_error})")
    if fixture.peft_type not in ("LORA", "ADALORA"):
        return Outcome("wrong", f"analyzed a {fixture.peft_type} adapter as a low-rank update")
    modules = {m["name"]: m for m in json.loads(result.stdout)["modules"] if m.get("kind") != "full"}
    if set(modules) != set(fixture.reference):
        missing = sorted(set(fixture.reference) - set(modules))
        extra = sorted(set(modules) - set(fixture.reference))
        return Outcome("wrong", f"module set differs: missing {missing[:3]} ({len(missing)}), extra {extra[:3]} "
                                f"({len(extra)})")
    errors = {name: max_relative_error(m["singular_values"], fixture.reference[name]) for name, m in modules.items()}
    worst = max(errors, key=errors.get)
    if errors[worst] > TOLERANCE:
        return Outcome("wrong", f"singular values off by {errors[worst]:.2e} (relative) at {worst}", errors[worst])
    return Outcome("exact", f"max rel. error {errors[worst]:.1e}", errors[worst])


def _judge_refusal(fixture: Fixture, result) -> Outcome:
    """A clean refusal: exit 2, nothing on stdout, exactly one stderr line, starting ``Error:``, naming the adapter."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.exit_code != 2 or len(lines) != 1 or not lines[0].startswith("Error:"):
        crash = f" ({type(result.exception).__name__})" if not isinstance(result.exception, SystemExit) else ""
        return Outcome("wrong", f"unclean failure: exit {result.exit_code}{crash}, stderr {lines[-3:]}")
    if str(fixture.adapter) not in lines[0]:
        return Outcome("wrong", f"refusal does not name the adapter: {lines[0]}")
    if result.stdout:
        return Outcome("wrong", f"refused but wrote to stdout: {lines[0]}")
    return Outcome("refused", lines[0])
