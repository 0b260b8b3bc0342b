"""The default learning rate backs off when it blows a run up: train again from the start at half the rate.

No one rate suits every task: the default is set near the best rate of most tasks measured, and a run it blows
up is trained again from the start at half the rate (a new head's default rate too), up to :data:`MAX_BACKOFFS`
times. The check reads the losses at :data:`CHECK_FRACTION` of the steps (at the end of a run too short to have
passed its warm-up by then): the mean training loss of the second half of the steps so far above :data:`BLOWUP`
times the loss before training means the rate blew the model up, which a run that merely has not learned yet does
not do. The loss before training is the largest of the first step's training loss (taken before any update), the
step-0 held-out loss and, for a classifier, the class frequencies' loss (their entropy): a model that starts
trained (a low loss) may lose some of it at first without being blown up, but not end up worse than ignoring its
input by half again.
A classifier whose run ends no better than ignoring its input (held-out loss at the class frequencies' or accuracy
at the majority share: lowrank.tasks.collapse) is trained again at half the rate too: a rate too high for a task
can flatten a network without ever blowing it up. On MNIST digits in negative, for a network trained on the digits,
the MLP default (1e-2) left 3 of 9 LoRA runs at r = 1-4 at chance, half of it none; on Friends lines labelled by
speaker, the text default (5e-3) left MiniLM-L6 r = 8 at the majority share after 1,000 steps, half of it learned
(25.2%; reports/rank_advice.md). A run too short or a model too small to learn anything is retried in vain, and
reported when the last back-off has not helped either (``lowrank train`` warns); a language model's run that ends no
better than the base model is reported, not retried. A non-finite loss or gradient stops the run as
``--on-nonfinite`` says (lowrank.training.guard).

Only a rate lowrank chose backs off, and only in a run started afresh: a rate the user gave (``--lr``) is kept, and
a resumed run is not checked. Each back-off is recorded in metrics.json (``lr_backoffs``: the rate, the step and
the reason) and the run's ``lr`` is the rate that finished. A run interrupted after backing off resumes with
``--lr`` set to the rate it backed off to (the message says so); its metrics.json then lists no back-off.
"""

from __future__ import annotations

from dataclasses import replace

from lowrank.errors import LowrankError
from lowrank.tasks.collapse import constant_loss, labels_of

CHECK_FRACTION = 0.2
BLOWUP = 1.5
MAX_BACKOFFS = 2
FACTOR = 0.5


class RateTooHigh(LowrankError):
    """The run at learning rate ``lr`` (a new head's: ``head_lr``) blew up by ``step``; train again at ``FACTOR``
    times both."""

    def __init__(self, lr: float, head_lr: float, step: int, reason: str):
        super().__init__(f"learning rate {lr:g}: {reason} (step {step})")
        self.lr, self.head_lr, self.step, self.reason = lr, head_lr, step, reason

    def record(self) -> dict:
        return {"lr": self.lr, "head_lr": self.head_lr, "step": self.step, "reason": self.reason}

    def next_config(self, config, head_chosen: bool):
        """``config`` for the next attempt: ``FACTOR`` times the rate, and the head's when lowrank chose it."""
        return replace(config, lr=self.lr * FACTOR, head_lr=self.head_lr * FACTOR if head_chosen else config.head_lr)


def resume_rates(config, head_chosen: bool) -> str:
    """The options a run that backed off resumes with: the rates it backed off to."""
    return f"--lr {config.lr:g}" + (f" --head-lr {config.head_lr:g}" if head_chosen else "")


class RateWatch:
    """Watches one attempt of a run at a rate lowrank chose: :meth:`after_read` raises :class:`RateTooHigh` at
    the check, unless ``enabled`` is False (a user's rate, a resumed run, or no back-off left)."""

    def __init__(self, setup, history: list, warmup: int, enabled: bool):
        self.setup = setup
        self.check_step = min(setup.total_steps, max(warmup, round(CHECK_FRACTION * setup.total_steps), 1))
        self.enabled = enabled and bool(history)
        self.checked = not self.enabled
        self.held_out_start = history[0].get("loss") if history else None

    def read_now(self, done: int) -> bool:
        """Whether the loop must read its losses after step ``done`` for the check."""
        return not self.checked and done == self.check_step

    def after_read(self, done: int, history: list) -> None:
        """After the losses up to step ``done`` were read into ``history``."""
        if self.checked or done < self.check_step:
            return
        self.checked = True
        losses = {h["step"]: h["train_loss"] for h in history if "train_loss" in h}
        window = [loss for step, loss in losses.items() if step > done // 2]
        start = self._start(losses)
        if not window or start <= 0.0:
            return
        mean = sum(window) / len(window)
        if mean > BLOWUP * start:
            self._back_off(done, f"training loss {mean:.3g} against {start:.3g} before training: the rate blew the "
                                 "model up")

    def after_run(self, collapsed: str | None) -> None:
        """At the end of the run: ``collapsed``, the reason the held-out metrics say it collapsed (or None)."""
        if self.enabled and collapsed and not getattr(self.setup.test, "is_lm", False):
            self._back_off(self.setup.total_steps, f"the run collapsed: {collapsed}")

    def _start(self, losses: dict[int, float]) -> float:
        """The loss before training: the largest of the first step's, the step-0 held-out one and, for a
        classifier, the class frequencies'."""
        constant = 0.0 if getattr(self.setup.test, "is_lm", False) else constant_loss(labels_of(self.setup.train))
        return max(losses.get(1, 0.0), self.held_out_start or 0.0, constant)

    def _back_off(self, step: int, reason: str) -> None:
        raise RateTooHigh(self.setup.lr, self.setup.optimizer.param_groups[-1]["base_lr"], step, reason)
