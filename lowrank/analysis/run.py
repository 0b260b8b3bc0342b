"""``lowrank analyze`` as a library call: checkpoints in, an :class:`AnalysisReport` out, nothing printed.

An update source is either a peft adapter folder (each module's ``dW = s B A`` as factors, SVD in factored form,
exact, ``O((m + n) r^2)``) or a full model against ``--base`` (``dW = W1 - W0``, exact dense SVD in float32 or
float64). Modules are read, analyzed and dropped one at a time, so memory stays bounded by one module (plus, with
``--against``, the top-``grid_max`` singular vectors kept per compared module of the other update).

Order of work with ``--against``: the other update's matched modules first (their singular vectors are kept),
then CHECKPOINT's modules, each compared with its partner as soon as it is analyzed. On several processes
(``torchrun``, ``--nproc``) each rank does this for its share of the modules (:mod:`lowrank.analysis.sharding`) and
rank 0 assembles the same report one process would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lowrank.advice.sufficiency.gradient_evidence import GradientEvidence
from lowrank.analysis import rank as ranking
from lowrank import distributed, spectra
from lowrank.analysis import sketched_measures, subspaces
from lowrank.weights import find_name, open_checkpoint
from lowrank.analysis.data_verdict import data_verdict
from lowrank.analysis.config import DTYPES, ENERGY_LEVELS, MIN_KEPT, AnalyzeConfig
from lowrank.analysis.data_records import Sufficiency
from lowrank.analysis.results import SCHEMA, AnalysisReport, Comparison, ModuleAnalysis, TrainedInFull
from lowrank.analysis.decompose import Plan
from lowrank.analysis.sharding import NotMain, gathered, merged, on_main, rank_device, shares
from lowrank.analysis.sources import LoraSource, Update, open_source
from lowrank.adapters import Adapter
from lowrank.assets import resolve_model_path
from lowrank.cpu import release_freed_memory
from lowrank.distributed import SINGLE, World
from lowrank.errors import LowrankError
from lowrank.progress import ProgressCallback, report

__all__ = ["AnalyzeConfig", "analyze"]


def measure(update: Update, reference_rank: int, config: AnalyzeConfig, generator: torch.Generator,
            evidence: GradientEvidence | None = None, model_verdict: str | None = None) -> ModuleAnalysis:
    """Spectrum, rank measures, verdict and (with a base) amplification and intruders of one update; a LoRA
    update's verdict is the model's data verdict ``model_verdict`` (``--data``), with its gradient ``evidence``
    beside it, else it is not judged."""
    s = update.svd.S.detach().to(torch.float64).cpu()
    shape = update.svd.shape
    limit = min(shape)
    energy = {level: spectra.energy_rank(s, float(level)) for level in ENERGY_LEVELS}
    bounds = {level: [k, k] for level, k in energy.items()}
    r = min(update.rank if update.kind == "lora" else reference_rank, limit)
    tail, captured = spectra.tail_ratio(s, r), spectra.energy_captured(s, r)
    norm, effective, stable = float(torch.linalg.vector_norm(s)), spectra.effective_rank(s), spectra.stable_rank(s)
    if update.sketch is not None:  # --fast: energy ranks as intervals (lowrank.analysis.sketched_measures)
        bounded = sketched_measures.bounded_measures(update.sketch, r, ENERGY_LEVELS)
        energy, bounds, captured, tail = bounded.energy, bounded.bounds, bounded.captured[0], bounded.tail_ratio
        norm, effective, stable = math.sqrt(update.sketch.total), bounded.effective_rank, bounded.stable_rank
        verdict = sketched_measures.judge_bounded(r, bounded, limit, update.sketch.size)
        kept = s
    elif update.kind == "lora":
        verdict = ranking.judge_lora(update.rank, energy["0.9"], energy["0.99"], tail, limit, evidence, model_verdict)
        kept = s if update.dora is None else s[: max(MIN_KEPT, energy["0.99"])]
    else:
        verdict = ranking.judge_full(r, energy["0.9"], energy["0.99"], captured, limit)
        kept = s[: max(MIN_KEPT, energy["0.99"])]
    amp = intr = None
    if update.base is not None and norm > 0.0:
        amp = subspaces.amplification(update.svd, update.W0, min(r, s.numel(), update.svd.U.shape[1]), generator,
                                      w0_top=update.base.basis.S)
        if update.sketch is not None:  # the sketch's values miss the tail: ||dW||_F from the exact total
            amp = dataclasses.replace(amp, delta_norm=norm, factor=norm / amp.projected_norm)
        if not (config.fast and update.kind == "full"):  # intruders need every singular vector of W0
            intr = subspaces.intruders_from(update.base.basis, update.base.u1, config.intruder_epsilon)
    return ModuleAnalysis(
        name=update.name, shape=tuple(shape), kind=update.kind, layer_kind=update.layer_kind, rank=update.rank,
        scale=update.scale, singular_values=tuple(float(v) for v in kept),
        num_singular_values=limit if update.sketch is not None else int(s.numel()),
        frobenius_norm=norm, energy_rank=energy, effective_rank=effective,
        stable_rank=stable, reference_rank=r, tail_ratio=tail, energy_at_rank=captured,
        verdict=verdict.verdict, suggested_rank=verdict.suggested_rank, evidence=verdict.evidence,
        amplification=amp, intruders=intr, sufficiency=_sufficiency(evidence), variant=update.variant,
        dora=update.dora, route="exact" if update.sketch is None else "sketch", energy_rank_bounds=bounds,
        sketch_size=update.sketch.size if update.sketch is not None else None)


def _sufficiency(evidence: GradientEvidence | None) -> Sufficiency | None:
    if evidence is None:
        return None
    return Sufficiency(signal_to_noise=evidence.signal_to_noise, doubling_gain=evidence.doubling_gain,
                       outside_fraction=evidence.outside_fraction,
                       gradient_norm=evidence.gradient_norm, base_gradient_norm=evidence.base_gradient_norm,
                       gain_curve=evidence.gain_curve)


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


def analyze(config: AnalyzeConfig, progress: ProgressCallback | None = None, world: World = SINGLE,
            live: Adapter | None = None) -> AnalysisReport | None:
    """Analyze ``config.checkpoint`` (and compare it with ``config.against``); see :class:`AnalyzeConfig`.

    ``live``: an adapter held in memory (:func:`lowrank.adapters.live.live_adapter`) analyzed in place of a file,
    ``config.checkpoint`` being only its name in the report; its modules go through the same code as a saved
    adapter's (on one process).

    With a ``world`` of several processes (called inside :func:`lowrank.distributed.joined` on every rank, as
    ``torchrun`` or ``lowrank analyze --nproc N`` run it) each rank streams and decomposes its share of the modules
    (:mod:`lowrank.analysis.sharding`: every ``size``-th one, its ``--against`` partner with it) on its own device
    (``cuda:LOCAL_RANK`` on CUDA); rank 0 gathers the measures, restores the single-process order and returns the
    report, identical to one process's; the other ranks return None. ``--data``'s verdict (held-out check, probe,
    gradient evidence) is measured once, on rank 0, and broadcast (the other ranks wait up to
    ``LOWRANK_DIST_TIMEOUT`` seconds for it). Each module's random draws are seeded by ``(seed, module)`` alone, so
    the sharding changes no number.

    Raises:
        LowrankError: for any bad input: missing or corrupt files, malformed adapters, NaN weights, pickle files
            without opt-in, shape mismatches with the base, or no module left to analyze. On several processes a
            rank's error is raised on rank 0 (the others return None), so the run fails once, without a hang.
    """
    if world.distributed and not distributed.active():
        raise LowrankError(f"analyze on {world.size} processes needs their process group: call it inside "
                           "lowrank.distributed.joined(world, device)")
    try:
        return _analyze(config, progress, world, live)
    except NotMain:
        return None


def _analyze(config: AnalyzeConfig, progress: ProgressCallback | None, world: World,
             live: Adapter | None) -> AnalysisReport:
    base = open_checkpoint(resolve_model_path(config.base), config.allow_pickle) if config.base else None
    with_base = base is not None and config.base_metrics
    primary = LoraSource(live, base) if live is not None else open_source(config.checkpoint, base, config)
    if config.data and base is None:
        named = primary.adapter.peft_summary().base_model_name_or_path if isinstance(primary, LoraSource) else None
        raise LowrankError("--data needs --base: the model the adapter was trained on" + (
            f" (the adapter's base_model_name_or_path, {named}, is not a local folder)" if named else ""))
    other = open_source(config.against, base, config) if config.against else None
    names = _selected(primary.names, config.modules)
    if not names:
        raise LowrankError(f"no module of {primary.path} matches --modules {config.modules!r}")
    pairing = _pairing(names, _selected(other.names, config.modules)) if other else {}
    evidence, sufficiency = on_main(world, lambda: data_verdict(config, primary, progress)) if config.data \
        else ({}, None)
    mine = shares(names, pairing, world.size)[world.rank]
    plan = _plan(config, with_base, primary, other, rank_device(config.device, world))
    run = _Run(config, plan, progress, len(mine) + len(set(pairing[n] for n in mine if n in pairing)), evidence,
               sufficiency.verdict if sufficiency else None)
    shares_done = gathered(world, lambda: run.share(primary, other, mine, {n: pairing[n] for n in mine
                                                                          if n in pairing}))
    modules, comparisons, against_modules, unchanged = merged(shares_done, names, other.names if other else [])
    if not modules:
        raise LowrankError(f"{primary.path}: every matched weight equals the base's; there is no update to analyze")
    rslora = primary.adapter.peft_summary().use_rslora if isinstance(primary, LoraSource) else False
    unmatched = set(pairing.values())
    return AnalysisReport(
        schema=SCHEMA, checkpoint=str(primary.path), checkpoint_kind=primary.kind,
        base=config.base if base else None, against=str(other.path) if other else None,
        against_kind=other.kind if other else None, settings=_settings(config, primary, with_base),
        thresholds=ranking.THRESHOLDS, summary=ranking.summarize(modules, rslora, sufficiency),
        modules=modules, comparisons=comparisons, against_modules=against_modules,
        only_in_checkpoint=tuple(n for n in names if n not in pairing) if other else (),
        only_in_against=tuple(n for n in _selected(other.names, config.modules) if n not in unmatched)
        if other else (),
        only_in_base=_union(primary.only_in_base, other.only_in_base if other else ()),
        not_in_base=_union(primary.not_in_base, other.not_in_base if other else ()),
        unchanged=unchanged, sufficiency=sufficiency,
        **_with_fast_note(_adapter_fields(primary), config, (*modules, *against_modules)))


def _with_fast_note(fields: dict, config: AnalyzeConfig, modules) -> dict:
    """``fields`` with :data:`sketched_measures.NOTE` added to its notes when ``--fast`` met a full delta."""
    if config.fast and any(m.kind == "full" for m in modules):
        fields = {**fields, "notes": (*fields.get("notes", ()), sketched_measures.NOTE)}
    return fields


def _adapter_fields(source) -> dict:
    """The report's adapter_format, trained_in_full and notes for an adapter source (empty for a full model)."""
    if not isinstance(source, LoraSource):
        return {}
    adapter = source.adapter
    return {"adapter_format": adapter.format, "notes": adapter.notes,
            "trained_in_full": tuple(TrainedInFull(f.name, f.parameters) for f in adapter.trained_in_full)}


