"""Rank metrics of a model while it trains, as flat ``{key: number}`` logs for any training loop's logger.

Per LoRA module (``dW = s B A``, ``s = alpha / r``), from the same analysis as ``lowrank analyze`` (the live model's
adapter read in memory, :mod:`lowrank.adapters.live`; exact factored SVD, no base):

- ``lowrank/<module>/effective_rank``: Roy & Vetterli's ``exp(H(p))``, ``p_i = s_i / sum(s)``;
- ``lowrank/<module>/k90``: the fewest singular directions holding 90% of ``||dW||_F^2``;
- ``lowrank/<module>/norm``: ``||dW||_F``.

Summarized over the modules: ``lowrank/median_effective_rank``, ``lowrank/median_k90``, ``lowrank/max_k90`` and
``lowrank/norm`` (``sqrt(sum of ||dW||_F^2)``, the whole update's norm). With ``data``, the sufficiency signals of
``lowrank analyze --data`` on a sample of its training examples (:mod:`lowrank.advice.sufficiency`; the base is
loaded with a copy of the adapter): ``lowrank/<module>/signal_to_noise``, ``.../doubling_gain``,
``.../outside_fraction``, and the model's ``lowrank/signal_to_noise`` and ``lowrank/doubling_gain``.
"""

from __future__ import annotations

import math
import statistics

import torch
from torch import nn

from lowrank.adapters.live import LiveAdapter, adapter_folder, live_adapter
from lowrank.advice.measure import MeasureConfig, measure
from lowrank.advice.sample import is_causal
from lowrank.advice.sufficiency import CALIBRATED_EXAMPLES, model_doubling_gain, model_signal_to_noise
from lowrank.analysis import run
from lowrank.analysis.config import AnalyzeConfig
from lowrank.api import adapter_base
from lowrank.data.text import load_text_dataset
from lowrank.errors import LowrankError

PREFIX = "lowrank/"


def rank_metrics(model: nn.Module, data: str | None = None, *, base: str | None = None,
                 examples: int = CALIBRATED_EXAMPLES, max_length: int = 128, seed: int = 0) -> dict[str, float]:
    """The logs described in the module docstring for ``model`` (a ``PeftModel`` or a model holding lowrank's
    LoRA layers) at its current weights. ``data``, ``base``, ``examples``, ``max_length`` and ``seed`` are those of
    the signals (``base``: default the adapter's ``base_model_name_or_path``); they run on the model's device.

    Raises:
        LowrankError: a model without LoRA layers; with ``data``, no base or data that does not fit the task.
    """
    return adapter_metrics(live_adapter(model), data, base=base, examples=examples, max_length=max_length,
                           seed=seed, device=device_of(model))


def adapter_metrics(live: LiveAdapter, data: str | None = None, *, base: str | None = None,
                    examples: int = CALIBRATED_EXAMPLES, max_length: int = 128, seed: int = 0,
                    device: str = "cpu") -> dict[str, float]:
    """:func:`rank_metrics` of an adapter already read from a live model (:func:`live_adapter`). Its tensors are
    views of the model's parameters, which optimizers update in place, so an adapter read once when training
    begins gives the current weights' metrics at every later step (sparing peft's state-dict filtering, about a
    third of a second on 210 modules, each time)."""
    report = run.analyze(AnalyzeConfig(checkpoint=str(live.path), base_metrics=False), live=live)
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
    if data is not None:
        logs.update(_signal_logs(live, data_base(live, base), data, examples, max_length, seed, device))
    return logs


def data_base(live: LiveAdapter, base: str | None) -> str:
    """The base the signals load: ``base``, else the adapter's ``base_model_name_or_path`` when a local folder."""
    found = base or adapter_base(live.config)
    if found is None:
        raise LowrankError(f"rank signals on data need the base model: the adapter's base_model_name_or_path "
                           f"({live.config.base_model_name_or_path}) is not a local folder; pass base=")
    return found


def check_data(live: LiveAdapter, data: str, base: str | None, num_labels: int | None) -> None:
    """Fail fast, before training, when ``data`` cannot give the signals of the adapter ``live`` (of a model with
    ``num_labels`` outputs if a classifier): no base, an unreadable dataset, or one of the wrong task (a
    classifier's data needs labels, as many as its head has)."""
    found = data_base(live, base)
    dataset = load_text_dataset(data)
    if is_causal(live.config, found, dataset, str(live.path)) or num_labels in (None, dataset.num_labels):
        return
    raise LowrankError(f"data {dataset.name} has {dataset.num_labels} labels, but the classifier being trained has "
                       f"{num_labels} outputs; give it the labelled data it trains on")


def _signal_logs(live: LiveAdapter, base: str, data: str, examples: int, max_length: int, seed: int,
                 device: str) -> dict[str, float]:
    with adapter_folder(live) as folder:
        measured = measure(MeasureConfig(adapter=str(folder), base=base, data=data, examples=examples,
                                         max_length=max_length, seed=seed, device=device))
    logs = {}
    for name, signals in measured.signals.items():
        logs[f"{PREFIX}{name}/signal_to_noise"] = signals.signal_to_noise
        logs[f"{PREFIX}{name}/doubling_gain"] = signals.doubling_gain
        logs[f"{PREFIX}{name}/outside_fraction"] = signals.outside_fraction
    values = list(measured.signals.values())
    logs[f"{PREFIX}signal_to_noise"] = model_signal_to_noise(values)
    logs[f"{PREFIX}doubling_gain"] = model_doubling_gain(values)
    return logs


def device_of(model: nn.Module) -> str:
    """``"cuda"`` when the model's parameters are on a GPU, else ``"cpu"``."""
    return "cuda" if next(model.parameters()).device.type == "cuda" else "cpu"
