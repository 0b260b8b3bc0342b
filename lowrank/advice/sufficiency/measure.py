"""Measure a trained adapter's sufficiency evidence on real data: base + adapter loaded, gradients on a fixed
sample of training examples (:mod:`lowrank.advice.sample`),
:func:`lowrank.advice.sufficiency.gradient_evidence.module_evidence` per adapted module. The same sample gives ``G``
(adapter on) and ``G0`` (adapter off, head kept).

``analyze --data`` shows this evidence per module; its rank verdict comes from the probe
(:mod:`lowrank.advice.sufficiency.verdict`), not from them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lowrank import devices
from lowrank.advice import sample as samples
from lowrank.advice.gradients import adapters_off, weight_gradients
from lowrank.advice.sufficiency.gradient_evidence import CALIBRATED_EXAMPLES, GradientEvidence, module_evidence
from lowrank.data.instructions import LOSS_ON

MIN_EXAMPLES = 64
from lowrank.errors import LowrankError
from lowrank.progress import ProgressCallback, report


@dataclass(frozen=True)
class MeasureConfig:
    """Args:
        adapter: a peft adapter folder (LoRA on linear or Conv1D layers, any trained head saved with it).
        base: the model it was trained on (registry key, local folder, or a saved MLP folder).
        data: the dataset it was trained on (registry key or local file); its training split is used.
        examples: training examples in the gradient sample (the signal-to-noise thresholds were fitted at 256).
        max_length: tokens per example, as in training (default 128).
        seed: draws the sample (classification, instruction data; LM of texts takes the first blocks).
        device: "cpu" or "cuda".
        loss_on: instruction data's loss, on the "completion" or on "all" tokens, as in training.
    """

    adapter: str
    base: str
    data: str
    examples: int = CALIBRATED_EXAMPLES
    max_length: int = 128
    seed: int = 0
    device: str = "cpu"
    loss_on: str = "completion"

    def __post_init__(self) -> None:
        if self.examples < 1 or self.max_length < 8:
            raise LowrankError("examples must be >= 1 and max length >= 8")
        devices.checked(self.device)
        if self.loss_on not in LOSS_ON:
            raise LowrankError(f"loss-on must be one of {', '.join(LOSS_ON)}, got {self.loss_on!r}")


@dataclass(frozen=True)
class Measurement:
    """Per-module gradient evidence (module name -> :class:`GradientEvidence`), the sample size and the time it took."""

    evidence: dict[str, GradientEvidence]
    examples: int
    seconds: float


def measure(config: MeasureConfig, progress: ProgressCallback | None = None) -> Measurement:
    """The gradient evidence of every adapted module of ``config.adapter`` (see
    :mod:`lowrank.advice.sufficiency.gradient_evidence`)."""
    began = time.perf_counter()
    sample = samples.trained(config.adapter, config.base, config.data, config.examples, config.max_length,
                             config.seed, config.loss_on)
    device = torch.device(config.device)
    sample.model.to(device)
    if sample.examples < MIN_EXAMPLES:
        raise LowrankError(f"data {config.data} gives {sample.examples} training examples; the gradient sample "
                           f"needs at least {MIN_EXAMPLES} (its thresholds were fitted at {CALIBRATED_EXAMPLES})")
    report(progress, "gradient at the trained point", 0, 2)
    halves = [weight_gradients(sample.model, sample.layers, part, device) for part in sample.halves()]
    report(progress, "gradient at the base weights", 1, 2)
    with adapters_off(sample.layers):
        start = weight_gradients(sample.model, sample.layers, sample.batches(), device)
    report(progress, "gradients", 2, 2)
    evidence = {}
    for name, layer in sample.layers.items():
        first, second = halves[0][name], halves[1][name]
        trained = (first + second) / 2
        evidence[name] = module_evidence(trained, start[name], layer.lora_B.detach().cpu(), layer.lora_A.detach().cpu(),
                                         (first, second))
    return Measurement(evidence, sample.examples, time.perf_counter() - began)
