"""Signals measured before real training, one descending spectrum per target module, for
:func:`lowrank.advice.allocate.allocate`.

- ``gradient``: the singular values of the full weight gradient ``G0 = dL/dW`` at initialization (the base weights,
  a fresh head drawn from the seed), on a fixed sample of training examples: ``sum_{i<=k} sigma_i(G0)^2`` is the
  first-order loss decrease of the best rank-``k`` step (the direction LoRA-GA initializes to). Costs one forward
  and backward pass over the sample.
- ``probe``: a short LoRA run at a high rank (``probe_rank``) through the trainer's own loop, for a fraction of
  the steps of the run it advises; the singular values of each module's learned update ``s B A``:
  ``sum_{i<=k} sigma_i^2`` is the energy a rank-``k`` truncation of the probe keeps (Eckart-Young).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from lowrank import adapters, devices, spectra
from lowrank.advice import sample as samples
from lowrank.advice.allocate import ModuleSignal
from lowrank.advice.gradients import weight_gradients
from lowrank.training.config import TrainConfig
from lowrank.training.loop import train


def gradient_signal(config: TrainConfig, examples: int, max_rank: int) -> tuple[list[ModuleSignal], float]:
    """Top ``max_rank`` singular values of ``G0`` per target module; returns the signals and the seconds spent on
    the gradient and its SVDs (loading the model and tokenizing the sample, which the planned run pays too, are
    not counted)."""
    sample = samples.initial(config.model, config.data, config.targets, examples, config.max_length, config.seed,
                             config.loss_on)
    device = torch.device(devices.choose_available(config.device))
    began = time.perf_counter()
    model = sample.model.to(device)
    grads = weight_gradients(model, sample.layers, sample.batches(), device)  # B = 0: the model is exactly the base
    signals = [ModuleSignal(name, tuple(g.shape), tuple(float(v) for v in torch.linalg.svdvals(
        g.to(device, torch.float64))[:max_rank].cpu())) for name, g in grads.items()]
    return signals, time.perf_counter() - began


def probe_signal(config: TrainConfig, probe_rank: int, probe_steps: int) -> tuple[list[ModuleSignal], float]:
    """Singular values of each module's update after a ``probe_steps``-step LoRA run at rank ``probe_rank``.

    The probe keeps the planned run's alpha: with Adam the step of ``s B A = (alpha / r) B A`` is about the same at
    every rank for a fixed alpha, so the probe's update moves as fast as the planned run's at the same learning rate.
    """
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lowrank-probe-") as folder:
        out = Path(folder) / "probe"
        train(replace(config, method="lora", rank=probe_rank, max_steps=probe_steps,
                      out=out, overwrite=True,
                      resume=False, eval_samples=1, eval_every=None, save_every=None))
        signals = []
        for update in adapters.iter_lora_updates(out):
            svd = spectra.lora_svd(update.B, update.A, update.scale)
            signals.append(ModuleSignal(update.name, (update.B.shape[0], update.A.shape[1]),
                                        tuple(float(v) for v in svd.S)))
    return signals, time.perf_counter() - began
