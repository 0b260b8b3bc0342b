"""The default learning rate backs off when it blows a run up: train again from the start at half the rate.

No one rate suits every task: the default is set near the best rate of most tasks measured, and a run it blows
up is trained again from the start at ``lr / 2``, up to :data:`MAX_BACKOFFS` times. The check comes at the first
loss read at or after :data:`CHECK_FRACTION` of the steps (and after the warm-up): the mean training loss of the
steps read since the previous read is above :data:`BLOWUP` times the held-out loss before training (the step-0
evaluation), which a run that merely has not learned yet does not do. A non-finite loss or gradient stops the run
as ``--on-nonfinite`` says (lowrank.training.guard); a run that collapses later or more quietly (its held-out
loss at the constant predictor's) is reported as collapsed at the end (lowrank.tasks.collapse; ``lowrank train``
warns).

Only a rate lowrank chose backs off, and only in a run started afresh: a rate the user gave (``--lr``) is kept.
A run interrupted after backing off resumes with ``--lr`` set to the rate it backed off to (the resume check names
it).
Each back-off is recorded in metrics.json (``lr_backoffs``: the rate, the step and the reason) and the run's
``lr`` is the rate that finished.
"""

from __future__ import annotations

from lowrank.errors import LowrankError

CHECK_FRACTION = 0.2
BLOWUP = 1.5
MAX_BACKOFFS = 2
FACTOR = 0.5


class RateTooHigh(LowrankError):
    """The run at learning rate ``lr`` blew up by ``step``; train again at ``FACTOR * lr``."""

    def __init__(self, lr: float, step: int, reason: str):
        super().__init__(f"learning rate {lr:g}: {reason} (step {step})")
        self.lr, self.step, self.reason = lr, step, reason

    def record(self) -> dict:
        return {"lr": self.lr, "step": self.step, "reason": self.reason}


class RateWatch:
    """Watches one attempt of a run at a rate lowrank chose: :meth:`after_read` raises :class:`RateTooHigh` at
    the early check, unless ``enabled`` is False (a user's rate, a resumed run, or no back-off left)."""

    def __init__(self, setup, history: list, warmup: int, enabled: bool):
        self.setup = setup
        self.check_step = max(warmup, round(CHECK_FRACTION * setup.total_steps), 1)
        self.checked = not enabled or not history
        self.start_loss = history[0].get("loss") if history else None
        self.read = 0

    def after_read(self, done: int, history: list) -> None:
        """After the losses up to step ``done`` were read into ``history``."""
        window = [h["train_loss"] for h in history[self.read:] if "train_loss" in h]
        self.read = len(history)
        if self.checked or done < self.check_step or not window or self.start_loss is None:
            return
        self.checked = True
        mean = sum(window) / len(window)
        if mean > BLOWUP * self.start_loss:
            raise RateTooHigh(self.setup.lr, done, f"training loss {mean:.3g} against {self.start_loss:.3g} "
                                                     "held out before training: the rate blew the model up")
