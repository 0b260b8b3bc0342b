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
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lowrank.advice import probe as probing
from lowrank.advice import verdict as verdicts
from lowrank.advice.held_out import HeldOut, held_out_check
from lowrank.advice.measure import MeasureConfig
from lowrank.advice.measure import measure as measure_signals
from lowrank.advice.trained_point import Trend, loss_trend
from lowrank.advice.sufficiency import (CALIBRATED_EXAMPLES, Signals, model_doubling_gain, model_signal_to_noise,
                                        suggested_rank)
from lowrank.advice.verdict import HELDOUT_EXAMPLES, LOWER_COST, PROBE_LR_SCALE, RAISE_COST, RAISE_GAIN, RAISE_SE
from lowrank.analysis import rank as ranking
from lowrank import distributed, spectra
from lowrank.analysis import fast, subspaces
from lowrank.checkpoints import find_name, open_checkpoint
from lowrank.analysis.config import DTYPES, ENERGY_LEVELS, MIN_KEPT, AnalyzeConfig
from lowrank.analysis.results import (SCHEMA, AnalysisReport, Comparison, ModelSufficiency, ModuleAnalysis, Probe,
                                      ProbeDifference, Sufficiency, TrainedInFull)
from lowrank.analysis.decompose import Plan
from lowrank.analysis.sharding import NotMain, gathered, merged, on_main, rank_device, shares
from lowrank.analysis.sources import LoraSource, Update, open_source
from lowrank.assets import resolve_model_path
from lowrank.cpu import release_freed_memory
from lowrank.distributed import SINGLE, World
from lowrank.errors import LowrankError
from lowrank.jsonfile import read_json_object
from lowrank.progress import ProgressCallback, report

__all__ = ["AnalyzeConfig", "analyze"]


def measure(update: Update, reference_rank: int, config: AnalyzeConfig, generator: torch.Generator,
            signals: Signals | None = None, model_verdict: str | None = None) -> ModuleAnalysis:
    """Spectrum, rank measures, verdict and (with a base) amplification and intruders of one update; a LoRA
    update's verdict is the model's data verdict ``model_verdict`` (``--data``), with its gradient ``signals`` as
    evidence, else it is not judged."""
    s = update.svd.S.detach().to(torch.float64).cpu()
    shape = update.svd.shape
    limit = min(shape)
    energy = {level: spectra.energy_rank(s, float(level)) for level in ENERGY_LEVELS}
    bounds = {level: [k, k] for level, k in energy.items()}
    r = min(update.rank if update.kind == "lora" else reference_rank, limit)
    tail, captured = spectra.tail_ratio(s, r), spectra.energy_captured(s, r)
    norm, effective, stable = float(torch.linalg.vector_norm(s)), spectra.effective_rank(s), spectra.stable_rank(s)
    if update.sketch is not None:  # --fast: energy ranks as intervals (lowrank.analysis.fast)
        bounded = fast.bounded_measures(update.sketch, r, ENERGY_LEVELS)
        energy, bounds, captured, tail = bounded.energy, bounded.bounds, bounded.captured[0], bounded.tail_ratio
        norm, effective, stable = math.sqrt(update.sketch.total), bounded.effective_rank, bounded.stable_rank
        verdict = fast.judge_bounded(r, bounded, limit, update.sketch.size)
        kept = s
    elif update.kind == "lora":
        verdict = ranking.judge_lora(update.rank, energy["0.9"], energy["0.99"], tail, limit, signals, model_verdict)
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
        amplification=amp, intruders=intr, sufficiency=_sufficiency(signals), variant=update.variant,
        dora=update.dora, route="exact" if update.sketch is None else "sketch", energy_rank_bounds=bounds,
        sketch_size=update.sketch.size if update.sketch is not None else None)


def _sufficiency(signals: Signals | None) -> Sufficiency | None:
    if signals is None:
        return None
    return Sufficiency(signal_to_noise=signals.signal_to_noise, doubling_gain=signals.doubling_gain,
                       outside_fraction=signals.outside_fraction,
                       gradient_norm=signals.gradient_norm, base_gradient_norm=signals.base_gradient_norm,
                       gain_curve=signals.gain_curve)


