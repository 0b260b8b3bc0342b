"""Is an adapter at a trained point? The checks that come before any rank verdict (pure functions).

Rank advice reads the gradient at the point training reached; at a point that is not a trained one it answers a
different question (how to finish training, not what rank to use). Two ways a point is not trained:

**Not converged**: the training loss is still falling when the run ends (:func:`loss_trend`). A learning rate
that decays to 0 flattens the end of any loss curve, so the run is cut in windows of equal *learning-rate time*
rather than of equal steps: with ``eta_t`` the rate of step ``t`` and ``tau_t = sum_{s<t} eta_s / sum_s eta_s`` the
share of the run's learning-rate budget spent before it, the first window holds the steps with ``tau < 0.2``, the
earlier one ``0.6 <= tau < 0.8`` and the last one ``tau >= 0.8`` (under linear decay to 0: the first ~11% of the
steps, steps at 37-55% and the last 45%). With ``first``, ``earlier``, ``last`` their mean training losses,

    drop = (earlier - last) / (first - last)     the share of the run's loss decrease made in the last fifth
    SE   = sqrt(s_earlier^2 / n_earlier + s_last^2 / n_last)     Welch's standard error of earlier - last

and the loss is still falling when ``drop > STILL_FALLING_DROP`` and ``earlier - last > STILL_FALLING_SE * SE``.
A loss that falls in proportion to the learning rate spent gives ``drop = 0.25`` at a constant rate (the window
centres are 0.2 and 0.8 of the budget apart; 0.27 under linear decay, whose last window crowds its steps near the
end); ``L = L_inf + D exp(-tau / k)`` gives 0.15 at ``k = 0.65`` (the run lasted 1.5 time constants and left 22% of
the initial excess loss) and 0.07 at ``k = 0.3`` (3.3 time constants, 4% left). Measured: five 3-epoch Reuters
R8 runs (reports/r8: full, LoRA r = 1, 8, 64) give 0.03-0.07 at 4-9 SE (a trained classifier's training loss keeps
creeping down while it memorizes, which is why the test is on the drop's size, not only on its significance);
MiniLM-L6 LoRA r = 8 on 1600 R8 examples gives 0.08 at 3.6 SE after 3 epochs (300 steps, 92.5% held-out
accuracy) and 0.23 at 3.2 SE when stopped at 100 steps (78.1%).

**Collapsed** (:mod:`lowrank.tasks.collapse`): the held-out loss says the model learned nothing usable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


WINDOW_FRACTION = 0.2
MIN_WINDOW = 5
STILL_FALLING_DROP = 0.15
STILL_FALLING_SE = 3.0


@dataclass(frozen=True)
class Trend:
    """Where the training loss stands at the end of a run (see the module docstring for the formulas).

    Attributes:
        steps: training steps with a recorded loss.
        first_steps, earlier_steps, last_steps: the first and last step of each window (learning-rate time
            ``tau < 0.2``, ``0.6 <= tau < 0.8``, ``tau >= 0.8``).
        first, earlier, last: mean training loss over each window.
        drop: ``(earlier - last) / (first - last)`` (0 when the loss did not fall over the run).
        standard_error: Welch's standard error of ``earlier - last``.
        falling: whether the loss is still falling (``drop`` and ``(earlier - last) / SE`` above the thresholds).
    """

    steps: int
    first_steps: tuple[int, int]
    earlier_steps: tuple[int, int]
    last_steps: tuple[int, int]
    first: float
    earlier: float
    last: float
    drop: float
    standard_error: float
    falling: bool

    @property
    def sigmas(self) -> float:
        """``(earlier - last) / SE``: how many standard errors the last window lies below the one before."""
        difference = self.earlier - self.last
        return difference / self.standard_error if self.standard_error > 0 else math.copysign(math.inf, difference)

    def to_dict(self) -> dict:
        """Plain JSON values (windows as lists), with :attr:`sigmas`."""
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {**plain, "sigmas": self.sigmas}

    def describe(self) -> str:
        """One sentence with the numbers."""
        (a, b), (c, d), (e, f) = self.first_steps, self.earlier_steps, self.last_steps
        return (f"mean training loss {self.earlier:.3g} over steps {c}-{d} and {self.last:.3g} over steps {e}-{f}, "
                f"the last two fifths of the learning rate spent; {100 * self.drop:.0f}% of the run's decrease from "
                f"{self.first:.3g} (steps {a}-{b}) came in the last fifth, {self.sigmas:.1f} standard errors")


def _window(entries: list[dict], times: list[float], low: float, high: float) -> tuple[list[dict], float, float]:
    """The entries with learning-rate time in ``[low, high)``, their mean loss and its squared standard error
    ``s^2 / n`` (``s^2 = sum (x - mean)^2 / (n - 1)``)."""
    chosen = [e for e, t in zip(entries, times) if low <= t < high]
    losses = [float(e["train_loss"]) for e in chosen]
    mean = sum(losses) / max(len(losses), 1)
    spread = sum((x - mean) ** 2 for x in losses) / max(len(losses) - 1, 1)
    return chosen, mean, spread / max(len(losses), 1)


def _times(entries: list[dict]) -> list[float]:
    """``tau_t = sum_{s<t} eta_s / sum_s eta_s`` from each entry's ``lr``; steps count alike when a rate is
    missing or every rate is 0."""
    rates = [e.get("lr") for e in entries]
    if not all(isinstance(r, (int, float)) and r >= 0 for r in rates) or not sum(rates) > 0:
        rates = [1.0] * len(entries)
    total, spent, times = sum(rates), 0.0, []
    for rate in rates:
        times.append(spent / total)
        spent += rate
    return times


def loss_trend(history: list[dict]) -> Trend | None:
    """The trend of the training loss at the end of a run, from metrics.json's ``history`` (entries with a
    ``train_loss`` and its ``lr``; evaluations and skipped steps are left out). None when a window holds fewer
    than :data:`MIN_WINDOW` steps: too few to tell a trend from batch-to-batch scatter."""
    entries = [e for e in history if "train_loss" in e]
    times = _times(entries)
    first, first_mean, _ = _window(entries, times, 0.0, WINDOW_FRACTION)
    earlier, earlier_mean, earlier_se2 = _window(entries, times, 1 - 2 * WINDOW_FRACTION, 1 - WINDOW_FRACTION)
    last, last_mean, last_se2 = _window(entries, times, 1 - WINDOW_FRACTION, 2.0)
    if min(len(first), len(earlier), len(last)) < MIN_WINDOW:
        return None
    progress = first_mean - last_mean
    drop = (earlier_mean - last_mean) / progress if progress > 0 else 0.0
    standard_error = math.sqrt(earlier_se2 + last_se2)
    falling = drop > STILL_FALLING_DROP and earlier_mean - last_mean > STILL_FALLING_SE * standard_error
    return Trend(len(entries), *((w[0]["step"], w[-1]["step"]) for w in (first, earlier, last)), first_mean,
                 earlier_mean, last_mean, drop, standard_error, falling)
