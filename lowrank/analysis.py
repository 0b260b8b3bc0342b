"""``lowrank analyze`` as a library call: checkpoints in, an :class:`AnalysisReport` out, nothing printed.

An update source is either a peft adapter folder (each module's ``dW = s B A`` as factors, SVD in factored form,
exact, ``O((m + n) r^2)``) or a full model against ``--base`` (``dW = W1 - W0``, exact dense SVD in float32 or
float64). Modules are read, analyzed and dropped one at a time, so memory stays bounded by one module (plus, with
``--against``, the top-``grid_max`` singular vectors kept per compared module of the other update).

Order of work with ``--against``: the other update's matched modules first (their singular vectors are kept),
then CHECKPOINT's modules, each compared with its partner as soon as it is analyzed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from lowrank import rank as ranking
from lowrank import spectra, subspaces
from lowrank.advice.measure import MeasureConfig
from lowrank.advice.measure import measure as measure_signals
from lowrank.advice.sufficiency import (CALIBRATED_EXAMPLES, LOWER_BELOW, RAISE_ABOVE, Signals, judge,
                                        model_doubling_gain)
from lowrank.adapters import PREFIX, WEIGHTS_FILE, is_adapter_folder, iter_lora_updates, read_adapter_config
from lowrank.assets import resolve_model_path
from lowrank.checkpoints import Checkpoint, find_name, match_modules, module_kind, open_checkpoint
from lowrank.errors import LowrankError
from lowrank.progress import ProgressCallback, report
from lowrank.results import SCHEMA, AnalysisReport, Comparison, ModelSufficiency, ModuleAnalysis, Sufficiency

DTYPES = {"float32": torch.float32, "float64": torch.float64}
ENERGY_LEVELS = ("0.5", "0.9", "0.99")
MIN_KEPT = 64


@dataclass(frozen=True)
class AnalyzeConfig:
    """What to analyze and how; each field is one ``lowrank analyze`` option.

    Args:
        checkpoint: a peft adapter folder, or a full model folder / safetensors file (then ``base`` is needed).
        base: the pre-trained model (folder, file or registry key) giving ``W0``; enables amplification and
            intruder dimensions (``base_metrics``).
        against: a second update (adapter or full model against the same ``base``) compared module by module.
        dtype: ``"float32"`` (default) or ``"float64"`` for dense SVDs of full deltas; factored LoRA SVDs always
            run in float64.
        k: subspace dimension for phi and principal angles; None means the smaller LoRA rank of the two updates
            (``reference_rank`` when both are full deltas).
        reference_rank: the rank a full delta is judged at when no LoRA partner gives one. Default 16.
        grid_max: the phi(i, j) grid covers ``i, j <= min(grid_max, rank)``. Default 64.
        base_metrics: compute amplification and intruder dimensions when a base is given. Default True.
        intruder_k, intruder_epsilon: Shuttleworth et al.'s k (10) and epsilon (0.5).
        allow_pickle: read ``.bin``/``.pt`` checkpoints with ``torch.load(weights_only=True)``. Default False.
        modules: a regular expression; only module names where it matches (``re.search``) are analyzed.
        seed: seeds the random baselines of the amplification factor.
        device: where SVDs run, ``"cpu"`` (default) or ``"cuda"``; tensors are read on the CPU and moved there
            one module at a time.
        data: the dataset the adapter was trained on; with ``base``, LoRA verdicts come from the gradient the
            adapter cannot reach on the calibrated sample of training examples (:mod:`lowrank.advice.sufficiency`).
        max_length: tokens per example in the gradient sample (as in training; default 128).
    """

    checkpoint: str
    base: str | None = None
    against: str | None = None
    dtype: str = "float32"
    k: int | None = None
    reference_rank: int = 16
    grid_max: int = 64
    base_metrics: bool = True
    intruder_k: int = 10
    intruder_epsilon: float = 0.5
    allow_pickle: bool = False
    modules: str | None = None
    seed: int = 0
    device: str = "cpu"
    data: str | None = None
    max_length: int = 128

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise LowrankError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.data is not None and self.base is None:
            raise LowrankError("--data needs --base: the model the adapter was trained on")
        for name in ("reference_rank", "grid_max", "intruder_k"):
            if getattr(self, name) < 1:
                raise LowrankError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k is not None and self.k < 1:
            raise LowrankError(f"k must be >= 1, got {self.k}")
        if not 0.0 < self.intruder_epsilon <= 1.0:
            raise LowrankError(f"intruder_epsilon must be in (0, 1], got {self.intruder_epsilon}")
        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise LowrankError(f"device {self.device!r} is not a torch device: {error}") from None
        cuda_ok = torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
        if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not cuda_ok):
            raise LowrankError(f"device {self.device!r} is not available here (cpu, or cuda when a GPU is present)")
        if self.modules is not None:
            try:
                re.compile(self.modules)
            except re.error as error:
                raise LowrankError(f"--modules {self.modules!r} is not a regular expression: {error}") from None


@dataclass(frozen=True)
class Update:
    """One module's update, ready to measure: its SVD and, when a base is known, ``W0`` and ``W1 = W0 + dW``."""

    name: str
    kind: str
    layer_kind: str
    rank: int | None
    scale: float | None
    svd: spectra.SVD
    W0: torch.Tensor | None
    W1: torch.Tensor | None


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: the factored SVD's tall-skinny QRs (m x r) are too small to
    gain from threads, and on a loaded 2-core machine two threads made each QR 40x slower (166 ms vs 4 ms for
    11008 x 16 measured here)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LoraSource:
    """A peft adapter folder: module names and ranks from the safetensors header, updates read lazily."""

    kind = "lora"

    def __init__(self, folder: Path, base: Checkpoint | None):
        self.path = folder
        self.config = read_adapter_config(folder)
        self.shapes, self.ranks = _adapter_shapes(folder / WEIGHTS_FILE)
        self.names = list(self.shapes)
        self.base = base
        self.base_names = _base_names(self, base) if base is not None else {}
        self.not_in_base: tuple[str, ...] = ()
        self.only_in_base: tuple[str, ...] = ()
        self.unchanged: list[str] = []

    def updates(self, wanted: set[str], dtype: torch.dtype, device: torch.device,
                with_base: bool) -> Iterator[Update]:
        items = iter_lora_updates(self.path, dtype=torch.float32)  # exact for fp32/bf16/fp16 factors
        while True:
            with single_thread():
                item = next(items, None)
                if item is None:
                    return
                if item.name not in wanted:
                    continue
                svd = spectra.lora_svd(item.B.to(device), item.A.to(device), item.scale)  # float64 QR, r x r SVD
            w0 = w1 = None
            if with_base and self.base is not None:
                w0 = self.base.weight(self.base_names[item.name], dtype).to(device)
                w1 = w0 + (svd.U * svd.S).to(dtype) @ svd.Vh.to(dtype)  # dW formed once, in the compute dtype
            yield Update(item.name, "lora", item.kind, item.rank, item.scale, svd, w0, w1)


