"""Was r enough? The rank verdict from the probe's held-out differences (:mod:`lowrank.advice.sufficiency.probe`).

The probe continues the trained adapter at ranks r, 2r and r/2 on the same batches, at :data:`PROBE_LR_SCALE`
times its learning rates on a schedule as long as :data:`HORIZON_FRACTION` of the run's steps (warmup over its first
tenth, then linear decay to 0), and scores each arm on a held-out sample of :data:`HELDOUT_EXAMPLES` at the end of
the schedule (:data:`PROBE_FRACTION` of the run's steps; of the scoring points measured, 0.1, 0.2 and 0.3 of the
run, 0.3 agreed best with retraining, chosen task by task on the other tasks; reports/rank_advice.md). With ``L``
the same rank's held-out loss then, the verdict reads three relative differences:

    doubling gain     g = (L - L_2r) / L        what r more directions bought on held-out data
    halving cost      h = (L_r/2 - L) / L       what the lower half of the rank was worth
    quartering cost   q = (L_r/4 - L) / L       what all but the top quarter was worth (measured only where
                                                "lower r" is in question: h < LOWER_COST and r > 2)

- "raise r" when ``g`` exceeds 2 standard errors and ``RAISE_GAIN`` (``FIRST_GAIN`` at r = 1, where there is no
  halved arm and the doubling gain is the only evidence), or when ``h > RAISE_COST``: the lower half of the rank
  carries that much held-out value, so the adapter uses all the rank it has (retraining found more rank helped in
  most such cases);
- "lower r" when ``h < LOWER_COST`` and ``q < LOWER_QUARTER``: even the top quarter of the rank keeps most of the
  held-out value, which leaves a rank-r/2 adapter trained from scratch a factor of two of slack (the halved arm
  starts from the trained update's truncation, a warm start a retrained r/2 does not always find);
- "adequate" otherwise.

Before any of that, the same-rank arm says whether the adapter was at a trained point: when continuing it (a
tenth of the rate, :data:`PROBE_FRACTION` of the run's steps) raises held-out accuracy by more than
:data:`UNFINISHED_POINTS` points and :data:`UNFINISHED_SE` standard errors, training had not finished, and the
verdict is "not converged" (:func:`unfinished`): none of the first ten calibration tasks' 234 adapters passed both
bars (at most 1.9 points at 2.6 SE, and 3.4 SE at 1.6 points); 7 of the 24 of a task whose runs end far apart at
the default rate did (2.1-3.6 points, 3.0-3.7 SE), and `make demo`'s 100-step adapter does (3.4 points, 5.3 SE).

The thresholds are calibrated against retraining (rank grids x 3 seeds on the calibration tasks, leave one task
out): reports/rank_advice.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lowrank.advice.sufficiency.probe import Difference
from lowrank.tasks.images import is_image_model
from lowrank.tasks.kind import text_task
from lowrank.tasks.defaults import DEFAULT_HEAD_LR, DEFAULT_IMAGE_LR, DEFAULT_LR

PROBE_FRACTION = 0.3
HORIZON_FRACTION = 0.3
PROBE_LR_SCALE = 0.1
HELDOUT_EXAMPLES = 1000
UNKNOWN_RUN_STEPS = 300  # the run length assumed for an adapter without metrics.json
RAISE_GAIN = 0.015
FIRST_GAIN = 0.0
RAISE_COST = 0.05
LOWER_COST = 0.02
LOWER_QUARTER = 0.05
RAISE_SE = 2.0
UNFINISHED_POINTS = 2.0
UNFINISHED_SE = 3.0


@dataclass(frozen=True)
class RunSettings:
    """What the probe takes from the run that trained the adapter (metrics.json), or defaults without one;
    ``loss_on``: what the run's instruction data learned (lowrank.data.chat), "completion" when not recorded."""

    lr: float
    head_lr: float
    batch_size: int
    steps: int
    from_metrics: bool
    loss_on: str = "completion"

    @property
    def probe_steps(self) -> int:
        return max(1, round(PROBE_FRACTION * self.steps))

    @property
    def horizon_steps(self) -> int:
        return max(self.probe_steps, round(HORIZON_FRACTION * self.steps))


