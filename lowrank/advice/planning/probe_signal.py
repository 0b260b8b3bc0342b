"""The ``probe`` allocation signal: a short LoRA run at a high rank (``probe_rank``) through the trainer's own loop,
for a fraction (``probe_fraction``) of the steps of the run it advises; the singular values of each module's learned
update ``s B A``. ``sum_{i<=k} sigma_i^2`` is the energy a rank-``k`` truncation of the probe keeps (Eckart-Young).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from lowrank import adapters, spectra
from lowrank.advice.planning.allocate import ModuleSignal
from lowrank.advice.planning.settings import SignalSettings
from lowrank.data.text import load_text_dataset
from lowrank.tasks.images import is_image_model
from lowrank.train_config import TrainConfig
from lowrank.training.loop import train as run_training
from lowrank.training.setup import total_steps


def probe_signal(train: TrainConfig, settings: SignalSettings) -> tuple[list[ModuleSignal], float]:
    """A short high-rank LoRA run.

    Singular values of each module's update after a LoRA run at rank ``settings.probe_rank`` for
    ``settings.probe_fraction`` of the planned run's steps (at least one); returns the signals and the seconds spent
    on the run and its SVDs. The probe keeps the planned run's alpha: with Adam the step of ``s B A = (alpha / r) B
    A`` is about the same at every rank for a fixed alpha, so the probe's update moves as fast as the planned run's
    at the same learning rate.
    """
    steps = _probe_steps(settings.probe_fraction, total_steps(train, training_examples(train.model, train.data)))
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lowrank-probe-") as folder:
        out = Path(folder) / "probe"
        run_training(replace(train, method="lora", rank=settings.probe_rank, max_steps=steps,
                             out=out, overwrite=True,
                             resume=False, eval_samples=1, eval_every=None, save_every=None))
        signals = []
        for update in adapters.iter_lora_updates(out):
            svd = spectra.lora_svd(update.B, update.A, update.scale)
            signals.append(ModuleSignal(update.name, (update.B.shape[0], update.A.shape[1]),
                                        tuple(float(v) for v in svd.S)))
    return signals, time.perf_counter() - began


def _probe_steps(fraction: float, train_steps: int) -> int:
    return max(1, round(fraction * train_steps))


def training_examples(model: str, data: str) -> int:
    """How many training examples the planned run has (text or image data)."""
    if is_image_model(model):
        from lowrank.data.images import load_image_dataset

        return len(load_image_dataset(data).train_y)
    return load_text_dataset(data).size("train")