def _adapter_shapes(file: Path) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """``(out, in)`` of each module's update and its rank, from the adapter's safetensors header."""
    tensors = open_checkpoint(file).tensors
    shapes, ranks = {}, {}
    for key, info in tensors.items():
        for a_suffix, b_suffix, embedding in ((".lora_A.weight", ".lora_B.weight", False),
                                              (".lora_embedding_A", ".lora_embedding_B", True)):
            if not key.endswith(a_suffix):
                continue
            stem = key[: -len(a_suffix)]
            name = stem.removeprefix(PREFIX)
            other = tensors.get(stem + b_suffix)
            if other is None or len(info.shape) != 2 or len(other.shape) != 2:
                raise LowrankError(f"{file}: module {name} has {a_suffix.lstrip('.')} but no 2-D "
                                   f"{b_suffix.lstrip('.')} tensor")
            shapes[name] = (info.shape[1], other.shape[0]) if embedding else (other.shape[0], info.shape[1])
            ranks[name] = info.shape[0]
    orphans = [k for k in tensors if k.endswith((".lora_B.weight", ".lora_embedding_B"))
               and k.replace("lora_B", "lora_A").replace("lora_embedding_B", "lora_embedding_A") not in tensors]
    if orphans:
        raise LowrankError(f"{file}: tensor {orphans[0]} has no matching lora_A tensor")
    if not shapes:
        raise LowrankError(f"{file} holds no LoRA tensors (no *.lora_A.weight keys)")
    return shapes, ranks