class _Run:
    """One rank's analysis: the settings and the progress count of its share."""

    def __init__(self, config: AnalyzeConfig, plan: Plan, progress: ProgressCallback | None, total: int,
                 evidence: dict[str, GradientEvidence], model_verdict: str | None):
        self.config, self.plan, self.progress, self.total = config, plan, progress, total
        self.evidence, self.model_verdict = evidence, model_verdict
        self.done = 0

    def share(self, primary, other, mine: list[str], pairing: dict[str, str]) -> tuple[list, ...]:
        """Measure CHECKPOINT's modules ``mine`` and their ``--against`` partners (``pairing``, ``mine`` -> theirs),
        comparing each pair: (modules, comparisons, against modules, unchanged, against's unchanged)."""
        against_modules, frames = self.against(other, primary, pairing) if other else ([], {})
        modules, comparisons = [], []
        for update in primary.updates(set(mine), self.plan):
            ref = (other.ranks.get(pairing[update.name]) if update.name in pairing else None) \
                or self.config.reference_rank
            modules.append(self.measure(update, ref, "checkpoint", self.evidence.get(update.name)))
            if pairing.get(update.name) in frames:
                comparisons.append(compare(update.name, pairing[update.name],
                                           frame_of(update, self.config.grid_max), frames.pop(pairing[update.name]),
                                           self.config.k, self.config.reference_rank))
        return modules, comparisons, against_modules, list(primary.unchanged), list(other.unchanged if other else ())

    def measure(self, update: Update, reference_rank: int, role: str, evidence: GradientEvidence | None = None
                ) -> ModuleAnalysis:
        result = measure(update, reference_rank, self.config, module_generator(self.config.seed, role, update.name),
                         evidence, self.model_verdict if role == "checkpoint" else None)
        release_freed_memory()
        self.done += 1
        report(self.progress, "analyze", self.done, self.total, update.name)
        return result

    def against(self, other, primary, pairing: dict[str, str]) -> tuple[list[ModuleAnalysis], dict[str, Frame]]:
        """Analyze the ``--against`` update's matched modules, keeping their top singular vectors."""
        theirs_to_mine = {theirs: mine for mine, theirs in pairing.items()}
        modules, frames = [], {}
        for update in other.updates(set(theirs_to_mine), self.plan):
            ref = primary.ranks.get(theirs_to_mine[update.name]) or self.config.reference_rank
            modules.append(self.measure(update, ref, "against"))
            frames[update.name] = frame_of(update, self.config.grid_max)
        return modules, frames


