"""A transformers ``TrainerCallback`` that follows the rank of a LoRA run and reports it at the end.

``trainer.add_callback(RankCallback(every=200, data="train.jsonl"))`` on a ``transformers.Trainer`` (or TRL's
``SFTTrainer``, a subclass; TRL is not needed to import this) training a ``PeftModel`` or a model holding lowrank's
LoRA layers:

- every ``every`` optimizer steps, and at each evaluation not already at such a step, it logs
  :class:`lowrank.api.RankLogs` (per module and summarized: effective rank, k90, ``||dW||_F``; with ``data``, the
  sufficiency evidence on a sample of it) through the Trainer's own ``log``, so they land in
  ``trainer.state.log_history`` and in every ``report_to`` integration. On other steps ``on_step_end`` returns after
  one modulo: nothing is read, copied or synchronized.
- at the end of training, on the main process, it writes ``lowrank_analysis.json`` (``lowrank.analysis/1``, what
  ``lowrank analyze`` writes for the saved adapter, but for ``checkpoint``, which names the live model) and
  ``lowrank_report.html`` into ``args.output_dir``; with ``verdict=True`` and ``data``, the report holds the data
  verdict (:func:`lowrank.analyze` with ``data``: a held-out check, then a probe that trains about 0.6 times the
  steps of a 300-step run).

Bad input (a model without LoRA layers; data that cannot give the signals) raises :class:`LowrankError` when
training begins, before any step; nothing is written.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from lowrank.api import RankLogs, analyze
from lowrank.errors import LowrankError

JSON_FILE = "lowrank_analysis.json"
HTML_FILE = "lowrank_report.html"


class RankCallback(TrainerCallback):
    """Logs rank metrics on a schedule and writes the analysis at the end of training (module docstring).

    Args:
        every: log every this many optimizer steps (``state.global_step % every == 0``). Default 200.
        data: the training data as lowrank reads it (registry key, or the .csv / .jsonl / .json / .txt file on
            disk): adds the sufficiency evidence to each log; needs the base model (``base``, default the adapter's
            ``base_model_name_or_path`` when a local folder).
        base: the base model the signals and the final report's base metrics use (see ``data``).
        examples, max_length, seed: the signals' sample (training examples; tokens per example) and its seed.
        verdict: with ``data``, put the data verdict into the final report (minutes; see the module docstring).
        html: write the HTML report beside the JSON. Default True.
    """

    def __init__(self, every: int = 200, data: str | None = None, *, base: str | None = None, examples: int = 256,
                 max_length: int = 128, seed: int = 0, verdict: bool = False, html: bool = True):
        if every < 1 or examples < 1 or max_length < 8:
            raise LowrankError(f"RankCallback needs every >= 1, examples >= 1 and max_length >= 8, got every={every}, "
                               f"examples={examples}, max_length={max_length}")
        if verdict and data is None:
            raise LowrankError("RankCallback(verdict=True) judges the rank on data: pass data=")
        self.every, self.data, self.base, self.examples = every, data, base, examples
        self.max_length, self.seed, self.verdict, self.html = max_length, seed, verdict, html
        self._logs: RankLogs | None = None  # made when training begins (the adapter read once, the data checked)
        self._logged_step = -1

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        _running_trainer(self)  # outside a Trainer, without LoRA layers, or with bad data: fail before the first step
        self._logs = self._rank_logs(model)
        self._logged_step = -1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every:
            return
        self._log(model, state, control)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if state.global_step != self._logged_step:
            self._log(model, state, control)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        with _own_random_streams():
            report = analyze(model, base=self.base, data=self.data if self.verdict else None,
                             max_length=self.max_length, seed=self.seed)
        folder = Path(args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        report.to_json(folder / JSON_FILE)
        if self.html:
            report.to_html(folder / HTML_FILE)

    def _log(self, model, state, control) -> None:
        """Measure on the main process and log through ``transformers.Trainer.log`` itself: a subclass's ``log``
        may fold its own running metrics into each call and reset them (TRL's SFTTrainer does), which an extra
        call from here would take from the Trainer's regular log. Logging clears ``control.should_log``, which
        the Trainer's own loss log of this step may be waiting on: it is restored."""
        if state.is_world_process_zero:
            rank_logs = self._logs if self._logs is not None else self._rank_logs(model)  # evaluate() alone
            with _own_random_streams():
                logs = rank_logs.measure()
            should_log = control.should_log
            Trainer.log(_running_trainer(self), logs)
            control.should_log = should_log
        self._logged_step = state.global_step

    def _rank_logs(self, model) -> RankLogs:
        return RankLogs(model, self.data, base=self.base, examples=self.examples, max_length=self.max_length,
                        seed=self.seed)


def _own_random_streams():
    """A block whose random draws (a base model loaded for the signals, the probe) leave training's streams (data
    order, dropout) as they were: the CPU's and the current GPU's generator states are restored afterwards."""
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else [])


def _running_trainer(callback: TrainerCallback) -> Trainer:
    """The Trainer whose callback handler is calling ``callback``: transformers hands callbacks no reference to
    it, so it is found up the call stack (the frame of the Trainer method that fired the event), and checked by its
    handler holding this very callback."""
    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer) and callback in owner.callback_handler.callbacks:
            return owner
        frame = frame.f_back
    raise LowrankError("RankCallback logs through a transformers Trainer: add it with trainer.add_callback(...) "
                       "and start training with trainer.train()")
