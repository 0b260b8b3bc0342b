"""Frozen result records of ``lowrank analyze``; their ``to_dict()`` is the JSON contract ``lowrank.analysis/1``.

Every record converts to plain JSON types (tuples become lists) and back: ``Record.from_dict(r.to_dict()) == r``.
Fields that users and scripts rely on: ``schema``; per module ``name, shape, kind, rank, singular_values,
energy_rank, effective_rank, stable_rank, verdict, suggested_rank``; per comparison ``name, k, phi,
principal_angles_deg``. The others are additions; fields may be added, none of these removed.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields

from lowrank.errors import LowrankError
from lowrank.analysis.subspaces import Amplification, Intruders

SCHEMA = "lowrank.analysis/1"
VERDICTS = ("raise r", "adequate", "lower r", "not judged")
STATES = ("not converged", "collapsed")  # model-level verdicts of an adapter that is not at a trained point
MODEL_VERDICTS = ("raise r", "adequate", "lower r", *STATES)


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class _Record:
    """to_dict/from_dict for flat records; records with nested records override ``_nested``."""

    _nested: dict = {}

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict):
        if not isinstance(data, dict):
            raise LowrankError(f"{cls.__name__} record must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in fields(cls) if f.name in data or f.default is MISSING]
        missing = [n for n in names if n not in data]
        if missing:
            raise LowrankError(f"{cls.__name__} record lacks keys {missing}")
        values = {}
        for name in names:
            raw = data[name]
            nested = cls._nested.get(name)
            if nested is None or raw is None:
                values[name] = dict(raw) if isinstance(raw, dict) else _tuples(raw)
            elif isinstance(raw, list):
                values[name] = tuple(nested.from_dict(item) for item in raw)
            else:
                values[name] = nested.from_dict(raw)
        return cls(**values)


@dataclass(frozen=True)
class Sufficiency(_Record):
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
class ProbeDifference(_Record):
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
class Probe(_Record):
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
class ModelSufficiency(_Record):
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


@dataclass(frozen=True)
class DoraParts(_Record):
    """A DoRA module's update ``dW = diag(m/n) (W0 + s B A) - W0`` in parts (:mod:`lowrank.adapters.variants`).

    Attributes:
        directional_singular_values: of the low-rank directional term ``s B A``, descending (all ``r``).
        magnitude_change: ``||m - n0|| / ||n0||``, how far the learned magnitudes moved from W0's row norms.
        factor_min, factor_max: the range of the per-row rescaling ``m / n`` applied to ``W0 + s B A``.
    """

    directional_singular_values: tuple[float, ...]
    magnitude_change: float
    factor_min: float
    factor_max: float


@dataclass(frozen=True)
class TrainedInFull(_Record):
    """A module an adapter file stores in full (peft's modules_to_save, a head, an embedding), not as LoRA."""

    name: str
    parameters: int


@dataclass(frozen=True)
class ModuleAnalysis(_Record):
    """The spectrum of one module's update and the rank verdict drawn from it.

    Attributes:
        name: module path in the model, without peft's ``base_model.model.`` prefix.
        shape: ``(out, in)`` of the update as applied to the weight (Conv1D reported as ``(out, in)`` too).
        kind: ``"lora"`` (``scale * B @ A``) or ``"full"`` (``W1 - W0``).
        layer_kind: ``"linear"``, ``"conv1d"`` or ``"embedding"``.
        rank: the adapter rank ``r`` (null for full deltas).
        scale: the LoRA scaling applied (``alpha / r`` or ``alpha / sqrt(r)``), null for full deltas.
        singular_values: descending, of the update as applied (scaling included): all ``r`` for LoRA, the top
            ``max(64, k99)`` for full deltas.
        num_singular_values: how many singular values the update has in all (``min(out, in, r)``).
        frobenius_norm: ``||dW||_F = sqrt(sum of all s^2)`` (over all values, kept or not).
        energy_rank: ``{"0.5": k, "0.9": k, "0.99": k}``, smallest k holding that fraction of ``||dW||_F^2``.
        effective_rank: Roy & Vetterli's ``exp(entropy of s / sum(s))``.
        stable_rank: ``||dW||_F^2 / ||dW||_2^2``.
        reference_rank: the rank judged: ``r`` for LoRA, the compared LoRA rank or the configured reference for
            full deltas.
        tail_ratio: ``s[reference_rank - 1] / s[0]``.
        energy_at_rank: fraction of ``||dW||_F^2`` kept by the best rank-``reference_rank`` approximation.
        verdict: ``"raise r"``, ``"adequate"``, ``"lower r"``, or ``"not judged"`` (a LoRA update without
            ``--data``: its spectrum alone cannot say whether more rank would help); see :mod:`lowrank.analysis.rank`.
        suggested_rank: the rank recommended for this module.
        evidence: one sentence with the numbers behind the verdict.
        amplification: LoRA paper section 7 amplification against the base weight (when a base was given).
        intruders: intruder dimensions of ``W0 + dW`` against ``W0`` (when a base was given).
        sufficiency: the module's gradient evidence (with ``--data``; evidence, the verdict is the model's).
        variant: for LoRA, the update's form: ``"lora"`` (``s B A``), ``"adalora"``, ``"dora"``, ``"pissa"`` or
            ``"olora"`` (``s (B A - B0 A0)``, rank up to ``2r``); null for full deltas.
        dora: a DoRA update's directional and magnitude parts.
        route: ``"exact"`` or ``"sketch"`` (``--fast``, full deltas: :mod:`lowrank.sketch`). Under ``"sketch"``,
            ``singular_values`` are the sketch's top ``sketch_size`` values (each a lower bound of the true one),
            ``energy_rank`` holds each interval's upper end (a rank that surely keeps that fraction),
            ``energy_at_rank`` its lower bound, ``effective_rank`` and ``stable_rank`` estimates (the unsketched
            energy spread evenly; ``||dW||_F^2 / s_1(B)^2``); ``frobenius_norm`` stays exact.
        energy_rank_bounds: ``{"0.9": [lo, hi], ...}``, the interval certain to hold each energy rank (``[k, k]``
            when exact; null in reports written before it existed).
        sketch_size: the sketch's column count ``l`` (route ``"sketch"``), else null.
    """

    name: str
    shape: tuple[int, int]
    kind: str
    layer_kind: str
    rank: int | None
    scale: float | None
    singular_values: tuple[float, ...]
    num_singular_values: int
    frobenius_norm: float
    energy_rank: dict
    effective_rank: float
    stable_rank: float
    reference_rank: int
    tail_ratio: float
    energy_at_rank: float
    verdict: str
    suggested_rank: int
    evidence: str
    amplification: Amplification | None
    intruders: Intruders | None
    sufficiency: Sufficiency | None = None
    variant: str | None = None
    dora: DoraParts | None = None
    route: str = "exact"
    energy_rank_bounds: dict | None = None
    sketch_size: int | None = None

    _nested = {"amplification": Amplification, "intruders": Intruders, "sufficiency": Sufficiency,
               "dora": DoraParts}

    def __post_init__(self) -> None:
        if self.kind not in ("lora", "full"):
            raise LowrankError(f"module {self.name}: kind must be 'lora' or 'full', got {self.kind!r}")
        if self.route not in ("exact", "sketch"):
            raise LowrankError(f"module {self.name}: route must be 'exact' or 'sketch', got {self.route!r}")
        if self.verdict not in VERDICTS:
            raise LowrankError(f"module {self.name}: verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Comparison(_Record):
    """Two updates of the same module compared through their top singular subspaces (LoRA paper section 7.2).

    Attributes:
        name: module path (of the analyzed checkpoint); ``other_name`` the matching path in ``--against``.
        k: subspace dimension compared.
        dim: ``out``, the dimension of the space the left singular vectors live in.
        phi: Eq. 4 subspace similarity of the top-``k`` left singular subspaces, in ``[0, 1]``.
        phi_random: its expectation for random subspaces, ``k / dim``.
        phi_right: the same for the right singular subspaces (input side, the LoRA paper's ``A`` side).
        principal_angles_deg: the ``k`` principal angles between the left subspaces, ascending, in degrees.
        grassmann_distance: ``||angles||_2`` in radians.
        phi_grid: ``phi(i, j)`` for ``i <= grid_i``, ``j <= grid_j`` (rows: this update, columns: the other).
    """

    name: str
    other_name: str
    k: int
    dim: int
    phi: float
    phi_random: float
    phi_right: float
    principal_angles_deg: tuple[float, ...]
    grassmann_distance: float
    phi_grid: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Threshold(_Record):
    """A documented decision threshold: its ``name``, ``value`` and why it is set there."""

    name: str
    value: float
    justification: str


@dataclass(frozen=True)
class TypeSummary(_Record):
    """One module type (``attention.self.query``, ``mlp.down_proj``, ...) over all layers."""

    type: str
    modules: int
    median_k90: float
    max_k90: int
    median_effective_rank: float
    verdicts: dict


@dataclass(frozen=True)
class Recommendation(_Record):
    """A peft ``LoraConfig`` fragment: ``r`` for most modules, ``rank_pattern`` for the rest, and an
    ``alpha_pattern`` that keeps each module's scaling ``alpha / r`` (null when the adapter's alpha is unknown)."""

    r: int
    lora_alpha: float | None
    rank_pattern: dict
    alpha_pattern: dict
    parameters_now: int
    parameters_suggested: int


@dataclass(frozen=True)
class Summary(_Record):
    """Model-level view: verdict counts, per-type summaries, the headline sentence and the recommendation."""

    modules: int
    verdicts: dict
    by_type: tuple[TypeSummary, ...]
    headline: str
    recommendation: Recommendation

    _nested = {"by_type": TypeSummary, "recommendation": Recommendation}


@dataclass(frozen=True)
class AnalysisReport(_Record):
    """Everything ``lowrank analyze`` found; ``to_dict()`` is the ``lowrank.analysis/1`` JSON document.

    ``modules`` analyze CHECKPOINT; with ``--against``, ``against_modules`` analyze CHECKPOINT2 and
    ``comparisons`` pair them. ``only_in_checkpoint`` / ``only_in_against`` list modules without a partner on the
    other side of the comparison; ``only_in_base`` lists base weights that a full CHECKPOINT lacks and
    ``not_in_base`` full-model weights the base lacks (new task heads: no W0, not analyzed); ``unchanged`` lists
    paired full-model weights with ``W1 == W0`` exactly (frozen during fine-tuning). For an adapter,
    ``adapter_format`` says which layout was read (``"peft"``, ``"kohya"``, ``"diffusers"``), ``trained_in_full``
    lists the modules its file stores in full, and ``notes`` what the reader resolved (e.g. fan_in_fan_out).
    ``base_from`` says where ``base`` came from: ``"given"`` (``--base``) or ``"base_model_name_or_path"`` (the
    adapter config's, a local folder, taken when no base was given); null without a base.
    """

    schema: str
    checkpoint: str
    checkpoint_kind: str
    base: str | None
    against: str | None
    against_kind: str | None
    settings: dict
    thresholds: tuple[Threshold, ...]
    summary: Summary
    modules: tuple[ModuleAnalysis, ...]
    comparisons: tuple[Comparison, ...]
    against_modules: tuple[ModuleAnalysis, ...]
    only_in_checkpoint: tuple[str, ...]
    only_in_against: tuple[str, ...]
    only_in_base: tuple[str, ...]
    not_in_base: tuple[str, ...]
    unchanged: tuple[str, ...]
    sufficiency: ModelSufficiency | None = None
    adapter_format: str | None = None
    trained_in_full: tuple[TrainedInFull, ...] = ()
    notes: tuple[str, ...] = ()
    base_from: str | None = None

    _nested = {"thresholds": Threshold, "summary": Summary, "modules": ModuleAnalysis,
               "comparisons": Comparison, "against_modules": ModuleAnalysis, "sufficiency": ModelSufficiency,
               "trained_in_full": TrainedInFull}

    def __post_init__(self) -> None:
        if self.schema != SCHEMA:
            raise LowrankError(f"analysis schema must be {SCHEMA!r}, got {self.schema!r}")
