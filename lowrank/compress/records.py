"""What ``extract`` and ``resize`` return and write as JSON (schema ``lowrank.compress/1``): frozen records.

Per module (``norm`` is ``||dW||_F``): the kept rank ``k`` of the update's ``rank_available`` directions, kept energy
``e_k = sum(S[:k]^2) / sum(S^2)``, relative Frobenius error ``sqrt(1 - e_k)``, and parameters ``k (m + n)`` against
the dense ``m n``. A module is *not worth it* when its factors are no smaller than the dense update.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SCHEMA = "lowrank.compress/1"


@dataclass(frozen=True)
class ModuleRecord:
    name: str
    shape: tuple[int, int]
    kind: str
    rank_available: int
    rank: int
    kept_energy: float
    relative_error: float
    parameters: int
    dense_parameters: int
    original_rank: int | None = None
    norm: float = 0.0

    @property
    def worth_it(self) -> bool:
        """True when the rank-``k`` factors hold fewer numbers than the dense update."""
        return self.parameters < self.dense_parameters


@dataclass(frozen=True)
class Evaluation:
    """Held-out metrics of the original (full model or adapter) and of the new adapter, on ``data``."""

    data: str
    metric: str
    original: dict
    compressed: dict


@dataclass(frozen=True)
class CompressReport:
    """Everything one ``extract`` / ``resize`` run did.

    ``carried`` lists tensors copied in full (heads, ``--save-modules``, biases); ``not_carried`` names changed
    tensors the adapter leaves out, with their relative change ``||W1 - W0||_F / ||W0||_F``; ``unchanged`` lists
    modules whose update is exactly zero (not adapted).
    """

    command: str
    source: str
    out: str
    target: str
    modules: tuple[ModuleRecord, ...]
    carried: tuple[str, ...] = ()
    carried_parameters: int = 0
    not_carried: dict = field(default_factory=dict)
    unchanged: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    evaluation: Evaluation | None = None

    @property
    def lora_parameters(self) -> int:
        return sum(m.parameters for m in self.modules)

    @property
    def total_energy_kept(self) -> float:
        """Energy kept over all modules, ``sum_i e_i ||dW_i||_F^2 / sum_i ||dW_i||_F^2``."""
        total = sum(m.norm**2 for m in self.modules)
        return 1.0 if total == 0 else sum(m.kept_energy * m.norm**2 for m in self.modules) / total

    def not_worth_it(self) -> list[ModuleRecord]:
        return [m for m in self.modules if not m.worth_it]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["modules"] = [{**asdict(m), "worth_it": m.worth_it} for m in self.modules]
        return {"schema": SCHEMA, **data, "lora_parameters": self.lora_parameters,
                "total_kept_energy": self.total_energy_kept}