def data_verdict(config: AnalyzeConfig, source, progress: ProgressCallback | None
                 ) -> tuple[dict[str, Signals], ModelSufficiency]:
    """The model-level verdict of a LoRA ``source`` on ``config.data``: first its state (:func:`point_state`); at a
    trained point, the probe's verdict (:func:`probe_verdict`), with every module's gradient signals as evidence
    (they do not decide)."""
    if not isinstance(source, LoraSource):
        raise LowrankError(f"--data judges LoRA adapters; {source.path} is a full model (its delta's verdict "
                           "comes from its spectrum)")
    if source.adapter.format != "peft" or source.config.variant != "lora":
        raise LowrankError(f"--data judges plain peft LoRA adapters; {source.path} is a {source.adapter.format} "
                           f"{source.config.variant} adapter")
    state = point_state(config, source, progress)
    if state.verdict is not None:
        return {}, state.sufficiency(config.data, source.config.r)
    measured = measure_signals(MeasureConfig(adapter=str(source.path), base=config.base, data=config.data,
                                             examples=CALIBRATED_EXAMPLES, max_length=config.max_length,
                                             seed=config.seed, device=config.device), progress)
    verdict, probe = probe_verdict(config, source, progress)
    signals = list(measured.signals.values())
    limit = max(min(shape) for shape in source.shapes.values())
    return measured.signals, ModelSufficiency(
        data=config.data, examples=measured.examples, signal_to_noise=model_signal_to_noise(signals),
        doubling_gain=model_doubling_gain(signals), verdict=verdict,
        suggested_r=suggested_rank(verdict, source.config.r, limit), raise_above=RAISE_GAIN,
        lower_below=LOWER_COST, seconds=state.seconds + measured.seconds + probe.seconds, probe=probe,
        raise_se=RAISE_SE, raise_cost=RAISE_COST, **state.evidence())


def probe_verdict(config: AnalyzeConfig, source: LoraSource, progress: ProgressCallback | None
                  ) -> tuple[str, Probe]:
    """Continue the adapter at ranks r, 2r and r/2 for ``n`` = PROBE_FRACTION of its run's steps, at
    PROBE_LR_SCALE times its learning rates on a schedule of HORIZON_FRACTION of its steps, on its batch size
    (metrics.json, else the defaults), score each on
    HELDOUT_EXAMPLES held-out examples (:mod:`lowrank.advice.probe`), and judge
    ``verdict.judge(L - L_2r, L_r/2 - L, L)`` (:mod:`lowrank.advice.verdict`)."""
    began = time.perf_counter()
    settings = verdicts.run_settings(source.path, *verdicts.default_rates(config.base, source.config.task_type))
    n = settings.probe_steps
    setup = probing.load(str(source.path), config.base, config.data, n, settings.batch_size, HELDOUT_EXAMPLES,
                         config.max_length, settings.lr, settings.head_lr, config.seed)
    result = probing.probe(setup, {"same": (n,), "doubled": (n,), "halved": (n,)}, torch.device(config.device),
                           config.seed, PROBE_LR_SCALE, progress, settings.horizon_steps)
    same = result.arms["same"][n]
    verdict = verdicts.judge(result.doubling(n), result.halving(n), same.loss)
    return verdict, Probe(
        rank=result.rank, steps=n, run_steps=settings.steps, run_steps_from_metrics=settings.from_metrics,
        lr_scale=PROBE_LR_SCALE, lr=settings.lr, head_lr=settings.head_lr, batch_size=settings.batch_size,
        heldout_examples=len(setup.heldout), trained_loss=result.trained.loss,
        trained_accuracy=result.trained.accuracy, loss=same.loss, accuracy=same.accuracy,
        doubling=_difference(result.doubling(n), same.loss), halving=_difference(result.halving(n), same.loss),
        continuation=_difference(result.continuation(n), same.loss), seconds=time.perf_counter() - began)


