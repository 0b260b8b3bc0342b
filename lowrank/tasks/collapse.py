"""Did a run collapse? The held-out metrics against what a model that learned nothing would score.

A run has collapsed when its held-out loss says the model learned nothing usable (:func:`collapse`): the loss is
not finite, or for classification it is no better than the best constant predictor (the class frequencies ``p_c``
of the training labels, whose loss is their entropy ``H = -sum_c p_c ln p_c``) or its accuracy no better than
always predicting the majority class, or for language modelling it is no better than the base model's (LoRA starts
at ``B = 0``, so a run's step-0 evaluation is the base model). ``lowrank train`` warns of it, and rank advice gives
no verdict for such an adapter.
"""

from __future__ import annotations

import math
from collections import Counter

from lowrank.data.batches import eval_batches

CONSTANT_TOLERANCE = 0.02


def constant_loss(train_labels: list[int]) -> float:
    """The loss of the best constant predictor, the class frequencies ``p_c``: ``H = -sum_c p_c ln p_c``."""
    counts = Counter(train_labels)
    total = len(train_labels)
    return -sum(c / total * math.log(c / total) for c in counts.values())


def majority_share(train_labels: list[int], held_out_labels: list[int]) -> float:
    """The accuracy of always predicting the training set's most frequent class, on ``held_out_labels``."""
    counts = Counter(train_labels)
    majority = max(counts, key=lambda label: (counts[label], -label))
    return sum(label == majority for label in held_out_labels) / max(len(held_out_labels), 1)


def labels_of(data, limit: int | None = None) -> list[int]:
    """The class labels of a TokenizedSet or ImageSet, of the examples :func:`lowrank.tasks.evaluate.evaluate`
    reads with ``limit`` (all, or its fixed sample)."""
    chosen = [i for batch in eval_batches(data, max(len(data), 1), limit) for i in batch]
    return [int(data.labels[i]) for i in chosen]


def collapse(final: dict, constant_loss: float | None = None, majority: float | None = None,
             base_loss: float | None = None) -> str | None:
    """Why the held-out metrics ``final`` (``{'loss', 'accuracy'}`` or ``{'loss', 'perplexity'}``) say the model
    collapsed, or None. Classification: ``loss >= (1 - CONSTANT_TOLERANCE) H`` with ``H = constant_loss``, or
    ``accuracy <= majority`` (the majority class's share). Language modelling: ``loss >= base_loss``."""
    loss = float(final["loss"])
    if not math.isfinite(loss):
        return f"held-out loss is {loss} (training diverged)"
    if constant_loss is not None and majority is not None:
        accuracy = float(final["accuracy"])
        if loss >= (1 - CONSTANT_TOLERANCE) * constant_loss or accuracy <= majority:
            return (f"held-out loss {loss:.3g} against {constant_loss:.3g} for predicting the class frequencies "
                    f"(their entropy), accuracy {100 * accuracy:.1f}% against {100 * majority:.1f}% for always "
                    "predicting the majority class: no better than ignoring the input")
    if base_loss is not None and loss >= base_loss:
        return f"held-out loss {loss:.3g}, no lower than the base model's {base_loss:.3g}"
    return None


def run_collapse(history: list[dict], final: dict, train, held_out, limit: int | None = None) -> str | None:
    """:func:`collapse` of a training run: the baselines from its training set ``train`` and the ``held_out``
    examples evaluated (``limit``: the evaluation's fixed sample), for LM the step-0 evaluation in ``history``."""
    if held_out.is_lm:
        return collapse(final, base_loss=history[0].get("loss") if history else None)
    train_labels = labels_of(train)
    return collapse(final, constant_loss(train_labels), majority_share(train_labels, labels_of(held_out, limit)))
