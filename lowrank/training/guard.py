"""What a training run does when something goes wrong, so that nothing trained is lost.

- SIGTERM / SIGINT: the handler only sets a flag; the loop finishes the step, reads the pending losses, writes a
  checkpoint and raises :class:`Interrupted` (exit status 128 + signal number) with the command to resume. A
  second signal while stopping takes the default action at once (SIGINT: KeyboardInterrupt; SIGTERM: exit).
- A non-finite loss or gradient norm: with ``nonfinite="stop"`` (default) the loop keeps losing no time on it (the
  values stay on the device and are checked whenever the losses are read, before any checkpoint is written), then
  stops naming the first bad step; the last checkpoint, written before that step, is the last good one. With
  ``nonfinite="skip"`` each step's values are read at once (one host synchronization per step) and a bad step
  is skipped: no optimizer update, recorded in the history; :data:`MAX_SKIPS_IN_A_ROW` skips in a row stop the run.
- An evaluation that fails, and a failure to write the final files, come after the final checkpoint is written:
  the message says the weights are kept and that --resume finishes the run.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
from pathlib import Path

import torch

from lowrank import distributed
from lowrank.errors import LowrankError
from lowrank.training import checkpointing, faults

MAX_SKIPS_IN_A_ROW = 10
STAGING = ".saving"  # the folder in OUT where the final files are written before they are moved into place
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(LowrankError):
    """The run was stopped by a signal after writing a checkpoint; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class RunGuard:
    """Signal handling, non-finite checks and safe checkpoints for one run (a context manager that installs the
    signal handlers in the main thread and restores the previous ones on exit)."""

    def __init__(self, out: Path, nonfinite: str = "stop"):
        self.out, self.nonfinite = Path(out), nonfinite
        self.setup, self.settings, self.saved = None, None, None
        self.signal: int | None = None
        self._previous: dict = {}
        self._watched: list = []
        self._skips_in_a_row = 0

    def __enter__(self) -> "RunGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame) -> None:
        if self.signal is not None:  # a second signal: do what it would have done without us
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signal = signum

    def attach(self, setup, settings: dict, saved: int | None) -> None:
        """The run's setup and settings; ``saved``: the step of the checkpoint it resumed from, if any."""
        self.setup, self.settings, self.saved = setup, settings, saved

    @property
    def stopping(self) -> bool:
        return self.signal is not None

    def agree(self) -> None:
        """On several processes (every rank at the same step): a signal any rank received stops them all."""
        if distributed.any_rank(self.signal is not None) and self.signal is None:
            self.signal = signal.SIGTERM

    def after_step(self, step: int) -> None:
        faults.fire("step", step=step)

    def loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        return faults.fire("loss", loss, step=step)

    def skip(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """True when step ``step`` must not update the weights (``skip`` mode and a non-finite value); in
        ``stop`` mode the values are kept on the device for :meth:`check` and this returns False at no cost."""
        if self.nonfinite == "stop":
            self._watched.append((step, loss.detach(), grad_norm.detach()))
            return False
        bad = not (math.isfinite(float(loss)) and math.isfinite(float(grad_norm)))
        self._skips_in_a_row = self._skips_in_a_row + 1 if bad else 0
        if self._skips_in_a_row >= MAX_SKIPS_IN_A_ROW:
            raise LowrankError(f"{MAX_SKIPS_IN_A_ROW} steps in a row (up to step {step}) had a non-finite loss or "
                               f"gradient; training stopped. {self._kept()}; lower the learning rate")
        return bad

    def check(self) -> None:
        """Raise at the first watched step with a non-finite loss or gradient norm (one host read)."""
        if not self._watched:
            return
        values = torch.stack([torch.stack([loss.float(), norm.float()]) for _, loss, norm in self._watched]).tolist()
        steps = [step for step, _, _ in self._watched]
        self._watched = []
        for step, (loss, norm) in zip(steps, values):
            if not (math.isfinite(loss) and math.isfinite(norm)):
                what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
                raise LowrankError(f"training diverged at step {step} ({what}); stopped. {self._kept()}. Lower the "
                                   "learning rate and start again, or resume and skip such steps with "
                                   "--on-nonfinite skip")

    def _kept(self) -> str:
        if self.saved is None:
            return "No checkpoint was written before it (--save-every N writes them)"
        return f"The last good checkpoint (step {self.saved}) is kept in {self.out / checkpointing.CHECKPOINT}"

    def save(self, step: int, history: list, final: bool = False) -> None:
        checkpointing.save(self.out, self.setup, step, history, self.settings, final)
        self.saved = step

    def stop_if_asked(self, step: int, history: list) -> None:
        """After a read at ``step``: on a pending signal write a checkpoint (unless this step's was just written)
        and raise :class:`Interrupted`."""
        if self.signal is None:
            return
        if self.saved != step:
            self.save(step, history)
        name = signal.Signals(self.signal).name
        raise Interrupted(f"stopped by {name} at step {step} of {self.setup.total_steps}; the checkpoint is in "
                          f"{self.out / checkpointing.CHECKPOINT}. Continue with the same command and --resume",
                          self.signal)

    def evaluate(self, run, step: int, history: list):
        """``run()`` (an evaluation) at ``step``; a failure keeps the weights: checkpoint first, then an error."""
        try:
            faults.fire("evaluate", step=step)
            return run()
        except LowrankError:
            raise
        except Exception as error:  # noqa: BLE001 - any evaluation failure; the weights are saved below
            if self.saved != step and step > 0:
                self.save(step, history)
            raise LowrankError(f"evaluation at step {step} failed ({type(error).__name__}: {error}); the trained "
                               f"weights are kept in {self.out / checkpointing.CHECKPOINT} (step {step}). Run again "
                               "with --resume to evaluate and write the results") from None

    def write_results(self, write) -> None:
        """``write()`` the final files; a failure (a full disk) keeps the final checkpoint and says so."""
        try:
            faults.fire("save_result", step=self.setup.total_steps)
            write()
        except OSError as error:
            shutil.rmtree(self.out / STAGING, ignore_errors=True)
            raise LowrankError(f"cannot write the results into {self.out}: {error.strerror or error}; the trained "
                               f"weights are kept in {self.out / checkpointing.CHECKPOINT}. Free space and run "
                               "again with --resume") from None
