"""lowrank's Python API over paths and live models; the ``analyze`` and ``suggest-rank`` commands are layers over it.

- :func:`analyze`: a saved adapter or full fine-tune (a path), or a live ``peft.PeftModel`` or model holding
  lowrank's LoRA layers (read in memory, :mod:`lowrank.adapters.live`: no save and reload), -> :class:`Report`.
- :func:`run_analysis`: the same from an :class:`AnalyzeConfig` carrying every ``lowrank analyze`` option.
- :class:`RankLogs`: a training model's rank logs (effective rank, k90, ``||dW||_F`` per module and summarized;
  with data, the sufficiency evidence), for any training loop's logger and for
  :mod:`lowrank.integrations.transformers`.
- :func:`suggest_rank`: per-module ranks before training -> ``peft.LoraConfig``; :func:`suggest_config` builds the
  :class:`SuggestConfig` behind it (and behind ``lowrank suggest-rank``).

Without a base, the base is the adapter's ``base_model_name_or_path`` when that is a local folder (the report's
``base_from`` says so), whenever base metrics or a data verdict would use it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from torch import nn

from lowrank import devices
from lowrank.adapters import is_adapter_folder, read_adapter_config
from lowrank.adapters.live import LiveAdapter, live_adapter
from lowrank.advice.planning.config import SuggestConfig
from lowrank.advice.planning.suggest import suggest
from lowrank.analysis.config import AnalyzeConfig
from lowrank.analysis.training_logs import RankLogs
from lowrank.analysis import run
from lowrank.distributed import SINGLE, World
from lowrank.errors import LowrankError
from lowrank.progress import ProgressCallback
from lowrank.report import Report
from lowrank.train_config import TrainConfig

__all__ = ["AnalyzeConfig", "RankLogs", "Report", "analyze", "run_analysis", "suggest_config",
           "suggest_rank"]


def analyze(model_or_path: str | os.PathLike | nn.Module, base: str | None = None, against: str | None = None,
            data: str | None = None, *, max_length: int = 128, seed: int = 0, device: str | None = None,
            base_metrics: bool = True, progress: ProgressCallback | None = None) -> Report:
    """Analyze an update as ``lowrank analyze`` does, and return the :class:`Report`.

    Per module the update ``dW = s B A`` (LoRA; ``s = alpha / r``) or ``W1 - W0`` (full fine-tuning) is decomposed
    exactly: singular values, energy ranks k50/k90/k99, effective and stable rank; with a base, the amplification
    factor and intruder dimensions; with ``against``, subspace similarity to the other update; with ``data``, the
    model's data verdict (was r enough).

    Args:
        model_or_path: a peft adapter folder, kohya / diffusers LoRA file or full model (path); or a live
            ``peft.PeftModel`` (its active adapter) or a model holding lowrank's LoRA layers, read in memory: the
            report equals the saved adapter's but for ``checkpoint``, which names the live model.
        base: the pre-trained model (registry key, folder or file). Default: the adapter's
            ``base_model_name_or_path`` when it is a local folder, else none.
        against: a second update (path) to compare module by module.
        data: the data the adapter was trained on (registry key or CSV / JSONL / JSON / TXT file): the data
            verdict (held-out check, then a probe that trains: minutes on a CPU). Needs a base.
        max_length, seed: tokens per example with ``data``; the seed of the random baselines and samples.
        device: where decompositions and the data verdict run (default: cuda when present, else cpu).
        base_metrics: amplification and intruders when a base is known (the dense SVDs of W0 and W1).
        progress: a :data:`lowrank.progress.ProgressCallback`.
    Raises:
        LowrankError: bad input, e.g. a model without LoRA layers, a missing path, data that does not fit the
            model's task, or ``data`` without a base.
    """
    live = None
    if isinstance(model_or_path, nn.Module):
        live = live_adapter(model_or_path)
    elif not isinstance(model_or_path, (str, os.PathLike)):
        raise LowrankError(f"analyze takes a path or a torch model, not {type(model_or_path).__name__}")
    config = AnalyzeConfig(checkpoint=str(live.path if live else model_or_path), base=base, against=against,
                           data=data, max_length=max_length, seed=seed, device=devices.choose(device),
                           base_metrics=base_metrics)
    return run_analysis(config, progress, live=live)


def run_analysis(config: AnalyzeConfig, progress: ProgressCallback | None = None, world: World = SINGLE,
                 live: LiveAdapter | None = None) -> Report | None:
    """:func:`analyze` with every option of ``lowrank analyze`` (``config``); ``live`` an adapter held in memory
    (:func:`lowrank.adapters.live.live_adapter`) analyzed in place of ``config.checkpoint``. On several processes
    (``world``) rank 0 returns the report and the others None (:func:`lowrank.analysis.run.analyze`)."""
    config, base_from = _with_default_base(config, live)
    analysis = run.analyze(config, progress, world, live)
    return None if analysis is None else Report(dataclasses.replace(analysis, base_from=base_from))


def _with_default_base(config: AnalyzeConfig, live: LiveAdapter | None) -> tuple[AnalyzeConfig, str | None]:
    """``config`` with the adapter's ``base_model_name_or_path`` as base when none is given, base metrics or a data
    verdict would use one, and it is a local folder; and where the base came from (``base_from``)."""
    if config.base is not None:
        return config, "given"
    if not (config.base_metrics or config.data):
        return config, None
    folder = Path(config.checkpoint).expanduser()
    adapter = live.config if live is not None else read_adapter_config(folder) if is_adapter_folder(folder) else None
    named = adapter.local_base() if adapter is not None else None
    if named is None:
        return config, None
    return dataclasses.replace(config, base=named), "base_model_name_or_path"


def suggest_config(model: str | os.PathLike | nn.Module, data: str, budget: int | None = None,
                   rank: int | None = None, *, targets: str = "auto", signal: str = "gradient", examples: int = 256,
                   probe_rank: int = 64, probe_fraction: float = 0.1, epochs: int = 3, lr: float | None = None,
                   batch_size: int = 32, max_length: int = 128, loss_on: str = "completion", seed: int = 0,
                   device: str = "auto") -> SuggestConfig:
    """The :class:`SuggestConfig` of a planned LoRA run of ``model`` on ``data`` (the options of ``lowrank
    suggest-rank``, which this builds too). ``model``: a registry key or local folder, or a loaded transformers
    model, whose ``config.name_or_path`` must then be the local folder it came from (the signal is measured on a
    fresh copy: the model given is not touched)."""
    train = TrainConfig(model=_model_path(model), data=data, method="lora", out=Path("."), targets=targets,
                        epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, loss_on=loss_on, seed=seed,
                        device=device)
    return SuggestConfig(train=train, budget=budget, rank=rank, signal=signal, examples=examples,
                         probe_rank=probe_rank, probe_fraction=probe_fraction)


def suggest_rank(model: str | os.PathLike | nn.Module, data: str, budget: int | None = None, rank: int | None = None,
                 *, targets: str = "auto", signal: str = "gradient", max_length: int = 128, seed: int = 0,
                 device: str = "auto"):
    """Per-module LoRA ranks before training, as a ``peft.LoraConfig``: the signal (``"gradient"``: the full weight
    gradient at initialization on 256 training examples; ``"probe"``: a short rank-64 LoRA run) gives each target
    module a spectrum ``s``, and the budget (``budget`` trainable parameters, or what ``rank`` on every module
    costs) goes one direction at a time to the module whose next ``s_i^2`` per parameter ``(out + in)`` is largest
    (:mod:`lowrank.advice.planning.suggest`). ``r`` is the most common rank, ``rank_pattern`` holds the
    others.

    Raises:
        LowrankError: bad input, or peft not installed (the result is a peft object).
    """
    try:
        from peft import LoraConfig
    except ImportError:
        raise LowrankError("suggest_rank returns a peft.LoraConfig: install peft (pip install peft)") from None
    result = suggest(suggest_config(model, data, budget, rank, targets=targets, signal=signal,
                                    max_length=max_length, seed=seed, device=device))
    return LoraConfig(**result.lora_config)


def _model_path(model: str | os.PathLike | nn.Module) -> str:
    if not isinstance(model, nn.Module):
        return str(model)
    named = getattr(getattr(model, "config", None), "name_or_path", None)
    if not named or not Path(named).expanduser().is_dir():
        raise LowrankError(f"the {type(model).__name__} given was not loaded from a local folder (its "
                           f"config.name_or_path is {named!r}); pass the folder or registry key instead")
    return str(named)
