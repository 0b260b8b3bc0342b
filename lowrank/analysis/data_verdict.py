"""The data verdict of ``lowrank analyze --data``: is the adapter at a trained point (held-out check, loss trend,
and the probe's same-rank continuation), and, if so, was its rank enough (the probe's held-out losses at r, 2r and r/2,
:mod:`lowrank.advice.sufficiency.verdict`), with each module's gradient evidence
(:mod:`lowrank.advice.sufficiency.gradient_evidence`) beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lowrank.advice.sufficiency import probe as probing
from lowrank.advice.sufficiency import verdict as verdicts
from lowrank.advice.sufficiency.gradient_evidence import (CALIBRATED_EXAMPLES, GradientEvidence, model_doubling_gain,
                                                          model_signal_to_noise)
from lowrank.advice.sufficiency.held_out import HeldOut, held_out_check
from lowrank.advice.sufficiency.measure import MeasureConfig
from lowrank.advice.sufficiency.measure import measure as measure_evidence
from lowrank.advice.sufficiency.trained_point import Trend, loss_trend
from lowrank.advice.sufficiency.verdict import (FIRST_GAIN, HELDOUT_EXAMPLES, LOWER_COST, LOWER_QUARTER, PROBE_LR_SCALE,
                                                RAISE_COST, RAISE_GAIN, RAISE_SE, suggested_rank)
from lowrank.analysis.config import AnalyzeConfig
from lowrank.analysis.data_records import ModelSufficiency, Probe, ProbeDifference
from lowrank.adapters.live import adapter_folder
from lowrank.analysis.sources import LoraSource
from lowrank.errors import LowrankError
from lowrank.jsonfile import read_json_object
from lowrank.progress import ProgressCallback, report


def data_verdict(config: AnalyzeConfig, source, progress: ProgressCallback | None
                 ) -> tuple[dict[str, GradientEvidence], ModelSufficiency]:
    """The model-level verdict of a LoRA ``source`` on ``config.data``: first its state (:func:`point_state`); at a
    trained point, the probe's verdict (:func:`probe_verdict`), with every module's gradient evidence beside it
    (they do not decide). Instruction data's loss is on ``config.loss_on``, else on the run's choice (its
    metrics.json). The base model is loaded with the adapter from its folder (for an adapter held in memory, a
    temporary copy)."""
    if not isinstance(source, LoraSource):
        raise LowrankError(f"--data judges LoRA adapters; {source.path} is a full model (its delta's verdict "
                           "comes from its spectrum)")
    adapter = source.adapter
    if adapter.format != "peft" or adapter.variant != "lora":
        raise LowrankError(f"--data judges plain peft LoRA adapters; {source.path} is a {adapter.format} "
                           f"{adapter.variant} adapter")
    with adapter_folder(adapter) as folder:  # an adapter held in memory is written to a temporary folder
        settings = verdicts.run_settings(folder, *verdicts.default_rates(config.base, adapter.config.task_type))
        loss_on = config.loss_on or settings.loss_on
        state = point_state(config, folder, loss_on, progress)
        if state.verdict is not None:
            return {}, state.sufficiency(config.data, adapter.config.r, loss_on)
        measured = measure_evidence(MeasureConfig(adapter=str(folder), base=config.base, data=config.data,
                                                  examples=CALIBRATED_EXAMPLES, max_length=config.max_length,
                                                  seed=config.seed, device=config.device, loss_on=loss_on), progress)
        verdict, probe = probe_verdict(config, folder, settings, loss_on, progress)
    evidence = list(measured.evidence.values())
    limit = max(min(shape) for shape in source.shapes.values())
    state_evidence = state.evidence()
    unfinished = verdicts.unfinished(probe.continuation)
    if unfinished:  # the same-rank continuation still gained: not a trained point, no rank advice
        verdict, state_evidence["state_evidence"] = "not converged", unfinished
    return measured.evidence, ModelSufficiency(
        data=config.data, examples=measured.examples, signal_to_noise=model_signal_to_noise(evidence),
        doubling_gain=model_doubling_gain(evidence), verdict=verdict,
        suggested_r=adapter.config.r if unfinished else suggested_rank(verdict, adapter.config.r, limit),
        raise_above=RAISE_GAIN, lower_below=LOWER_COST, seconds=state.seconds + measured.seconds + probe.seconds,
        probe=probe, raise_se=RAISE_SE, raise_cost=RAISE_COST, loss_on=loss_on, raise_above_first=FIRST_GAIN,
        lower_quarter=LOWER_QUARTER, **state_evidence)


def probe_verdict(config: AnalyzeConfig, folder: Path, settings: verdicts.RunSettings, loss_on: str,
                  progress: ProgressCallback | None) -> tuple[str, Probe]:
    """Continue the adapter at ranks r, 2r and r/2 (and r/4 where "lower r" is in question,
    :func:`verdict.may_lower`) for ``n`` = PROBE_FRACTION of its run's steps, at PROBE_LR_SCALE times its learning
    rates on a schedule of HORIZON_FRACTION of its steps, on its batch size (``settings``: metrics.json, else the
    defaults), score each on HELDOUT_EXAMPLES held-out examples (:mod:`lowrank.advice.sufficiency.probe`), and judge
    ``verdict.judge(L - L_2r, L_r/2 - L, L_r/4 - L, L)`` (:mod:`lowrank.advice.sufficiency.verdict`)."""
    began = time.perf_counter()
    n = settings.probe_steps
    setup = probing.load(str(folder), config.base, config.data, n, settings.batch_size, HELDOUT_EXAMPLES,
                         config.max_length, settings.lr, settings.head_lr, loss_on, config.seed)

    def lowering_in_question(scores: dict) -> bool:
        return verdicts.may_lower(probing.paired(scores["halved"][n], scores["same"][n]), scores["same"][n].loss)

    result = probing.probe(setup, {"same": (n,), "doubled": (n,), "halved": (n,), "quartered": (n,)},
                           torch.device(config.device), config.seed, PROBE_LR_SCALE, progress, settings.horizon_steps,
                           only_if={"quartered": lowering_in_question})
    same = result.arms["same"][n]
    verdict = verdicts.judge(result.doubling(n), result.halving(n), result.quartering(n), same.loss)
    return verdict, Probe(
        rank=result.rank, steps=n, run_steps=settings.steps, run_steps_from_metrics=settings.from_metrics,
        lr_scale=PROBE_LR_SCALE, lr=settings.lr, head_lr=settings.head_lr, batch_size=settings.batch_size,
        heldout_examples=len(setup.heldout), trained_loss=result.trained.loss,
        trained_accuracy=result.trained.accuracy, loss=same.loss, accuracy=same.accuracy,
        doubling=_difference(result.doubling(n), same.loss), halving=_difference(result.halving(n), same.loss),
        continuation=_difference(result.continuation(n), same.loss), seconds=time.perf_counter() - began,
        quartering=_difference(result.quartering(n), same.loss))


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

    def sufficiency(self, data: str, r: int, loss_on: str) -> ModelSufficiency:
        """The model-level record of an adapter that gets no rank advice (suggested r: its own)."""
        return ModelSufficiency(data=data, examples=0, signal_to_noise=None, doubling_gain=None, verdict=self.verdict,
                                suggested_r=r, raise_above=RAISE_GAIN, lower_below=LOWER_COST, seconds=self.seconds,
                                raise_se=RAISE_SE, loss_on=loss_on, **self.evidence())


def point_state(config: AnalyzeConfig, folder: Path, loss_on: str, progress: ProgressCallback | None) -> PointState:
    """The state of the adapter in ``folder``: "collapsed" when its held-out loss is no better than a baseline's
    (:func:`held_out_check`), else "not converged" when the folder's metrics.json says the training loss
    was still falling at the end (:func:`loss_trend`), else None: a trained point, which rank advice may judge."""
    began = time.perf_counter()
    report(progress, "held-out evaluation", 0, 1)
    held_out = held_out_check(str(folder), config.base, config.data, config.max_length, config.seed, config.device,
                              loss_on)
    report(progress, "held-out evaluation", 1, 1)
    trend = _trend(folder / "metrics.json")
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