def _difference(difference: probing.Difference | None, loss: float) -> ProbeDifference | None:
    """A probe difference as its record, with ``relative = difference / loss`` (:func:`verdict.relative`)."""
    if difference is None:
        return None
    return ProbeDifference(loss=difference.loss, loss_se=difference.loss_se,
                           relative=verdicts.relative(difference, loss), accuracy=difference.accuracy,
                           accuracy_se=difference.accuracy_se)


@dataclass(frozen=True)
class PointState:
    """Whether an adapter is at a trained point: ``verdict`` "collapsed", "not converged" or None (trained), with
    the held-out check, the loss trend (None without metrics.json) and the seconds the check took."""

    verdict: str | None
    held_out: HeldOut
    trend: Trend | None
    seconds: float

    def evidence(self) -> dict:
        """The :class:`ModelSufficiency` fields that carry the state's numbers."""
        reason = self.held_out.collapsed if self.verdict == "collapsed" else \
            f"the training loss is still falling: {self.trend.describe()}" if self.verdict else None
        return {"state_evidence": reason, "held_out": self.held_out.to_dict(),
                "trend": self.trend.to_dict() if self.trend else None}

    def sufficiency(self, data: str, r: int) -> ModelSufficiency:
        """The model-level record of an adapter that gets no rank advice (suggested r: its own)."""
        return ModelSufficiency(data=data, examples=0, signal_to_noise=None, doubling_gain=None, verdict=self.verdict,
                                suggested_r=r, raise_above=RAISE_GAIN, lower_below=LOWER_COST, seconds=self.seconds,
                                raise_se=RAISE_SE, **self.evidence())


def point_state(config: AnalyzeConfig, source: LoraSource, progress: ProgressCallback | None) -> PointState:
    """The adapter's state: "collapsed" when its held-out loss is no better than a baseline's
    (:func:`held_out_check`), else "not converged" when the adapter folder's metrics.json says the training loss
    was still falling at the end (:func:`loss_trend`), else None: a trained point, which rank advice may judge."""
    began = time.perf_counter()
    report(progress, "held-out evaluation", 0, 1)
    held_out = held_out_check(str(source.path), config.base, config.data, config.max_length, config.seed,
                              config.device)
    report(progress, "held-out evaluation", 1, 1)
    trend = _trend(Path(source.path) / "metrics.json")
    verdict = "collapsed" if held_out.collapsed else "not converged" if trend is not None and trend.falling else None
    return PointState(verdict, held_out, trend, time.perf_counter() - began)


def _trend(path: Path) -> Trend | None:
    """The loss trend of the run that wrote ``path`` (a training metrics.json), or None when there is none."""
    if not path.is_file():
        return None
    history = read_json_object(path).get("history")
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise LowrankError(f"{path}: 'history' must be a list of objects (as lowrank train writes it)")
    try:
        return loss_trend(history)
    except (TypeError, ValueError) as error:
        raise LowrankError(f"{path}: a training loss in 'history' is not a number ({error})") from None


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