def module_generator(seed: int, role: str, name: str) -> torch.Generator:
    """The random generator of one module's draws (amplification's random frames): seeded by ``seed``, the
    module's ``role`` ('checkpoint' or 'against') and ``name`` only, so a module's numbers do not depend on which
    modules were analyzed before it, nor on which process analyzed it."""
    digest = hashlib.sha256(f"{seed}/{role}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))


def _plan(config: AnalyzeConfig, with_base: bool, primary, other, device: torch.device) -> Plan:
    """How the run decomposes modules: full deltas keep enough leading vectors for amplification at any judged
    rank and for the phi grid, when base metrics or a comparison need vectors at all."""
    ranks = [*primary.ranks.values(), *(other.ranks.values() if other else ())]
    keep = max(config.grid_max, config.reference_rank, *ranks) if with_base or other is not None else 0
    return Plan(DTYPES[config.dtype], device, with_base, keep, config.intruder_k, config.fast,
                config.seed, Path(config.cache).expanduser() if config.cache else None)


def _union(first, second) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def _settings(config: AnalyzeConfig, primary, with_base: bool) -> dict:
    settings = {"dtype": config.dtype, "device": config.device, "k": config.k, "reference_rank": config.reference_rank,
                "grid_max": config.grid_max, "base_metrics": with_base, "intruder_k": config.intruder_k,
                "intruder_epsilon": config.intruder_epsilon, "modules": config.modules, "seed": config.seed,
                "fast": config.fast}
    if isinstance(primary, LoraSource):
        adapter = primary.adapter.peft_summary()
        settings["adapter"] = {"r": adapter.r, "lora_alpha": adapter.lora_alpha, "use_rslora": adapter.use_rslora,
                               "rank_pattern": dict(adapter.rank_pattern), "alpha_pattern": dict(adapter.alpha_pattern),
                               "target_modules": list(adapter.target_modules) if not isinstance(
                                   adapter.target_modules, str) else adapter.target_modules,
                               "modules_to_save": list(adapter.modules_to_save),
                               "base_model_name_or_path": adapter.base_model_name_or_path}
    return settings