def _base_names(source: LoraSource, base: Checkpoint) -> dict[str, str]:
    available = set(base.modules())
    names = {}
    for name, shape in source.shapes.items():
        found = find_name(name, available)
        if found is None:
            raise LowrankError(f"the base {base.path} has no weight for adapted module {name}; is it the right base?")
        if base.weight_shape(found) != shape:
            raise LowrankError(f"module {name}: the adapter's update has shape {list(shape)} but the base "
                               f"{base.path} weight {found} has shape {list(base.weight_shape(found))}")
        names[name] = found
    return names


class FullSource:
    """A full fine-tuned model against the base: ``dW = W1 - W0`` per matched 2-D weight, exact dense SVD."""

    kind = "full"

    def __init__(self, path: Path, base: Checkpoint | None, allow_pickle: bool, compute_uv: bool):
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
        self.compute_uv = compute_uv
        self.unchanged: list[str] = []

    def updates(self, wanted: set[str], dtype: torch.dtype, device: torch.device,
                with_base: bool) -> Iterator[Update]:
        """One module at a time: W1 and W0 read (W0 dropped at once unless base metrics need it), dW formed
        in place, its SVD taken; peak memory is about three ``(out, in)`` matrices in the compute dtype."""
        keep = with_base and self.compute_uv
        for name, base_name in self.pairs:
            if name not in wanted:
                continue
            w1, w0 = self.tuned.weight(name, dtype).to(device), self.base.weight(base_name, dtype).to(device)
            delta = w1 - w0 if keep else w1.sub_(w0)
            if not keep:
                del w0, w1
            if not bool(delta.any()):
                self.unchanged.append(name)
                continue
            svd = spectra.dense_svd(delta, dtype=dtype, compute_uv=self.compute_uv)
            del delta
            yield Update(name, "full", module_kind(name), None, None, svd, w0 if keep else None,
                         w1 if keep else None)


def open_source(path: str, base: Checkpoint | None, config: AnalyzeConfig, compute_uv: bool):
    """A :class:`LoraSource` for a peft adapter folder, else a :class:`FullSource` (which needs ``base``)."""
    where = Path(path).expanduser()
    if not where.exists():
        raise LowrankError(f"{where} does not exist")
    if where.is_dir() and is_adapter_folder(where):
        return LoraSource(where, base)
    return FullSource(where, base, config.allow_pickle, compute_uv)