def analyze(config: AnalyzeConfig, progress: ProgressCallback | None = None,
            world: World = SINGLE) -> AnalysisReport | None:
    """Analyze ``config.checkpoint`` (and compare it with ``config.against``); see :class:`AnalyzeConfig`.

    With a ``world`` of several processes (called inside :func:`lowrank.distributed.joined` on every rank, as
    ``torchrun`` or ``lowrank analyze --nproc N`` run it) each rank streams and decomposes its share of the modules
    (:mod:`lowrank.analysis.sharding`: every ``size``-th one, its ``--against`` partner with it) on its own device
    (``cuda:LOCAL_RANK`` on CUDA); rank 0 gathers the measures, restores the single-process order and returns the
    report, identical to one process's; the other ranks return None. ``--data``'s verdict (held-out check, probe,
    gradient signals) is measured once, on rank 0, and broadcast (the other ranks wait up to
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
        return _analyze(config, progress, world)
    except NotMain:
        return None


def _analyze(config: AnalyzeConfig, progress: ProgressCallback | None, world: World) -> AnalysisReport:
    base = open_checkpoint(resolve_model_path(config.base), config.allow_pickle) if config.base else None
    with_base = base is not None and config.base_metrics
    primary = open_source(config.checkpoint, base, config)
    other = open_source(config.against, base, config) if config.against else None
    names = _selected(primary.names, config.modules)
    if not names:
        raise LowrankError(f"no module of {primary.path} matches --modules {config.modules!r}")
    pairing = _pairing(names, _selected(other.names, config.modules)) if other else {}
    signals, sufficiency = on_main(world, lambda: data_verdict(config, primary, progress)) if config.data \
        else ({}, None)
    mine = shares(names, pairing, world.size)[world.rank]
    plan = _plan(config, with_base, primary, other, rank_device(config.device, world))
    run = _Run(config, plan, progress, len(mine) + len(set(pairing[n] for n in mine if n in pairing)), signals,
               sufficiency.verdict if sufficiency else None)
    shares_done = gathered(world, lambda: run.share(primary, other, mine, {n: pairing[n] for n in mine
                                                                          if n in pairing}))
    modules, comparisons, against_modules, unchanged = merged(shares_done, names, other.names if other else [])
    if not modules:
        raise LowrankError(f"{primary.path}: every matched weight equals the base's; there is no update to analyze")
    rslora = primary.config.use_rslora if isinstance(primary, LoraSource) else False
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
    """``fields`` with :data:`fast.NOTE` added to its notes when ``--fast`` met a full delta."""
    if config.fast and any(m.kind == "full" for m in modules):
        fields = {**fields, "notes": (*fields.get("notes", ()), fast.NOTE)}
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
                 signals: dict[str, Signals], model_verdict: str | None):
        self.config, self.plan, self.progress, self.total = config, plan, progress, total
        self.signals, self.model_verdict = signals, model_verdict
        self.done = 0

    def share(self, primary, other, mine: list[str], pairing: dict[str, str]) -> tuple[list, ...]:
        """Measure CHECKPOINT's modules ``mine`` and their ``--against`` partners (``pairing``, ``mine`` -> theirs),
        comparing each pair: (modules, comparisons, against modules, unchanged, against's unchanged)."""
        against_modules, frames = self.against(other, primary, pairing) if other else ([], {})
        modules, comparisons = [], []
        for update in primary.updates(set(mine), self.plan):
            ref = (other.ranks.get(pairing[update.name]) if update.name in pairing else None) \
                or self.config.reference_rank
            modules.append(self.measure(update, ref, "checkpoint", self.signals.get(update.name)))
            if pairing.get(update.name) in frames:
                comparisons.append(compare(update.name, pairing[update.name],
                                           frame_of(update, self.config.grid_max), frames.pop(pairing[update.name]),
                                           self.config.k, self.config.reference_rank))
        return modules, comparisons, against_modules, list(primary.unchanged), list(other.unchanged if other else ())

    def measure(self, update: Update, reference_rank: int, role: str, signals: Signals | None = None
                ) -> ModuleAnalysis:
        result = measure(update, reference_rank, self.config, module_generator(self.config.seed, role, update.name),
                         signals, self.model_verdict if role == "checkpoint" else None)
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
        adapter = primary.config
        settings["adapter"] = {"r": adapter.r, "lora_alpha": adapter.lora_alpha, "use_rslora": adapter.use_rslora,
                               "rank_pattern": dict(adapter.rank_pattern), "alpha_pattern": dict(adapter.alpha_pattern),
                               "target_modules": list(adapter.target_modules) if not isinstance(
                                   adapter.target_modules, str) else adapter.target_modules,
                               "modules_to_save": list(adapter.modules_to_save),
                               "base_model_name_or_path": adapter.base_model_name_or_path}
    return settings
