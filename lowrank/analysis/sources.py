"""Where updates come from, one module at a time: an adapter (``dW = s B A`` as factors, factored SVD, exact,
``O((m + n) r^2)``; DoRA and PiSSA/OLoRA built with the base) or a full model against the base (``dW = W1 - W0``,
its spectrum from :mod:`lowrank.analysis.decompose`). Each source lists its modules from file headers and yields
:class:`Update` records lazily, so memory stays bounded by one module (and the next one being read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from lowrank import spectra
from lowrank.adapters import Adapter, AdapterModule, detect, variants
from lowrank.adapters.peft_folder import NEEDS_BASE
from lowrank.cpu import single_thread
from lowrank.weights import Checkpoint, find_name, match_modules, module_kind, open_checkpoint
from lowrank.analysis.config import AnalyzeConfig
from lowrank.analysis.prefetch import prefetched
from lowrank.gram import LeftBasis
from lowrank.analysis.results import DoraParts
from lowrank.analysis.decompose import (BaseVectors, Plan, base_top_values, base_vectors, delta_spectrum,
                                        delta_svd, top_vectors)
from lowrank.sketch import Sketch
from lowrank.errors import LowrankError


@dataclass(frozen=True)
class Update:
    """One module's update, ready to measure: its SVD and, with base metrics, ``W0`` and the singular vectors of W0
    and ``W1 = W0 + dW`` that amplification and intruders need."""

    name: str
    kind: str
    layer_kind: str
    rank: int | None
    scale: float | None
    svd: spectra.SVD
    W0: torch.Tensor | None
    base: BaseVectors | None
    variant: str | None = None
    dora: DoraParts | None = None
    sketch: Sketch | None = None  # --fast: the sketch behind ``svd`` (energy-rank intervals)


class LoraSource:
    """An opened adapter (peft folder, kohya / diffusers file, or a live model's adapter held in memory,
    :mod:`lowrank.adapters.live`): module names and ranks from the file's header, each module's true update built
    lazily (:mod:`lowrank.adapters.variants` for DoRA, PiSSA and OLoRA)."""

    kind = "lora"

    def __init__(self, adapter: Adapter, base: Checkpoint | None):
        self.adapter = adapter
        self.path = adapter.path
        self.shapes = {name: module.shape for name, module in self.adapter.modules.items()}
        self.ranks = {name: module.rank for name, module in self.adapter.modules.items()}
        self.names = list(self.shapes)
        self.base = base
        if base is None and adapter.variant in NEEDS_BASE:
            raise LowrankError(f"{self.path}: a {NEEDS_BASE[adapter.variant]} adapter's update depends on the base "
                               "weights W0; pass --base MODEL")
        self.base_names = _base_names(self, base) if base is not None else {}
        self.not_in_base: tuple[str, ...] = ()
        self.only_in_base: tuple[str, ...] = ()
        self.unchanged: list[str] = []

    def updates(self, wanted: set[str], plan: Plan) -> Iterator[Update]:
        for module in self.adapter.modules.values():
            if module.name in wanted:
                try:
                    yield self._update(module, plan)
                except LowrankError as error:
                    message = str(error)
                    raise LowrankError(message if str(self.path) in message else
                                       f"{self.path}: module {module.name}: {message}") from None

    def _update(self, module: AdapterModule, plan: Plan) -> Update:
        variant = self.adapter.variant
        B, A = (f.to(plan.device) for f in self.adapter.factors(module))  # exact for fp32/bf16/fp16 factors
        scale = self.adapter.scale(module)
        with_base = plan.with_base and self.base is not None
        w0 = self.base.weight(self.base_names[module.name], plan.dtype).to(plan.device) \
            if self.base is not None and (with_base or variant in NEEDS_BASE) else None
        parts = delta = None
        if variant == "dora":
            svd, parts, delta = _dora(self.adapter, module, w0, B, A, scale, plan)
        else:
            with single_thread():
                if variant in ("pissa", "olora"):
                    B, A = variants.started_from(B, A, *variants.principal_part(w0, module.rank, scale, variant))
                svd = spectra.lora_svd(B, A, scale)  # float64 QR, r x r SVD
        base = None
        if with_base:  # dW formed once, in the compute dtype
            w1 = w0 + (delta if delta is not None else (svd.U * svd.S).to(plan.dtype) @ svd.Vh.to(plan.dtype))
            basis, u1 = base_vectors(w0, plan), top_vectors(w1, plan)
            base = BaseVectors(basis, u1)
        return Update(module.name, "lora", module.layer_kind, module.rank, scale, svd,
                      w0 if with_base else None, base, variant, parts)


DORA_VECTORS = 64  # leading singular vectors kept of a DoRA update (for amplification and --against)


def _dora(adapter: Adapter, module: AdapterModule, w0: torch.Tensor, B: torch.Tensor, A: torch.Tensor, scale: float,
          plan: Plan) -> tuple[spectra.SVD, DoraParts, torch.Tensor]:
    """The dense SVD of DoRA's ``dW``, its parts (the directional term's spectrum, the magnitude change), and dW."""
    update = variants.dora_update(w0, B, A, scale, adapter.magnitude(module).to(w0.device),
                                  embedding=module.layer_kind == "embedding")
    directional = spectra.lora_svd(B, A, scale).S
    parts = DoraParts(directional_singular_values=tuple(float(v) for v in directional),
                      magnitude_change=update.magnitude_change, factor_min=float(update.factor.min()),
                      factor_max=float(update.factor.max()))
    return delta_svd(update.delta, Plan(plan.dtype, plan.device, plan.with_base, max(plan.keep, DORA_VECTORS))), \
        parts, update.delta


def _base_name(name: str, available: set[str], flat: dict[str, str], towers: dict[str, str]) -> str | None:
    """``name`` in the base: directly or with one model prefix (:func:`find_name`), as kohya flattens names
    (every ``.`` as ``_``), without a diffusers component (``unet.``) for a base that is that component, or in
    the other layout of a multimodal model (:func:`tower_key`), or as the one base module whose flattened name
    ends with it (a single-file diffusion checkpoint's ``model.diffusion_model.`` prefix)."""
    component = name.partition(".")[2]
    for candidate in (name, component):
        found = find_name(candidate, available) or flat.get(candidate.replace(".", "_"))
        if found is not None:
            return found
    if tower_key(name) in towers:
        return towers[tower_key(name)]
    tail = "_" + component.replace(".", "_")  # a single-file base: model.diffusion_model.input_blocks...
    found = [full for key, full in flat.items() if key.endswith(tail)]
    return found[0] if len(found) == 1 else None


def tower_key(name: str) -> str:
    """A multimodal module's name without its ``model`` / ``language_model`` wrappers: transformers 5 names the
    text tower ``model.language_model.layers.0...`` in memory (and in adapters) but reads checkpoints saved as
    ``language_model.model.layers.0...`` or ``model.layers.0...``; both reduce to ``layers.0...``."""
    return ".".join(part for part in name.split(".") if part not in ("model", "language_model"))


def _base_names(source: LoraSource, base: Checkpoint) -> dict[str, str]:
    available = set(base.modules())
    flat = {name.replace(".", "_"): name for name in available}
    keys: dict[str, list[str]] = {}
    for name in available:
        keys.setdefault(tower_key(name), []).append(name)
    towers = {key: names[0] for key, names in keys.items() if len(names) == 1}
    names = {}
    for name, shape in source.shapes.items():
        found = _base_name(name, available, flat, towers)
        if found is None:
            raise LowrankError(f"the base {base.path} has no weight for module {name} of {source.path}; is it the "
                               "right base?")
        if base.weight_shape(found) != shape:
            raise LowrankError(f"module {name}: the update in {source.path} has shape {list(shape)} but the base "
                               f"{base.path} weight {found} has shape {list(base.weight_shape(found))}")
        names[name] = found
    return names


class FullSource:
    """A full fine-tuned model against the base: ``dW = W1 - W0`` per matched weight, its singular values from
    the float64 Gram route (:func:`lowrank.gram.gram_svd`) and its top ``keep`` singular vectors (0: values only).
    On a GPU the next module's weights are read on a background thread while the current one is decomposed (on
    the CPU both cores are already busy decomposing, and the read-ahead would cost a module's memory)."""

    kind = "full"

    def __init__(self, path: Path, base: Checkpoint | None, allow_pickle: bool, keep: int = 0):
        if base is None:
            raise LowrankError(f"{path} is a full model, not a peft adapter (no adapter_config.json); pass "
                               "--base MODEL to give the pre-trained weights W0")
        self.path = path
        self.base = base
        self.tuned = open_checkpoint(path, allow_pickle)
        match = match_modules(self.tuned, base)
        self.pairs = match.pairs
        self.names = [name for name, _ in match.pairs]
        self.shapes = {name: self.tuned.weight_shape(name) for name in self.names}
        self.ranks: dict[str, int] = {}
        self.not_in_base, self.only_in_base = match.only_tuned, match.only_base
        self.keep = keep
        self.unchanged: list[str] = []

    def updates(self, wanted: set[str], plan: Plan) -> Iterator[Update]:
        """One module at a time: W1 and W0 read (the next module's on a background thread), dW formed (in place
        when W0 and W1 are not needed), then dW's spectrum, and with base metrics W0's and W1's singular vectors;
        peak memory is a few ``(out, in)`` matrices."""
        pairs = [(name, base_name) for name, base_name in self.pairs if name in wanted]
        read = ((name, self.tuned.weight(name, plan.dtype), self.base.weight(base_name, plan.dtype))
                for name, base_name in pairs)
        for name, w1, w0 in (prefetched(read) if plan.device.type == "cuda" else read):
            w1, w0 = w1.to(plan.device), w0.to(plan.device)
            delta = w1 - w0 if plan.with_base else w1.sub_(w0)
            if not plan.with_base:
                del w0, w1
            if not bool(delta.any()):
                self.unchanged.append(name)
                continue
            base = None
            if plan.with_base and plan.fast:  # no W0/W1 vectors: intruders are not computed under --fast
                (svd, sketch), s0 = delta_spectrum(delta, plan), base_top_values(w0, plan)
                base = BaseVectors(LeftBasis(s0), w0.new_empty((w0.shape[0], 0)))
                del w1
            elif plan.with_base:
                svd, basis, u1 = delta_svd(delta, plan), base_vectors(w0, plan), top_vectors(w1, plan)
                base, sketch = BaseVectors(basis, u1), None
                del w1
            else:
                svd, sketch = delta_spectrum(delta, plan)
            del delta
            yield Update(name, "full", module_kind(name), None, None, svd, w0 if plan.with_base else None, base,
                         sketch=sketch)


def open_source(path: str, base: Checkpoint | None, config: AnalyzeConfig):
    """A :class:`LoraSource` for a file or folder of a known adapter format (:data:`lowrank.adapters.FORMATS`),
    else a :class:`FullSource` (which needs ``base``)."""
    where = Path(path).expanduser()
    if not where.exists():
        raise LowrankError(f"{where} does not exist")
    found = detect(where)
    if found is not None:
        return LoraSource(found.open(where, config.allow_pickle), base)
    return FullSource(where, base, config.allow_pickle)
