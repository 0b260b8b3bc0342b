"""Frozen result records of ``lowrank analyze``; their ``to_dict()`` is the JSON contract ``lowrank.analysis/1``.

Every record converts to plain JSON types (tuples become lists) and back: ``Record.from_dict(r.to_dict()) == r``.
Fields that users and scripts rely on: ``schema``; per module ``name, shape, kind, rank, singular_values,
energy_rank, effective_rank, stable_rank, verdict, suggested_rank``; per comparison ``name, k, phi,
principal_angles_deg``. The others are additions; fields may be added, none of these removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowrank.analysis.data_records import ModelSufficiency, Sufficiency
from lowrank.analysis.record import Record
from lowrank.analysis.subspaces import Amplification, Intruders
from lowrank.errors import LowrankError

SCHEMA = "lowrank.analysis/1"
VERDICTS = ("raise r", "adequate", "lower r", "not judged")


@dataclass(frozen=True)
class DoraParts(Record):
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
class TrainedInFull(Record):
    """A module an adapter file stores in full (peft's modules_to_save, a head, an embedding), not as LoRA."""

    name: str
    parameters: int


@dataclass(frozen=True)
class ModuleAnalysis(Record):
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
class Comparison(Record):
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
class Threshold(Record):
    """A documented decision threshold: its ``name``, ``value`` and why it is set there."""

    name: str
    value: float
    justification: str


@dataclass(frozen=True)
class TypeSummary(Record):
    """One module type (``attention.self.query``, ``mlp.down_proj``, ...) over all layers."""

    type: str
    modules: int
    median_k90: float
    max_k90: int
    median_effective_rank: float
    verdicts: dict


@dataclass(frozen=True)
class Recommendation(Record):
    """A peft ``LoraConfig`` fragment: ``r`` for most modules, ``rank_pattern`` for the rest, and an
    ``alpha_pattern`` that keeps each module's scaling ``alpha / r`` (null when the adapter's alpha is unknown)."""

    r: int
    lora_alpha: float | None
    rank_pattern: dict
    alpha_pattern: dict
    parameters_now: int
    parameters_suggested: int


@dataclass(frozen=True)
class Summary(Record):
    """Model-level view: verdict counts, per-type summaries, the headline sentence and the recommendation."""

    modules: int
    verdicts: dict
    by_type: tuple[TypeSummary, ...]
    headline: str
    recommendation: Recommendation

    _nested = {"by_type": TypeSummary, "recommendation": Recommendation}


@dataclass(frozen=True)
class AnalysisReport(Record):
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