def run_settings(adapter: str | Path, default_lr: float, default_head_lr: float) -> RunSettings:
    """The learning rates, batch size and step count of the run in ``adapter``'s metrics.json (defaults without
    one: ``default_lr``, ``default_head_lr``, batch 32, :data:`UNKNOWN_RUN_STEPS` steps)."""
    path = Path(adapter) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
        config = metrics["config"]
        return RunSettings(float(config["lr"]), float(config["head_lr"]), int(config["batch_size"]),
                           int(metrics["steps"]), True, str(config.get("loss_on", "completion")))
    except (OSError, ValueError, KeyError, TypeError):
        return RunSettings(default_lr, default_head_lr, 32, UNKNOWN_RUN_STEPS, False)


def default_rates(base: str, task_type: str | None) -> tuple[float, float]:
    """The learning rates ``lowrank train`` defaults to for a LoRA adapter on ``base`` (the probe's rates for an
    adapter without metrics.json): ``lr`` = ``DEFAULT_IMAGE_LR["lora"]`` for an MLP, else ``DEFAULT_LR[("lora",
    task)]`` with the task "lm" when the adapter's ``task_type`` is CAUSAL_LM (or, unset, the base is a causal
    LM), else "classification"; ``head_lr = max(lr, DEFAULT_HEAD_LR)``."""
    if is_image_model(base):
        lr = DEFAULT_IMAGE_LR["lora"]
    else:
        lr = DEFAULT_LR[("lora", text_task(base, task_type))]
    return lr, max(lr, DEFAULT_HEAD_LR)


def relative(difference: Difference | None, loss: float) -> float | None:
    """A paired loss difference as a fraction of the same rank's held-out loss ``loss``."""
    return None if difference is None or loss <= 0 else difference.loss / loss


def may_lower(halving: Difference | None, loss: float) -> bool:
    """Whether the halving cost leaves "lower r" in question (``h < LOWER_COST``): then the quartered arm decides."""
    cost = relative(halving, loss)
    return cost is not None and cost < LOWER_COST


def judge(doubling: Difference | None, halving: Difference | None, quartering: Difference | None,
          loss: float) -> str:
    """"raise r", "lower r" or "adequate" from the probe's differences (see the module docstring); without a
    doubled arm (the adapter is at full rank) no "raise r", without a halved arm (r = 1) no "lower r", without a
    quartered arm (r <= 2) "lower r" on the halving cost alone."""
    gain = relative(doubling, loss)
    bar = RAISE_GAIN if halving is not None else FIRST_GAIN
    if gain is not None and gain > bar and doubling.loss > RAISE_SE * doubling.loss_se:
        return "raise r"
    cost = relative(halving, loss)
    if cost is not None and cost > RAISE_COST:
        return "raise r"
    quarter = relative(quartering, loss)
    if may_lower(halving, loss) and (quarter is None or quarter < LOWER_QUARTER):
        return "lower r"
    return "adequate"


def unfinished(continuation: Difference | None) -> str | None:
    """Why the same-rank continuation says training had not finished (see the module docstring), or None: its
    held-out accuracy gain (points) above ``UNFINISHED_POINTS`` and ``UNFINISHED_SE`` standard errors."""
    if continuation is None or continuation.accuracy is None:
        return None
    gain, se = continuation.accuracy, continuation.accuracy_se or 0.0
    if gain > UNFINISHED_POINTS and gain > UNFINISHED_SE * se:
        return (f"continuing it at a tenth of its learning rate raised held-out accuracy by {gain:.1f} points "
                f"(±{se:.1f}): training had not finished")
    return None


def suggested_rank(verdict: str, r: int, limit: int) -> int:
    """The rank a verdict implies: ``2r`` (capped by ``limit = min(out, in)``), ``r / 2`` (at least 1), or ``r``."""
    return {"raise r": min(2 * r, limit), "lower r": max(1, r // 2), "adequate": r}[verdict]
