"""The data verdict's records in the ``lowrank.analysis/1`` report (``lowrank analyze --data``): the model-level
:class:`ModelSufficiency` with the probe behind it (:class:`Probe`, :class:`ProbeDifference`), and each LoRA module's
gradient evidence (:class:`Sufficiency`)."""

from __future__ import annotations

from dataclasses import dataclass

from lowrank.analysis.record import Record
from lowrank.errors import LowrankError

STATES = ("not converged", "collapsed")  # model-level verdicts of an adapter that is not at a trained point
MODEL_VERDICTS = ("raise r", "adequate", "lower r", *STATES)


@dataclass(frozen=True)
class Sufficiency(Record):
    """One LoRA module's gradient evidence with ``--data`` (:mod:`lowrank.advice.sufficiency.gradient_evidence`):
    evidence shown beside the verdict, which comes from the model's probe (:class:`Probe`).

    Attributes:
        signal_to_noise: ``sum_{i<=r} sigma_i(G_out)^2`` over what sampling noise puts there (about 1 for noise).
        doubling_gain: ``sum_{i<=r} sigma_i(G_out)^2 / sum_{i<=r} sigma_i(G0)^2``: the first-order descent ``r``
            more directions would find, relative to what the first ``r`` found at the start of training.
        outside_fraction: ``||G_out||_F^2 / ||G||_F^2``, the share of the gradient the adapter cannot follow.
        gradient_norm, base_gradient_norm: ``||G||_F`` at the trained point and ``||G0||_F`` at the base.
        gain_curve: the descent ``k`` more directions would find, ``k = 1 .. min(2r, 64)``, same normalization.
    """

    signal_to_noise: float
    doubling_gain: float
    outside_fraction: float
    gradient_norm: float
    base_gradient_norm: float
    gain_curve: tuple[float, ...]


@dataclass(frozen=True)
class ProbeDifference(Record):
    """A paired held-out difference of the probe (:class:`lowrank.advice.sufficiency.probe.Difference`), worse arm minus
    better.

    Attributes:
        loss: ``mean_i (l_worse,i - l_better,i)`` over the held-out examples; loss_se: its standard error.
        relative: ``loss / L``, a fraction of the same rank's held-out loss ``L`` after the continuation (null
            when ``L`` is 0).
        accuracy: the better arm's accuracy minus the worse arm's, in points; accuracy_se: its standard error
            (both null for language modelling).
    """

    loss: float
    loss_se: float
    relative: float | None
    accuracy: float | None
    accuracy_se: float | None


@dataclass(frozen=True)
class Probe(Record):
    """What the probe measured (:mod:`lowrank.advice.sufficiency.probe`): the trained adapter continued at ranks ``r``,
    ``2r`` and ``r/2`` for ``steps`` steps each, on the same batches, at ``lr_scale`` times the run's learning rates,
    scored on ``heldout_examples`` held-out examples (language modelling: blocks).

    Attributes:
        rank: the adapter's largest module rank ``r``.
        steps: steps per arm, :data:`lowrank.advice.sufficiency.verdict.PROBE_FRACTION` of ``run_steps``.
        run_steps: the run's optimizer steps; run_steps_from_metrics: whether they (and ``lr``, ``head_lr``,
            ``batch_size``) came from the adapter folder's metrics.json (else defaults: 300 steps, batch 32).
        lr_scale, lr, head_lr, batch_size: the continuation's peak rates are ``lr_scale * lr`` (LoRA factors) and
            ``lr_scale * head_lr`` (modules trained in full), with warmup and linear decay to 0.
        heldout_examples: how many held-out examples (LM: blocks) scored every arm.
        trained_loss, trained_accuracy: the trained adapter's held-out loss and accuracy (a fraction; null for LM).
        loss, accuracy: the same rank's after the continuation (``L``).
        doubling: ``L - L_2r`` (null when every module is already at full rank ``min(out, in)``).
        halving: ``L_r/2 - L`` (null at ``r = 1``).
        continuation: ``L_trained - L``, what training on at ``r`` bought.
        seconds: the probe's wall time.
        quartering: ``L_r/4 - L``, run only where "lower r" is in question (halving cost below ``lower_below``,
            ``r > 2``); null otherwise and in reports written before it.
    """

    rank: int
    steps: int
    run_steps: int
    run_steps_from_metrics: bool
    lr_scale: float
    lr: float
    head_lr: float
    batch_size: int
    heldout_examples: int
    trained_loss: float
    trained_accuracy: float | None
    loss: float
    accuracy: float | None
    doubling: ProbeDifference | None
    halving: ProbeDifference | None
    continuation: ProbeDifference
    seconds: float
    quartering: ProbeDifference | None = None

    _nested = {"doubling": ProbeDifference, "halving": ProbeDifference, "continuation": ProbeDifference,
               "quartering": ProbeDifference}