def measure(update: Update, reference_rank: int, config: AnalyzeConfig, generator: torch.Generator,
            signals: Signals | None = None, model_verdict: str | None = None) -> ModuleAnalysis:
    """Spectrum, rank measures, verdict and (with a base) amplification and intruders of one update; a LoRA
    update's verdict comes from its gradient ``signals`` (``--data``), else it is not judged."""
    s = update.svd.S.detach().to(torch.float64).cpu()
    shape = update.svd.shape
    limit = min(shape)
    energy = {level: spectra.energy_rank(s, float(level)) for level in ENERGY_LEVELS}
    r = min(update.rank if update.kind == "lora" else reference_rank, limit)
    tail, captured = spectra.tail_ratio(s, r), spectra.energy_captured(s, r)
    if update.kind == "lora":
        verdict = ranking.judge_lora(update.rank, energy["0.9"], energy["0.99"], tail, limit, signals, model_verdict)
        kept = s
    else:
        verdict = ranking.judge_full(r, energy["0.9"], energy["0.99"], captured, limit)
        kept = s[: max(MIN_KEPT, energy["0.99"])]
    norm = float(torch.linalg.vector_norm(s))
    amp = intr = None
    if update.W0 is not None and norm > 0.0:
        amp = subspaces.amplification(update.svd, update.W0, min(r, s.numel()), generator)
        intr = subspaces.intruder_dimensions(update.W0, update.W1, min(config.intruder_k, limit),
                                           config.intruder_epsilon, DTYPES[config.dtype])
    return ModuleAnalysis(
        name=update.name, shape=tuple(shape), kind=update.kind, layer_kind=update.layer_kind, rank=update.rank,
        scale=update.scale, singular_values=tuple(float(v) for v in kept), num_singular_values=int(s.numel()),
        frobenius_norm=norm, energy_rank=energy, effective_rank=spectra.effective_rank(s),
        stable_rank=spectra.stable_rank(s), reference_rank=r, tail_ratio=tail, energy_at_rank=captured,
        verdict=verdict.verdict, suggested_rank=verdict.suggested_rank, evidence=verdict.evidence,
        amplification=amp, intruders=intr, sufficiency=_sufficiency(signals))


def _sufficiency(signals: Signals | None) -> Sufficiency | None:
    if signals is None:
        return None
    return Sufficiency(doubling_gain=signals.doubling_gain, outside_fraction=signals.outside_fraction,
                       gradient_norm=signals.gradient_norm, base_gradient_norm=signals.base_gradient_norm,
                       gain_curve=signals.gain_curve)


