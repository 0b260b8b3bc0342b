"""Rank logs of a model while it trains: flat ``{key: number}`` dicts for any training loop's logger.

Per LoRA module (``dW = s B A``, ``s = alpha / r``), from the same analysis as ``lowrank analyze`` (the live model's
adapter read in memory, :mod:`lowrank.adapters.live`; exact factored SVD, no base):

- ``lowrank/<module>/effective_rank``: Roy & Vetterli's ``exp(H(p))``, ``p_i = s_i / sum(s)``;
- ``lowrank/<module>/k90``: the fewest singular directions holding 90% of ``||dW||_F^2``;
- ``lowrank/<module>/norm``: ``||dW||_F``.

Summarized over the modules: ``lowrank/median_effective_rank``, ``lowrank/median_k90``, ``lowrank/max_k90`` and
``lowrank/norm`` (``sqrt(sum of ||dW||_F^2)``, the whole update's norm). With data, the sufficiency evidence of
``lowrank analyze --data`` on a sample of its training examples (:mod:`lowrank.advice.sufficiency.gradient_evidence`;
the base model is loaded with a copy of the adapter): ``lowrank/<module>/signal_to_noise``, ``.../doubling_gain``,
``.../outside_fraction``, and the model's ``lowrank/signal_to_noise`` and ``lowrank/doubling_gain``.
"""

from __future__ import annotations

import math
import statistics

from torch import nn

from lowrank.adapters.live import LiveAdapter, adapter_folder, live_adapter
from lowrank.advice.sufficiency.gradient_evidence import (CALIBRATED_EXAMPLES, model_doubling_gain,
                                                          model_signal_to_noise)
from lowrank.advice.sufficiency.measure import MeasureConfig, measure
from lowrank.analysis import run
from lowrank.analysis.config import AnalyzeConfig
from lowrank.data.text import load_text_dataset
from lowrank.errors import LowrankError
from lowrank.tasks.kind import adapter_is_causal

PREFIX = "lowrank/"


class RankLogs:
    """The rank logs of ``model`` (a ``PeftModel`` or a model holding lowrank's LoRA layers), measured at its
    current weights by each :meth:`measure` (see the module docstring).

    The adapter is read once, here: its tensors are views of the model's parameters, which optimizers update in
    place, so every later :meth:`measure` sees the weights of that moment (and skips reading the adapter again:
    peft's state-dict filtering is slow on models with many modules). With ``data``, the data is
    checked here too, so a run fails before its first step rather than at its first log.

    Args:
        model: the model being trained.
        data: the training data as lowrank reads it (registry key, or the .csv / .jsonl / .json / .txt file):
            adds the sufficiency evidence, measured on the device the adapter is on.
        base: the base model the gradient evidence loads (default: the adapter's ``base_model_name_or_path``, a
            local folder).
        examples, max_length, seed: the gradient evidence's sample of training examples, tokens per example, and
            its seed.
    Raises:
        LowrankError: a model without LoRA layers; with ``data``, no base, unreadable data, or data of another task
            (a classifier's data needs labels, as many as its head has outputs).
    """

    def __init__(self, model: nn.Module, data: str | None = None, *, base: str | None = None,
                 examples: int = CALIBRATED_EXAMPLES, max_length: int = 128, seed: int = 0):
        self.live = live_adapter(model)
        self.data, self.examples, self.max_length, self.seed = data, examples, max_length, seed
        self.base = None
        if data is not None:
            self.base = base or self.live.config.local_base()
            if self.base is None:
                raise LowrankError(f"gradient evidence on data needs the base model: the adapter's "
                                   f"base_model_name_or_path ({self.live.config.base_model_name_or_path}) is not a "
                                   "local folder; pass base=")
            _check_task(self.live, load_text_dataset(data), self.base,
                        getattr(getattr(model, "config", None), "num_labels", None))

    def measure(self) -> dict[str, float]:
        """The logs at the model's current weights."""
        report = run.analyze(AnalyzeConfig(checkpoint=str(self.live.path), base_metrics=False), live=self.live)
        logs: dict[str, float] = {}
        for module in report.modules:
            logs[f"{PREFIX}{module.name}/effective_rank"] = module.effective_rank
            logs[f"{PREFIX}{module.name}/k90"] = module.energy_rank["0.9"]
            logs[f"{PREFIX}{module.name}/norm"] = module.frobenius_norm
        k90 = [m.energy_rank["0.9"] for m in report.modules]
        logs[f"{PREFIX}median_effective_rank"] = statistics.median(m.effective_rank for m in report.modules)
        logs[f"{PREFIX}median_k90"] = statistics.median(k90)
        logs[f"{PREFIX}max_k90"] = max(k90)
        logs[f"{PREFIX}norm"] = math.sqrt(sum(m.frobenius_norm ** 2 for m in report.modules))
        if self.data is not None:
            logs.update(self._evidence())
        return logs

    def _evidence(self) -> dict[str, float]:
        device = next(iter(self.live.tensors.values())).device.type
        with adapter_folder(self.live) as folder:
            measured = measure(MeasureConfig(adapter=str(folder), base=self.base, data=self.data,
                                             examples=self.examples, max_length=self.max_length, seed=self.seed,
                                             device="cuda" if device == "cuda" else "cpu"))
        logs = {}
        for name, evidence in measured.evidence.items():
            logs[f"{PREFIX}{name}/signal_to_noise"] = evidence.signal_to_noise
            logs[f"{PREFIX}{name}/doubling_gain"] = evidence.doubling_gain
            logs[f"{PREFIX}{name}/outside_fraction"] = evidence.outside_fraction
        values = list(measured.evidence.values())
        logs[f"{PREFIX}signal_to_noise"] = model_signal_to_noise(values)
        logs[f"{PREFIX}doubling_gain"] = model_doubling_gain(values)
        return logs


def _check_task(live: LiveAdapter, dataset, base: str, num_labels: int | None) -> None:
    """Refuse data of another task: unlabelled data for a classifier (:func:`lowrank.tasks.kind.adapter_is_causal`),
    or labels that do not fit its head's ``num_labels`` outputs."""
    if adapter_is_causal(live.config, base, dataset, str(live.path)) or num_labels in (None, dataset.num_labels):
        return
    raise LowrankError(f"data {dataset.name} has {dataset.num_labels} labels, but the classifier being trained has "
                       f"{num_labels} outputs; give it the labelled data it trains on")
