"""A trained adapter on its data's held-out (test) split, for the collapse check of ``analyze --data``
(:func:`lowrank.tasks.collapse.collapse`): base + adapter loaded as rank advice loads them
(:func:`lowrank.advice.sample.trained`), up to :data:`HELD_OUT_EXAMPLES` test examples tokenized as the training
sample is, evaluated as training evaluates (:func:`lowrank.tasks.evaluate.evaluate`).

Baselines: for classification the best constant predictor (the training labels' class frequencies; entropy and
majority-class accuracy), for language modelling the base model on the same blocks (every LoRA update switched
off, which is the model a run starts from).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from lowrank.advice import sample as samples
from lowrank.advice.gradients import adapters_off
from lowrank.advice.sufficiency.measure import MIN_EXAMPLES
from lowrank.tasks.collapse import collapse, constant_loss, labels_of, majority_share
from lowrank.data.images import load_image_dataset
from lowrank.data.text import load_text_dataset
from lowrank.errors import LowrankError
from lowrank.tasks.evaluate import evaluate
from lowrank.tasks.images import is_image_model

HELD_OUT_EXAMPLES = 1000


@dataclass(frozen=True)
class HeldOut:
    """The adapter's held-out metrics, its baselines and what they say.

    Attributes:
        metrics: ``{'loss', 'accuracy', 'examples'}`` or ``{'loss', 'perplexity', 'tokens'}``.
        constant_loss: classification: ``H = -sum_c p_c ln p_c`` of the training labels' frequencies.
        majority: classification: the held-out accuracy of always predicting the most frequent training class.
        base_loss: language modelling: the base model's held-out loss on the same blocks.
        collapsed: why the adapter collapsed (:func:`lowrank.tasks.collapse.collapse`), or None.
    """

    metrics: dict
    constant_loss: float | None
    majority: float | None
    base_loss: float | None
    collapsed: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_held_out(sample: samples.Sample, device: torch.device) -> dict:
    """``sample.model`` on ``sample.heldout`` (on ``device``, float32): ``{'loss', 'accuracy', 'examples'}`` or
    ``{'loss', 'perplexity', 'tokens'}`` with ``loss`` the mean cross-entropy over examples (tokens for LM)."""
    return evaluate(sample.model, sample.heldout, samples.BATCH_SIZE, device, bf16=False)


def _train_labels(base: str, data: str) -> list[int]:
    """All training labels of ``data`` (empty for language modelling); refuses data without held-out examples
    and classification data with fewer than :data:`MIN_EXAMPLES` training examples."""
    if is_image_model(base):
        labels = load_image_dataset(data).train_y.tolist()
    else:
        dataset = load_text_dataset(data)
        if not dataset.size("test"):
            raise LowrankError(f"data {data} has no held-out (test) examples; analyze --data evaluates the adapter "
                               "on them to check that it did not collapse (add rows with split=test)")
        labels = list(dataset.train_labels)
    if labels and len(labels) < MIN_EXAMPLES:
        raise LowrankError(f"data {data} has {len(labels)} training examples; analyze --data needs at least "
                           f"{MIN_EXAMPLES} (its gradient sample and the probe's batches come from them)")
    return labels


def held_out_check(adapter: str, base: str, data: str, max_length: int, seed: int, device: str,
                   loss_on: str) -> HeldOut:
    """Load ``adapter`` on ``base``, evaluate it on up to :data:`HELD_OUT_EXAMPLES` held-out examples of ``data``
    on ``device`` (instruction data: the loss on ``loss_on``), and apply
    :func:`lowrank.tasks.collapse.collapse` against the baselines."""
    train_labels = _train_labels(base, data)
    sample = samples.trained(adapter, base, data, 1, max_length, seed, loss_on, heldout=HELD_OUT_EXAMPLES)
    where = torch.device(device)
    sample.model.to(where)
    metrics = evaluate_held_out(sample, where)
    if sample.heldout.is_lm:
        with adapters_off(sample.layers):
            base_loss = evaluate_held_out(sample, where)["loss"]
        return HeldOut(metrics, None, None, base_loss, collapse(metrics, base_loss=base_loss))
    entropy = constant_loss(train_labels)
    majority = majority_share(train_labels, labels_of(sample.heldout))
    return HeldOut(metrics, entropy, majority, None, collapse(metrics, entropy, majority))