def data_verdict(config: AnalyzeConfig, source, progress: ProgressCallback | None
                 ) -> tuple[dict[str, Signals], ModelSufficiency]:
    """Gradient signals of every module of a LoRA ``source`` on ``config.data``, and the model-level verdict."""
    if not isinstance(source, LoraSource):
        raise LowrankError(f"--data judges LoRA adapters; {source.path} is a full model (its delta's verdict "
                           "comes from its spectrum)")
    result = measure_signals(MeasureConfig(adapter=str(source.path), base=config.base, data=config.data,
                                           examples=CALIBRATED_EXAMPLES, max_length=config.max_length,
                                           seed=config.seed, device=config.device), progress)
    gain = model_doubling_gain(list(result.signals.values()))
    verdict = judge(gain)
    r = source.config.r
    return result.signals, ModelSufficiency(
        data=config.data, examples=result.examples, doubling_gain=gain, verdict=verdict,
        suggested_r={"raise r": 2 * r, "lower r": max(1, r // 2), "adequate": r}[verdict],
        raise_above=RAISE_ABOVE, lower_below=LOWER_BELOW, seconds=result.seconds)


@dataclass(frozen=True)
class Frame:
    """The top singular vectors kept for comparison: ``U (out, g)``, ``V (in, g)``, and the update's rank."""

    U: torch.Tensor
    V: torch.Tensor
    rank: int | None


def frame_of(update: Update, grid_max: int) -> Frame:
    """Keep the top ``min(grid_max, len(S))`` left and right singular vectors of ``update``."""
    g = min(grid_max, update.svd.S.numel())
    return Frame(update.svd.U[:, :g].clone(), update.svd.Vh[:g].T.clone(), update.rank)


def compare(name: str, other_name: str, mine: Frame, theirs: Frame, k: int | None,
            reference_rank: int) -> Comparison:
    """phi at ``k`` (left and right), principal angles and the phi(i, j) grid between two kept frames.

    ``k`` None picks the smaller LoRA rank of the two (``reference_rank`` for two full deltas); ``k`` is capped
    by the vectors available on both sides.
    """
    if mine.U.shape[0] != theirs.U.shape[0] or mine.V.shape[0] != theirs.V.shape[0]:
        raise LowrankError(f"module {name}: cannot compare updates of shapes ({mine.U.shape[0]}, {mine.V.shape[0]}) "
                           f"and ({theirs.U.shape[0]}, {theirs.V.shape[0]})")
    ranks = [r for r in (mine.rank, theirs.rank) if r is not None]
    wanted = k if k is not None else (min(ranks) if ranks else reference_rank)
    k = min(wanted, mine.U.shape[1], theirs.U.shape[1])
    dim = mine.U.shape[0]
    angles = subspaces.principal_angles(mine.U[:, :k], theirs.U[:, :k])
    grid = subspaces.subspace_similarity_grid(mine.U, theirs.U, mine.U.shape[1], theirs.U.shape[1])
    return Comparison(
        name=name, other_name=other_name, k=k, dim=dim, phi=subspaces.subspace_similarity(mine.U, theirs.U, k, k),
        phi_random=subspaces.random_subspace_similarity(k, k, dim),
        phi_right=subspaces.subspace_similarity(mine.V, theirs.V, k, k),
        principal_angles_deg=tuple(math.degrees(float(a)) for a in angles),
        grassmann_distance=subspaces.grassmann_distance(angles),
        phi_grid=tuple(tuple(round(float(v), 6) for v in row) for row in grid))


def _selected(names: list[str], pattern: str | None) -> list[str]:
    return names if pattern is None else [n for n in names if re.search(pattern, n)]


def _pairing(mine: list[str], theirs: list[str]) -> dict[str, str]:
    available = set(theirs)
    found = {name: find_name(name, available) for name in mine}
    return {name: other for name, other in found.items() if other is not None}


def analyze(config: AnalyzeConfig, progress: ProgressCallback | None = None) -> AnalysisReport:
    """Analyze ``config.checkpoint`` (and compare it with ``config.against``); see :class:`AnalyzeConfig`.

    Raises:
        LowrankError: for any bad input: missing or corrupt files, malformed adapters, NaN weights, pickle files
            without opt-in, shape mismatches with the base, or no module left to analyze.
    """
    base = open_checkpoint(resolve_model_path(config.base), config.allow_pickle) if config.base else None
    with_base = base is not None and config.base_metrics
    uv = with_base or config.against is not None
    primary = open_source(config.checkpoint, base, config, uv)
    other = open_source(config.against, base, config, uv) if config.against else None
    names = _selected(primary.names, config.modules)
    if not names:
        raise LowrankError(f"no module of {primary.path} matches --modules {config.modules!r}")
    pairing = _pairing(names, _selected(other.names, config.modules)) if other else {}
    signals, sufficiency = data_verdict(config, primary, progress) if config.data else ({}, None)
    run = _Run(config, with_base, progress, len(names) + len(pairing), signals,
               sufficiency.verdict if sufficiency else None)
    against_modules, frames = run.against(other, primary, pairing) if other else ([], {})
    modules, comparisons = [], []
    for update in primary.updates(set(names), run.dtype, run.device, with_base):
        ref = (other.ranks.get(pairing[update.name]) if update.name in pairing else None) or config.reference_rank
        modules.append(run.measure(update, ref, run.signals.get(update.name)))
        if pairing.get(update.name) in frames:
            comparisons.append(compare(update.name, pairing[update.name], frame_of(update, config.grid_max),
                                       frames.pop(pairing[update.name]), config.k, config.reference_rank))
    if not modules:
        raise LowrankError(f"{primary.path}: every matched weight equals the base's; there is no update to analyze")
    rslora = primary.config.use_rslora if isinstance(primary, LoraSource) else False
    unmatched = set(pairing.values())
    return AnalysisReport(
        schema=SCHEMA, checkpoint=str(primary.path), checkpoint_kind=primary.kind,
        base=config.base if base else None, against=str(other.path) if other else None,
        against_kind=other.kind if other else None, settings=_settings(config, primary, with_base),
        thresholds=ranking.THRESHOLDS, summary=ranking.summarize(tuple(modules), rslora, sufficiency),
        modules=tuple(modules), comparisons=tuple(comparisons), against_modules=tuple(against_modules),
        only_in_checkpoint=tuple(n for n in names if n not in pairing) if other else (),
        only_in_against=tuple(n for n in _selected(other.names, config.modules) if n not in unmatched)
        if other else (),
        only_in_base=_union(primary.only_in_base, other.only_in_base if other else ()),
        not_in_base=_union(primary.not_in_base, other.not_in_base if other else ()),
        unchanged=_union(primary.unchanged, other.unchanged if other else ()), sufficiency=sufficiency)


def _libc_trim():
    """glibc's ``malloc_trim``, or None on other C libraries."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_trim()


def release_freed_memory() -> None:
    """Hand memory freed by the last module back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed blocks below its dynamic mmap threshold (up to 32 MB) in the heap for reuse; with matrices
    of many sizes passing through, that retained heap grew the peak RSS of an 8-layer analysis by about 100 MB.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class _Run:
    """Shared state of one analysis: the settings, the random generator, and the progress count."""

    def __init__(self, config: AnalyzeConfig, with_base: bool, progress: ProgressCallback | None, total: int,
                 signals: dict[str, Signals], model_verdict: str | None):
        self.config, self.with_base, self.progress, self.total = config, with_base, progress, total
        self.signals, self.model_verdict = signals, model_verdict
        self.dtype = DTYPES[config.dtype]
        self.device = torch.device(config.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.done = 0

    def measure(self, update: Update, reference_rank: int, signals: Signals | None = None) -> ModuleAnalysis:
        result = measure(update, reference_rank, self.config, self.generator, signals,
                         self.model_verdict if signals is not None else None)
        release_freed_memory()
        self.done += 1
        report(self.progress, "analyze", self.done, self.total, update.name)
        return result

    def against(self, other, primary, pairing: dict[str, str]) -> tuple[list[ModuleAnalysis], dict[str, Frame]]:
        """Analyze the ``--against`` update's matched modules, keeping their top singular vectors."""
        theirs_to_mine = {theirs: mine for mine, theirs in pairing.items()}
        modules, frames = [], {}
        for update in other.updates(set(theirs_to_mine), self.dtype, self.device, self.with_base):
            ref = primary.ranks.get(theirs_to_mine[update.name]) or self.config.reference_rank
            modules.append(self.measure(update, ref))
            frames[update.name] = frame_of(update, self.config.grid_max)
        return modules, frames


def _union(first, second) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def _settings(config: AnalyzeConfig, primary, with_base: bool) -> dict:
    settings = {"dtype": config.dtype, "device": config.device, "k": config.k, "reference_rank": config.reference_rank,
                "grid_max": config.grid_max, "base_metrics": with_base, "intruder_k": config.intruder_k,
                "intruder_epsilon": config.intruder_epsilon, "modules": config.modules, "seed": config.seed}
    if isinstance(primary, LoraSource):
        adapter = primary.config
        settings["adapter"] = {"r": adapter.r, "lora_alpha": adapter.lora_alpha, "use_rslora": adapter.use_rslora,
                               "rank_pattern": dict(adapter.rank_pattern), "alpha_pattern": dict(adapter.alpha_pattern),
                               "target_modules": list(adapter.target_modules) if not isinstance(
                                   adapter.target_modules, str) else adapter.target_modules,
                               "modules_to_save": list(adapter.modules_to_save),
                               "base_model_name_or_path": adapter.base_model_name_or_path}
    return settings
