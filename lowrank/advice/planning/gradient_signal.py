"""The ``gradient`` allocation signal: the singular values of the full weight gradient ``G0 = dL/dW`` at
initialization (the base weights, a fresh head drawn from the seed), on a fixed sample of training examples.
``sum_{i<=k} sigma_i(G0)^2`` is the first-order loss decrease of the best rank-``k`` step (the direction LoRA-GA
initializes to). Costs one forward and backward pass over the sample.
"""

from __future__ import annotations

import time

import torch

from lowrank import devices
from lowrank.advice import sample as samples
from lowrank.advice.gradients import weight_gradients
from lowrank.advice.planning.allocate import ModuleSignal
from lowrank.advice.planning.settings import SignalSettings
from lowrank.train_config import TrainConfig


def gradient_signal(train: TrainConfig, settings: SignalSettings) -> tuple[list[ModuleSignal], float]:
    """The full weight gradient at initialization.

    Top ``settings.max_rank`` singular values of ``G0`` per target module, on ``settings.examples`` training examples;
    returns the signals and the seconds spent on the gradient and its SVDs (loading the model and tokenizing the
    sample, which the planned run pays too, are not counted)."""
    sample = samples.initial(train.model, train.data, train.targets, settings.examples, train.max_length, train.seed,
                             train.loss_on)
    device = torch.device(devices.choose_available(train.device))
    began = time.perf_counter()
    model = sample.model.to(device)
    grads = weight_gradients(model, sample.layers, sample.batches(), device)  # B = 0: the model is exactly the base
    signals = [ModuleSignal(name, tuple(g.shape), tuple(float(v) for v in torch.linalg.svdvals(
        g.to(device, torch.float64))[:settings.max_rank].cpu())) for name, g in grads.items()]
    return signals, time.perf_counter() - began