@dataclass(frozen=True)
class ModelSufficiency(Record):
    """The model-level data verdict: first whether the adapter is at a trained point, then, if it is, the probe's
    held-out losses at ranks ``r``, ``2r`` and ``r/2`` against the thresholds
    (:mod:`lowrank.advice.sufficiency.verdict`).

    Attributes:
        data: the dataset of the probe and the gradients; examples: how many training examples the gradient
            evidence was taken on (0 when none was taken: collapsed, or not converged by the loss trend).
        signal_to_noise: ``sum over modules of outside energy / sum of noise energy`` (:mod:`lowrank.advice.
            sufficiency`): evidence only, it does not decide the verdict (null when not measured). Reports written
            before the probe existed were decided by it, against raise_above / lower_below.
        doubling_gain: ``sum over modules of outside energy / sum of start energy`` (evidence; null when not
            measured).
        verdict: "raise r", "adequate" or "lower r" (:func:`lowrank.advice.sufficiency.verdict.judge` on ``probe``); or,
            for an adapter that is not at a trained point and gets no rank advice, "collapsed" (its held-out loss is no
            better than a baseline's) or "not converged" (its training loss is still falling,
            :mod:`lowrank.advice.sufficiency.trained_point`, or the probe's same-rank continuation still raised its
            held-out accuracy, :func:`lowrank.advice.sufficiency.verdict.unfinished`). suggested_r: the global rank the verdict implies (``2r``
            capped by the largest ``min(out, in)``, ``r // 2``, or the current r, also for the two states).
        raise_above: :data:`lowrank.advice.sufficiency.verdict.RAISE_GAIN`: "raise r" when doubling lowers the held-out
            loss by more than this fraction of it (``probe.doubling.relative``), and by more than ``raise_se`` standard
            errors. lower_below: :data:`lowrank.advice.sufficiency.verdict.LOWER_COST`: "lower r" when halving raises it
            by less than this fraction (``probe.halving.relative``). Both calibrated by retraining
            (reports/rank_advice.md).
        seconds: time spent on the held-out evaluation, the gradients and the probe.
        state_evidence: the sentence with the numbers behind "collapsed" or "not converged" (null otherwise).
        held_out: the adapter on the data's held-out split (:class:`lowrank.advice.sufficiency.held_out.HeldOut`):
            metrics, baselines (``constant_loss``, ``majority`` or ``base_loss``) and ``collapsed`` (the reason, or
            null).
        trend: the training loss at the end of the run, from the adapter folder's metrics.json
            (:class:`lowrank.advice.sufficiency.trained_point.Trend`: steps, first_steps, earlier_steps, last_steps,
            first, earlier, last, drop, standard_error, sigmas, falling); null without a metrics.json or with too few
            steps to tell.
        probe: what the probe measured (:class:`Probe`); null when no rank is judged.
        raise_se: :data:`lowrank.advice.sufficiency.verdict.RAISE_SE` (null in reports written before the probe).
        raise_cost: :data:`lowrank.advice.sufficiency.verdict.RAISE_COST`: raise r also when halving costs more than
            this fraction of the loss at r (``probe.halving.relative``; null in reports written before it).
        loss_on: what instruction data's losses and gradients were taken on, "completion" or "all" (it changes
            nothing for plain text or labelled data; null in reports written before it).
        raise_above_first: :data:`lowrank.advice.sufficiency.verdict.FIRST_GAIN`: the doubling gain "raise r" needs
            at r = 1, where there is no halved arm (null in reports written before it: raise_above).
        lower_quarter: :data:`lowrank.advice.sufficiency.verdict.LOWER_QUARTER`: "lower r" also needs the
            quartering cost (``probe.quartering.relative``) below this, where measured (null in reports written
            before it).
    """

    data: str
    examples: int
    signal_to_noise: float | None
    doubling_gain: float | None
    verdict: str
    suggested_r: int
    raise_above: float
    lower_below: float
    seconds: float
    state_evidence: str | None = None
    held_out: dict | None = None
    trend: dict | None = None
    probe: Probe | None = None
    raise_se: float | None = None
    raise_cost: float | None = None
    loss_on: str | None = None
    raise_above_first: float | None = None
    lower_quarter: float | None = None

    _nested = {"probe": Probe}

    def __post_init__(self) -> None:
        if self.verdict not in MODEL_VERDICTS:
            raise LowrankError(f"data verdict must be one of {MODEL_VERDICTS}, got {self.verdict!r}")
